"""Blocking, stdlib-only checks that a broker *answers its protocol*, not merely that a port is open.

The stack commands and the test fixtures run outside any event loop and must stay cheap to import, so the
checks speak the first exchange of each wire protocol over a plain socket:

- Kafka: an ApiVersions v0 request. A KRaft broker enables request processing on its client listener only
  once it has caught up with the metadata log and is unfenced, so an answer means clients can use it.
- AMQP 0-9-1: the protocol header. A RabbitMQ node that has booted answers with a Connection.Start frame.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable

_API_VERSIONS = 18
_CLIENT_ID = b"tc-treeherder-probe"
_AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
_AMQP_FRAME_METHOD = 1


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed by the peer")
        chunks += chunk
    return bytes(chunks)


def api_versions_request(correlation_id: int) -> bytes:
    """An ApiVersions v0 request (header v1: api key, version, correlation id, client id; empty body)."""
    body = struct.pack(">hhih", _API_VERSIONS, 0, correlation_id, len(_CLIENT_ID)) + _CLIENT_ID
    return struct.pack(">i", len(body)) + body


def parse_api_versions_response(payload: bytes, correlation_id: int) -> bool:
    """True when ``payload`` (without the size prefix) is a successful answer to our request."""
    if len(payload) < 6:
        return False
    got_correlation, error_code = struct.unpack_from(">ih", payload)
    return got_correlation == correlation_id and error_code == 0


def kafka_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when a Kafka broker at host:port answers an ApiVersions request without error."""
    correlation_id = int(time.monotonic_ns() & 0x7FFFFFFF)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(api_versions_request(correlation_id))
            (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
            if not 0 < size < 1_000_000:
                return False
            return parse_api_versions_response(_recv_exactly(sock, size), correlation_id)
    except OSError:
        return False


def amqp_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when an AMQP 0-9-1 broker at host:port answers the protocol header with a method frame."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(_AMQP_HEADER)
            frame_type = _recv_exactly(sock, 1)[0]
            return frame_type == _AMQP_FRAME_METHOD
    except OSError:
        return False


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.25,
               still_hopeful: Callable[[], bool] = lambda: True) -> bool:
    """Poll ``check`` until it holds (True), time runs out or ``still_hopeful`` says to give up (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline or not still_hopeful():
            return False
        time.sleep(interval)
