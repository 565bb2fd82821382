"""A lean AMQP 0-9-1 publisher and observer for the end-to-end benchmark, so that its figures measure the bridge.

The benchmark process publishes the load and watches the jobs exchanges while the bridge runs on the same two
cores; with aio-pika both cost about 0.5 ms of CPU per event (a task, an async lock, a timeout and a frame
marshalled per publish, one socket write each; an ``IncomingMessage`` and a task per job received), a fifth of
the whole path's CPU. Here the expensive parts happen before the timed window or not at all:

- :func:`encode_publish` marshals each message's three frames once, before the load starts; publishing is
  then a ``transport.write`` of the frames due, joined, so a burst of messages costs one system call;
- publisher confirms are read straight from the frames (``Basic.Ack`` with ``multiple``) into a watermark,
  not one future per message;
- the observer consumes with ``no_ack`` and keeps each job's body with the time its last bytes arrived; of a
  delivery only the body size is read, and bodies are read after the load (:func:`job_key_of`).

pamqp marshals and decodes the handful of set-up frames; there is no heartbeat (``TuneOk`` asks for none) and
no reconnection: a benchmark that loses its connection fails.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import re
import struct
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlparse

import orjson
from pamqp import body as amqp_body
from pamqp import commands
from pamqp import frame as amqp_frame
from pamqp import header as amqp_header

_HEAD = struct.Struct(">BHI")  # frame type, channel, payload size
_METHOD = struct.Struct(">HH")  # class id, method id
_ACK = struct.Struct(">QB")  # delivery tag, bits
_BODY_SIZE = struct.Struct(">Q")  # in a content header, after the class id and the weight
BASIC_ACK = (60, 80)
BASIC_NACK = (60, 120)
BASIC_DELIVER = (60, 60)
METHOD, HEADER, BODY = 1, 2, 3
CHANNEL = 1
CONFIRM_PATIENCE = 60.0  # seconds without a confirm after which publishing fails


class LeanConnection(asyncio.Protocol):
    """One AMQP connection with one channel. Frames are parsed from the socket's chunks in place: confirms and
    deliveries by a few struct reads; any other method frame is decoded by pamqp and handed to ``_reply``."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._replies: asyncio.Queue[Any] = asyncio.Queue()
        self._closed: asyncio.Future[None] | None = None
        self.frame_max = 131072
        self.failure: BaseException | None = None
        self._body: list[bytes] = []  # the body frames of the message being received
        self._body_left = 0

    # set-up and tear-down

    async def open(self, url: str) -> None:
        parsed = urlparse(url)
        loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        await loop.create_connection(lambda: self, parsed.hostname or "localhost", parsed.port or 5672)
        assert self._transport is not None
        self._transport.write(amqp_header.ProtocolHeader().marshal())
        await self._expect(commands.Connection.Start)
        credentials = f"\0{unquote(parsed.username or 'guest')}\0{unquote(parsed.password or 'guest')}"
        self._send(commands.Connection.StartOk(client_properties={"product": "tc-treeherder bench"},
                                               mechanism="PLAIN", response=credentials), channel=0)
        tune = await self._expect(commands.Connection.Tune)
        self.frame_max = tune.frame_max or self.frame_max
        self._send(commands.Connection.TuneOk(channel_max=tune.channel_max, frame_max=self.frame_max, heartbeat=0),
                   channel=0)
        vhost = unquote(parsed.path[1:]) if len(parsed.path) > 1 else "/"
        await self.call(commands.Connection.Open(virtual_host=vhost), commands.Connection.OpenOk, channel=0)
        await self.call(commands.Channel.Open(), commands.Channel.OpenOk)

    async def close(self) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._send(commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0), channel=0)
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(self._expect(commands.Connection.CloseOk), 2.0)
        self._transport.close()

    async def call(self, request: Any, reply: type, channel: int = CHANNEL) -> Any:
        self._send(request, channel)
        return await self._expect(reply)

    def _send(self, frame: Any, channel: int = CHANNEL) -> None:
        assert self._transport is not None
        self._transport.write(amqp_frame.marshal(frame, channel))

    async def _expect(self, kind: type) -> Any:
        frame = await self._replies.get()
        if isinstance(frame, BaseException):
            raise frame
        if isinstance(frame, commands.Channel.Close | commands.Connection.Close):
            raise ConnectionError(f"the broker closed: {frame.reply_code} {frame.reply_text}")
        if not isinstance(frame, kind):
            raise ConnectionError(f"expected {kind.__name__}, the broker sent {frame!r}")
        return frame

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.failure = self.failure or exc or ConnectionError("the broker closed the connection")
        self._replies.put_nowait(self.failure)
        self.on_failure()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        size = len(buffer)
        position = 0
        arrived = 0.0
        while size - position >= 8:
            kind, _, length = _HEAD.unpack_from(buffer, position)
            end = position + 7 + length
            if end >= size:
                break
            if kind == BODY:
                self._body.append(bytes(buffer[position + 7:end]))
                self._body_left -= length
                if self._body_left <= 0:
                    arrived = arrived or time.monotonic()
                    self.on_body(arrived, self._body[0] if len(self._body) == 1 else b"".join(self._body))
                    self._body = []
            elif kind == HEADER:
                self._body_left = _BODY_SIZE.unpack_from(buffer, position + 11)[0]
                self._body = []
                if self._body_left == 0:
                    arrived = arrived or time.monotonic()
                    self.on_body(arrived, b"")
            elif kind == METHOD:
                method = _METHOD.unpack_from(buffer, position + 7)
                if method == BASIC_ACK:
                    tag, bits = _ACK.unpack_from(buffer, position + 11)
                    self.on_ack(tag, bool(bits & 1))
                elif method == BASIC_NACK:
                    self.failure = self.failure or ConnectionError("the broker refused (nacked) a message")
                    self.on_failure()
                elif method != BASIC_DELIVER:
                    frame = amqp_frame.unmarshal(bytes(buffer[position:end + 1]))[2]
                    if isinstance(frame, commands.Connection.Close | commands.Channel.Close):
                        self.failure = self.failure or ConnectionError(
                            f"the broker closed: {frame.reply_code} {frame.reply_text}")
                        self.on_failure()
                    self._replies.put_nowait(frame)
            position = end + 1
        del buffer[:position]

    # what the subclasses watch

    def on_body(self, arrived: float, body: bytes) -> None:
        pass

    def on_ack(self, tag: int, multiple: bool) -> None:
        pass

    def on_failure(self) -> None:
        pass


