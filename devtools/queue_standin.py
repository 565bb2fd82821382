"""A local stand-in for the Taskcluster Queue API: task definitions and artifact listings from memory.

It answers the two calls the service makes, at Taskcluster's URL layout under its own root URL
(``http://127.0.0.1:<port>``), so the real ``taskcluster`` client talks to it unchanged:

- ``GET /api/queue/v1/task/<taskId>``: the definition, or 404 with Taskcluster's error body;
- ``GET /api/queue/v1/task/<taskId>/runs/<runId>/artifacts[?continuationToken=&limit=]``: one page of the
  listing (``page_size`` entries at most), with an opaque ``continuationToken`` while more remain.

Other processes (the simulator, tests in another process) drive it over an admin API under ``/__standin/``:
``PUT tasks/<taskId>``, ``PUT artifacts/<taskId>/<runId>``, ``POST tasks`` and ``POST artifacts`` (bulk, same
shapes as the files), ``GET stats`` / ``DELETE stats``, ``POST faults`` (``{"status": 500, "count": 10}``,
``{"delay": 2.0, "count": 5}``, optionally narrowed by ``"endpoint": "task"|"artifacts"`` and ``"taskId"``;
``{"clear": true}`` removes them all). A fault without ``count`` stays until cleared.

It is a development tool: it binds to 127.0.0.1 by default and has no authentication.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

API = "/api/queue/v1"
ADMIN = "/__standin"
ENDPOINTS = ("task", "artifacts")


@dataclass(slots=True)
class Fault:
    """What the next matching Queue API requests get instead of (or before) their answer."""

    status: int | None = None
    delay: float = 0.0
    remaining: int | None = None  # None: until cleared
    endpoint: str | None = None
    task_id: str | None = None

    def matches(self, endpoint: str, task_id: str) -> bool:
        return (self.remaining is None or self.remaining > 0) and self.endpoint in (None, endpoint) \
            and self.task_id in (None, task_id)

    @classmethod
    def from_json(cls, body: Any) -> Fault:
        """Build a fault from the admin API's JSON; ValueError names what is wrong."""
        if not isinstance(body, dict):
            raise ValueError("a fault is a JSON object")
        unknown = set(body) - {"status", "delay", "count", "endpoint", "taskId"}
        if unknown:
            raise ValueError(f"unknown fault keys {sorted(unknown)}")
        status, delay, count = body.get("status"), body.get("delay", 0.0), body.get("count")
        if status is not None and (not isinstance(status, int) or not 400 <= status <= 599):
            raise ValueError("status must be an HTTP error status (400-599)")
        if not isinstance(delay, int | float) or isinstance(delay, bool) or delay < 0:
            raise ValueError("delay must be a non-negative number of seconds")
        if status is None and not delay:
            raise ValueError("a fault needs a status, a delay or both")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
            raise ValueError("count must be a positive integer")
        endpoint = body.get("endpoint")
        if endpoint is not None and endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {list(ENDPOINTS)}")
        task_id = body.get("taskId")
        if task_id is not None and not isinstance(task_id, str):
            raise ValueError("taskId must be a string")
        return cls(status=status, delay=float(delay), remaining=count, endpoint=endpoint, task_id=task_id)


