"""The Taskcluster Queue API, as the service needs it: a task's definition and a run's artifact listing.

URLs come from Taskcluster's own client (``taskcluster.aio.Queue.buildUrl``, one client per root URL), so
routes and quoting are Taskcluster's API reference. The GET itself is one aiohttp request on a shared
connection pool, its answer read with orjson: the client's own request path cost about 170 µs of CPU per
request against about 95 for the plain request (stdlib JSON both ways, debug strings built for every
answer), and every new task costs one or two requests. Its retry loop is not used either: it does not retry
timeouts, its sleeps are not bounded by a deadline, and a listing retried by it restarts from page one.
Instead every HTTP request here gets its own timeout and its own bounded retries, with exponential backoff
and jitter, so the longest a single request can take is known up front (``QueueClient.max_request_seconds``).

Errors, in one place:

- ``TaskNotFound``: the Queue answered 404. The event names a task that does not exist at that root URL.
- ``QueueRefused``: any other 4xx, or a redirect. Retrying will not help (a malformed id, a private task, a
  root URL that is not the Queue's).
- ``UnusableAnswer``: the Queue answered, but with JSON the service cannot carry on (a string holding a lone
  surrogate, nesting deeper than the record encoder allows, bytes that are not UTF-8). Permanent: the task is
  rejected, a listing fails.
- ``QueueUnavailable``: 5xx, connection errors, timeouts or an unreadable answer, still failing after every
  retry. The caller decides: the worker waits and tries again, the offline command rejects the line.

No credentials are configured: ``task`` and ``listArtifacts`` are public, and a client without credentials
has nothing to leak into a log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import taskcluster.aio
from yarl import URL

from streams.core.validation import text_errors

log = logging.getLogger(__name__)

MAX_PAGES = 10_000  # a listing that keeps handing out tokens past this is a broken server, not a big task


class QueueError(Exception):
    """A Queue API call did not give an answer the service can use."""

    def __init__(self, message: str, *, call: str, task_id: str, root_url: str) -> None:
        super().__init__(message)
        self.call = call
        self.task_id = task_id
        self.root_url = root_url


class TaskNotFound(QueueError):
    """404: no such task (or run) at that root URL."""


class QueueRefused(QueueError):
    """A 4xx other than 404: the request itself is wrong for this Queue; retrying cannot help."""

    def __init__(self, message: str, *, status: int, call: str, task_id: str, root_url: str) -> None:
        super().__init__(message, call=call, task_id=task_id, root_url=root_url)
        self.status = status


class UnusableAnswer(QueueError):
    """The answer is JSON that cannot be written back as UTF-8 JSON (tables, records): retrying cannot help."""


class QueueUnavailable(QueueError):
    """The Queue kept failing (5xx, connection error, timeout) for every attempt allowed."""

    def __init__(self, message: str, *, attempts: int, call: str, task_id: str, root_url: str) -> None:
        super().__init__(message, call=call, task_id=task_id, root_url=root_url)
        self.attempts = attempts


class _Transient(Exception):
    """One attempt failed in a way worth retrying; carries a short description for the final message."""


@dataclass(slots=True)
class QueueStats:
    """What the client did, for metrics and the status page. Latency covers single HTTP requests."""

    calls: Counter[str] = field(default_factory=Counter)  # "task" / "listArtifacts": one per public call
    requests: int = 0  # HTTP requests, retries and pages included
    retries: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # "not_found", "refused", "unavailable", "transient"
    latency_total: float = 0.0
    latency_max: float = 0.0

    def observe(self, seconds: float) -> None:
        self.requests += 1
        self.latency_total += seconds
        self.latency_max = max(self.latency_max, seconds)

    @property
    def latency_mean(self) -> float:
        return self.latency_total / self.requests if self.requests else 0.0

    def snapshot(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "requests": self.requests,
            "retries": self.retries,
            "errors": dict(self.errors),
            "latency_mean": self.latency_mean,
            "latency_max": self.latency_max,
        }


class QueueClient:
    """Fetch task definitions and artifact listings, with a timeout and bounded retries on every request.

    ``timeout`` bounds one HTTP request; ``retries`` is how many more attempts a failing request gets. The
    backoff before retry *n* (1-based) is ``min(backoff_max, backoff * 2**(n-1))`` scaled by a random factor
    in [0.5, 1]. Pass an ``aiohttp.ClientSession`` to share a connection pool; otherwise the client makes
    its own and ``close()`` closes it.
    """

    def __init__(self, *, timeout: float, retries: int, session: aiohttp.ClientSession | None = None,
                 backoff: float = 0.25, backoff_max: float = 5.0) -> None:
        if timeout <= 0 or retries < 0:
            raise ValueError("timeout must be positive and retries non-negative")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.stats = QueueStats()
        self._session = session
        self._owns_session = session is None
        self._queues: dict[str, taskcluster.aio.Queue] = {}

    @property
    def max_request_seconds(self) -> float:
        """The longest one request can take, every retry and backoff included."""
        delays = sum(self._delay_cap(n) for n in range(1, self.retries + 1))
        return (self.retries + 1) * self.timeout + delays

    async def task(self, root_url: str, task_id: str) -> dict[str, Any]:
        """The task definition, as the Queue serves it."""
        self.stats.calls["task"] += 1
        answer = await self._request("task", root_url, task_id, {"taskId": task_id}, {})
        if not isinstance(answer, dict) or ("response" in answer and len(answer) == 1):
            raise self._unreadable("task", root_url, task_id)
        self._check_text("task", root_url, task_id, answer, "task")
        return answer

    async def list_artifacts(self, root_url: str, task_id: str, run_id: int) -> list[dict[str, Any]]:
        """Every artifact of the run, in the Queue's order, following every continuation token."""
        self.stats.calls["listArtifacts"] += 1
        params = {"taskId": task_id, "runId": str(run_id)}
        artifacts: list[dict[str, Any]] = []
        query: dict[str, str] = {}
        seen_tokens: set[str] = set()
        for _ in range(MAX_PAGES):
            page = await self._request("listArtifacts", root_url, task_id, params, query)
            if not isinstance(page, dict) or not isinstance(page.get("artifacts"), list):
                raise self._unreadable("listArtifacts", root_url, task_id)
            artifacts.extend(page["artifacts"])
            token = page.get("continuationToken")
            if not token:
                self._check_text("listArtifacts", root_url, task_id, artifacts, "artifacts")
                return artifacts
            if token in seen_tokens:
                raise self._unreadable("listArtifacts", root_url, task_id, "a continuation token came back twice")
            seen_tokens.add(token)
            query = {"continuationToken": token}
        raise self._unreadable("listArtifacts", root_url, task_id, f"more than {MAX_PAGES} pages")

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None
        self._queues.clear()

    # Internals

    def _queue(self, root_url: str) -> taskcluster.aio.Queue:
        """Taskcluster's client for ``root_url``, for its URLs only: ``_get`` sends the requests."""
        queue = self._queues.get(root_url)
        if queue is None:
            queue = self._queues[root_url] = taskcluster.aio.Queue({"rootUrl": root_url})
        return queue

    def _delay_cap(self, retry: int) -> float:
        return min(self.backoff_max, self.backoff * 2 ** (retry - 1))

    async def _request(self, call: str, root_url: str, task_id: str, params: Mapping[str, str],
                       query: Mapping[str, str]) -> Any:
        url = URL(self._queue(root_url).buildUrl(call, params=dict(params), query=dict(query)), encoded=True)
        last_error = ""
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                self.stats.retries += 1
                await asyncio.sleep(self._delay_cap(attempt - 1) * random.uniform(0.5, 1.0))
            started = time.monotonic()
            try:
                try:
                    async with asyncio.timeout(self.timeout):
                        status, reason, body = await self._get(url)
                finally:
                    self.stats.observe(time.monotonic() - started)
            except _TRANSIENT_ERRORS as error:
                last_error = _describe(error, self.timeout)
            else:
                if 200 <= status < 300:
                    return self._decode(call, root_url, task_id, body)
                if status == 404:
                    self.stats.errors["not_found"] += 1
                    raise TaskNotFound(f"{call}({task_id}) at {root_url}: 404 {_error_message(body, reason)}",
                                       call=call, task_id=task_id, root_url=root_url)
                if not 500 <= status < 600:
                    self.stats.errors["refused"] += 1
                    raise QueueRefused(f"{call}({task_id}) at {root_url}: {status} {_error_message(body, reason)}",
                                       status=status, call=call, task_id=task_id, root_url=root_url)
                last_error = f"HTTP {status} {reason}".rstrip()
            self.stats.errors["transient"] += 1
            log.info("Queue %s(%s) at %s failed (attempt %d of %d): %s",
                     call, task_id, root_url, attempt, attempts, last_error)
        self.stats.errors["unavailable"] += 1
        raise QueueUnavailable(
            f"{call}({task_id}) at {root_url} failed {attempts} time(s); last error: {last_error}",
            attempts=attempts, call=call, task_id=task_id, root_url=root_url,
        )

    async def _get(self, url: URL) -> tuple[int, str, bytes]:
        """One GET: status, reason and the whole body. Redirects are answers too (a root URL to correct)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        async with self._session.get(url, allow_redirects=False, headers=_ACCEPT_JSON) as response:
            return response.status, response.reason or "", await response.read()

    def _decode(self, call: str, root_url: str, task_id: str, body: bytes) -> Any:
        """The answer's JSON. orjson reads almost every answer; what it refuses is read again with Python's json,
        so that each kind of bad answer keeps its own error: not UTF-8 or nested beyond reading (unusable, not
        retried), not JSON at all (unreadable), or JSON with a lone surrogate (left to ``_check_text``)."""
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        try:
            return json.loads(body.decode("utf-8"))
        except (RecursionError, UnicodeDecodeError) as error:
            what = "not UTF-8 text" if isinstance(error, UnicodeDecodeError) else "nested too deeply to read"
            self.stats.errors["unusable"] += 1
            raise UnusableAnswer(f"{call}({task_id}) at {root_url}: the answer is {what}",
                                 call=call, task_id=task_id, root_url=root_url) from None
        except ValueError:
            raise self._unreadable(call, root_url, task_id) from None

    def _check_text(self, call: str, root_url: str, task_id: str, answer: Any, where: str) -> None:
        """Definitions and listings are stored with orjson: refuse here what it could not write later."""
        problem = text_errors(answer, where)
        if problem is not None:
            self.stats.errors["unusable"] += 1
            raise UnusableAnswer(f"{call}({task_id}) at {root_url}: {problem}", call=call, task_id=task_id,
                                 root_url=root_url)

    def _unreadable(self, call: str, root_url: str, task_id: str, what: str = "not the expected JSON") -> QueueError:
        self.stats.errors["unavailable"] += 1
        return QueueUnavailable(f"{call}({task_id}) at {root_url}: the answer is {what}",
                                attempts=1, call=call, task_id=task_id, root_url=root_url)


# A refused or reset connection arrives as an aiohttp.ClientError; our per-request timeout as TimeoutError.
_TRANSIENT_ERRORS = (TimeoutError, aiohttp.ClientError)
_ACCEPT_JSON = {"Accept": "application/json"}


def _describe(error: BaseException, timeout: float) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout:g}s"
    if isinstance(error, aiohttp.ClientConnectionError):
        return f"connection failed: {error}"
    return f"{type(error).__name__}: {error}"


def _error_message(body: bytes, reason: str) -> str:
    """The first line of the ``message`` a Taskcluster error answer carries, else the HTTP reason."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        answer = None
    message = answer.get("message") if isinstance(answer, dict) else None
    if isinstance(message, str) and message.strip():
        return message.strip().splitlines()[0]
    return reason or "(no message)"