def encode_publish(exchange: str, routing_key: str, body: bytes, headers: Mapping[str, Any], frame_max: int) -> bytes:
    """The frames of one persistent JSON message, ready to write (the body split to ``frame_max``)."""
    properties = commands.Basic.Properties(content_type="application/json", content_encoding="utf-8",
                                           delivery_mode=2, headers=dict(headers))
    parts = [amqp_frame.marshal(commands.Basic.Publish(exchange=exchange, routing_key=routing_key), CHANNEL),
             amqp_frame.marshal(amqp_header.ContentHeader(0, len(body), properties), CHANNEL)]
    step = frame_max - 8
    parts += [amqp_frame.marshal(amqp_body.ContentBody(body[start:start + step]), CHANNEL)
              for start in range(0, len(body), step)]
    return b"".join(parts)


class LeanPublisher(LeanConnection):
    """Publishes pre-encoded messages with publisher confirms, at most ``window`` unconfirmed."""

    def __init__(self, window: int = 2000, chunk: int = 200) -> None:
        super().__init__()
        self.window = window
        self.chunk = chunk  # messages joined into one write when several are due
        self.published = 0
        self._acked_to = 0  # every delivery tag up to here is confirmed
        self._acked_above: set[int] = set()  # single confirms past the watermark
        self._progress = asyncio.Event()

    async def open(self, url: str) -> None:
        await super().open(url)
        await self.call(commands.Confirm.Select(), commands.Confirm.SelectOk)

    async def declare_topic_exchanges(self, names: Sequence[str]) -> None:
        for name in names:
            await self.call(commands.Exchange.Declare(exchange=name, exchange_type="topic", durable=True),
                            commands.Exchange.DeclareOk)

    @property
    def confirmed(self) -> int:
        return self._acked_to + len(self._acked_above)

    def on_ack(self, tag: int, multiple: bool) -> None:
        if multiple:
            self._acked_to = max(self._acked_to, tag)
            if self._acked_above:
                self._acked_above = {above for above in self._acked_above if above > tag}
        elif tag > self._acked_to:
            self._acked_above.add(tag)
        while self._acked_to + 1 in self._acked_above:
            self._acked_to += 1
            self._acked_above.discard(self._acked_to)
        self._progress.set()

    def on_failure(self) -> None:
        self._progress.set()

    async def _wait_confirms(self, unconfirmed: int) -> None:
        """Until at most ``unconfirmed`` messages wait for their confirm."""
        while self.published - self.confirmed > unconfirmed:
            if self.failure is not None:
                raise ConnectionError(f"publishing failed: {self.failure!r}")
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), CONFIRM_PATIENCE)
            except TimeoutError:
                raise ConnectionError(f"no confirm for {CONFIRM_PATIENCE:.0f} s: {self.published} published, "
                                      f"{self.confirmed} confirmed") from None
        if self.failure is not None:
            raise ConnectionError(f"publishing failed: {self.failure!r}")

    async def publish(self, messages: Sequence[bytes], due: Sequence[float] | None = None) -> list[float]:
        """Write ``messages`` (from :func:`encode_publish`), each at its ``due`` offset in seconds from the start
        (None: as fast as the window allows); returns when every one is confirmed, with the monotonic time each
        was written to the socket."""
        assert self._transport is not None
        count = len(messages)
        written = [0.0] * count
        index = 0
        start = time.monotonic()
        while index < count:
            if due is None:
                upto = min(count, index + self.chunk)
            else:
                elapsed = time.monotonic() - start
                upto = min(bisect.bisect_right(due, elapsed, lo=index), index + self.chunk)
                if upto == index:
                    await asyncio.sleep(due[index] - elapsed)
                    continue
            await self._wait_confirms(self.window - (upto - index))
            self._transport.write(b"".join(messages[index:upto]))
            now = time.monotonic()
            written[index:upto] = [now] * (upto - index)
            self.published += upto - index
            index = upto
            if due is None:
                await asyncio.sleep(0)  # let the confirms in
        await self._wait_confirms(0)
        return written