class QueueStandIn:
    """The stand-in server. Fill it with ``add_task``/``add_artifacts`` (before or after ``start``)."""

    def __init__(self, page_size: int = 1000) -> None:
        if page_size < 1:
            raise ValueError("page_size must be positive")
        self.page_size = page_size
        self._tasks: dict[str, bytes] = {}  # serialized once: the stand-in may serve a demo's whole load
        self._artifacts: dict[tuple[str, int], list[Any]] = {}
        self._faults: list[Fault] = []
        self._requests: Counter[str] = Counter()
        self._per_task: dict[str, Counter[str]] = {}
        self._faults_served = 0
        self._runner: web.AppRunner | None = None
        self.root_url: str | None = None

    # Content

    def add_task(self, task_id: str, definition: Mapping[str, Any]) -> None:
        if not isinstance(definition, Mapping):
            raise ValueError(f"the definition of {task_id} is not a JSON object")
        self._tasks[task_id] = orjson.dumps(definition)

    def add_task_body(self, task_id: str, body: bytes) -> None:
        """Serve ``body`` as it is for ``task(task_id)``: JSON no encoder here would write (escaped lone
        surrogates, extreme nesting), or not JSON at all, to test what the service makes of such an answer."""
        self._tasks[task_id] = bytes(body)

    def add_artifacts(self, task_id: str, run_id: int, artifacts: Sequence[Mapping[str, Any]]) -> None:
        if not isinstance(artifacts, Sequence) or isinstance(artifacts, str | bytes) or not all(
                isinstance(item, Mapping) for item in artifacts):
            raise ValueError(f"the artifacts of {task_id} run {run_id} are not a JSON list of objects")
        self._artifacts[(task_id, int(run_id))] = list(artifacts)

    def add_tasks(self, tasks: Any) -> int:
        """Add ``{taskId: definition}``; returns how many."""
        if not isinstance(tasks, dict):
            raise ValueError("tasks must be a JSON object {taskId: definition}")
        for task_id, definition in tasks.items():
            self.add_task(task_id, definition)
        return len(tasks)

    def add_artifact_listings(self, listings: Any) -> int:
        """Add ``{taskId: {runId: [artifact, ...]}}``; returns how many listings."""
        if not isinstance(listings, dict) or not all(isinstance(runs, dict) for runs in listings.values()):
            raise ValueError("artifacts must be a JSON object {taskId: {runId: [artifact, ...]}}")
        count = 0
        for task_id, runs in listings.items():
            for run_id, artifacts in runs.items():
                self.add_artifacts(task_id, _run_id(run_id), artifacts)
                count += 1
        return count

    def load_tasks(self, path: str | Path) -> int:
        return self.add_tasks(_read_json(path))

    def load_artifacts(self, path: str | Path) -> int:
        return self.add_artifact_listings(_read_json(path))

    # Faults and statistics

    def add_fault(self, fault: Fault) -> None:
        self._faults.append(fault)

    def clear_faults(self) -> None:
        self._faults.clear()

    @property
    def stats(self) -> dict[str, Any]:
        return {
            "requests": {endpoint: self._requests[endpoint] for endpoint in ENDPOINTS},
            "tasks": {task_id: dict(counts) for task_id, counts in self._per_task.items()},
            "faults_served": self._faults_served,
            "faults_pending": sum(1 for fault in self._faults if fault.remaining != 0),
            "tasks_loaded": len(self._tasks),
        }

    def reset_stats(self) -> None:
        self._requests.clear()
        self._per_task.clear()
        self._faults_served = 0

    # Lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0 picks a free port); returns the root URL."""
        runner = web.AppRunner(self._application(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.root_url = f"http://{shown}:{bound_port}"
        return self.root_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> QueueStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _application(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes([
            web.get(f"{API}/ping", self._ping),
            web.get(f"{API}/task/{{taskId}}", self._task),
            web.get(f"{API}/task/{{taskId}}/runs/{{runId}}/artifacts", self._list_artifacts),
            web.put(f"{ADMIN}/tasks/{{taskId}}", self._put_task),
            web.post(f"{ADMIN}/tasks", self._post_tasks),
            web.put(f"{ADMIN}/artifacts/{{taskId}}/{{runId}}", self._put_artifacts),
            web.post(f"{ADMIN}/artifacts", self._post_artifacts),
            web.get(f"{ADMIN}/stats", self._get_stats),
            web.delete(f"{ADMIN}/stats", self._delete_stats),
            web.post(f"{ADMIN}/faults", self._post_faults),
        ])
        return app

    # Queue API

    async def _ping(self, request: web.Request) -> web.Response:
        return _json({"alive": True, "uptime": time.monotonic()})

    async def _task(self, request: web.Request) -> web.Response:
        task_id = request.match_info["taskId"]
        failure = await self._count_and_fault(request, "task", task_id)
        if failure is not None:
            return failure
        definition = self._tasks.get(task_id)
        if definition is None:
            return _error(404, "ResourceNotFound", f"`{task_id}` does not correspond to a task that exists.",
                          "task", {"taskId": task_id})
        return web.Response(body=definition, content_type="application/json")

    async def _list_artifacts(self, request: web.Request) -> web.Response:
        task_id, run_text = request.match_info["taskId"], request.match_info["runId"]
        failure = await self._count_and_fault(request, "artifacts", task_id)
        if failure is not None:
            return failure
        params = {"taskId": task_id, "runId": run_text}
        if not run_text.isdigit():
            return _error(400, "InvalidRequestArguments", f"runId {run_text!r} is not a number",
                          "listArtifacts", params)
        if task_id not in self._tasks:
            return _error(404, "ResourceNotFound", f"`{task_id}` does not correspond to a task that exists.",
                          "listArtifacts", params)
        run_id = int(run_text)
        listing = self._artifacts.get((task_id, run_id), [])
        try:
            limit = min(int(request.query.get("limit", self.page_size)), self.page_size)
            start = _decode_token(request.query.get("continuationToken"), task_id, run_id)
            if limit < 1:
                raise ValueError("limit must be positive")
        except ValueError as error:
            return _error(400, "InvalidRequestArguments", str(error), "listArtifacts", params)
        end = start + limit
        body: dict[str, Any] = {"artifacts": listing[start:end]}
        if end < len(listing):
            body["continuationToken"] = _encode_token(task_id, run_id, end)
        return _json(body)

    async def _count_and_fault(self, request: web.Request, endpoint: str, task_id: str) -> web.Response | None:
        self._requests[endpoint] += 1
        self._per_task.setdefault(task_id, Counter())[endpoint] += 1
        fault = next((f for f in self._faults if f.matches(endpoint, task_id)), None)
        if fault is None:
            return None
        if fault.remaining is not None:
            fault.remaining -= 1
        self._faults_served += 1
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.status is None:
            return None
        code = "InternalServerError" if fault.status >= 500 else "InjectedFault"
        return _error(fault.status, code, f"fault injected by the Queue stand-in ({fault.status})",
                      "task" if endpoint == "task" else "listArtifacts", {"taskId": task_id})

    # Admin API

    async def _put_task(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="a task definition must be a JSON object")
        self.add_task(request.match_info["taskId"], body)
        return _json({"taskId": request.match_info["taskId"]})

    async def _post_tasks(self, request: web.Request) -> web.Response:
        body = await _body(request)
        try:
            return _json({"added": self.add_tasks(body)})
        except ValueError as error:
            raise web.HTTPBadRequest(text=str(error)) from None

    async def _put_artifacts(self, request: web.Request) -> web.Response:
        task_id, run_text = request.match_info["taskId"], request.match_info["runId"]
        body = await _body(request)
        try:
            self.add_artifacts(task_id, _run_id(run_text), body)
        except ValueError as error:
            raise web.HTTPBadRequest(text=str(error)) from None
        return _json({"taskId": task_id, "runId": int(run_text), "artifacts": len(body)})

    async def _post_artifacts(self, request: web.Request) -> web.Response:
        body = await _body(request)
        try:
            return _json({"added": self.add_artifact_listings(body)})
        except ValueError as error:
            raise web.HTTPBadRequest(text=str(error)) from None

    async def _get_stats(self, request: web.Request) -> web.Response:
        return _json(self.stats)

    async def _delete_stats(self, request: web.Request) -> web.Response:
        self.reset_stats()
        return _json(self.stats)

    async def _post_faults(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if isinstance(body, dict) and body.get("clear") is True and len(body) == 1:
            self.clear_faults()
        else:
            try:
                self.add_fault(Fault.from_json(body))
            except ValueError as error:
                raise web.HTTPBadRequest(text=str(error)) from None
        return _json({"faults_pending": self.stats["faults_pending"]})


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _error(status: int, code: str, message: str, method: str, params: Mapping[str, str]) -> web.Response:
    """Taskcluster's error body: ``{code, message, requestInfo: {method, params, payload, time}}``."""
    return _json({
        "code": code,
        "message": message,
        "requestInfo": {
            "method": method,
            "params": dict(params),
            "payload": {},
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        },
    }, status=status)


async def _body(request: web.Request) -> Any:
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError as error:
        raise web.HTTPBadRequest(text=f"the body is not JSON: {error}") from None


def _run_id(text: Any) -> int:
    if isinstance(text, int) and not isinstance(text, bool) and text >= 0:
        return text
    if isinstance(text, str) and text.isdigit():
        return int(text)
    raise ValueError(f"run id {text!r} is not a non-negative integer")


def _encode_token(task_id: str, run_id: int, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{task_id}/{run_id}/{offset}".encode()).decode().rstrip("=")


def _decode_token(token: str | None, task_id: str, run_id: int) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        token_task, token_run, offset = text.rsplit("/", 2)
        if (token_task, int(token_run)) == (task_id, run_id) and int(offset) >= 0:
            return int(offset)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ValueError("continuationToken is not one this listing handed out")


def _read_json(path: str | Path) -> Any:
    try:
        return orjson.loads(Path(path).read_bytes())
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    except orjson.JSONDecodeError as error:
        raise ValueError(f"{path} is not JSON: {error}") from None