class LeanObserver(LeanConnection):
    """Keeps (arrival time, body) of every message on the jobs exchanges, from an exclusive no-ack queue each."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: list[tuple[float, bytes]] = []

    @property
    def received(self) -> int:
        return len(self.arrived)

    @property
    def last_at(self) -> float:
        return self.arrived[-1][0] if self.arrived else 0.0

    async def watch(self, exchange: str, routing_key: str) -> None:
        await self.call(commands.Exchange.Declare(exchange=exchange, exchange_type="topic", durable=True),
                        commands.Exchange.DeclareOk)
        declared = await self.call(commands.Queue.Declare(exclusive=True, auto_delete=True),
                                   commands.Queue.DeclareOk)
        await self.call(commands.Queue.Bind(queue=declared.queue, exchange=exchange, routing_key=routing_key),
                        commands.Queue.BindOk)
        await self.call(commands.Basic.Consume(queue=declared.queue, no_ack=True), commands.Basic.ConsumeOk)

    def on_body(self, arrived: float, body: bytes) -> None:
        self.arrived.append((arrived, body))


_TASK_ID = re.compile(rb'"taskId":"([^"]*)"')
_STATE = re.compile(rb'"state":"([^"]*)"')


def job_key_of(body: bytes) -> tuple[str, str]:
    """(taskId, state) of a Treeherder job message: the first of each key in the body, as the worker writes both
    at the top level before any nested object; a full parse when either is missing."""
    task_id, state = _TASK_ID.search(body), _STATE.search(body)
    if task_id is None or state is None:
        job = orjson.loads(body)
        return job.get("taskId", ""), job.get("state", "")
    return task_id[1].decode(), state[1].decode()
