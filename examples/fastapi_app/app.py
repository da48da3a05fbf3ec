"""A FastAPI app that serves HTTP requests from a pool of snakepit gRPC workers.

    SNAKEPIT_WORKERS=127.0.0.1:40513,127.0.0.1:40514 SNAKEPIT_GRPC_TOKEN=s3cret \\
        uvicorn app:app

Routes:

- ``POST /predict`` ``{"features": [1, 2], "delay": 0, "timeout_ms": null}`` -> the
  worker's ``predict`` result;
- ``GET /stream/{n}?delay=0`` -> NDJSON, one ``{"chunk": ...}`` line per chunk of the
  worker's ``count`` stream, then ``{"result": ...}`` (or ``{"error": ...}`` if the
  stream fails after it started);
- ``POST /call/{method}`` ``{"args": [], "kwargs": {}, "timeout_ms": null}`` -> any
  method of the worker (remove this route if you do not want to expose them all);
- ``GET /health`` -> every worker's state; 200 while at least one serves, else 503.

The pool (client side, in this process): every call goes to the worker with
the fewest calls in flight from this app, ties broken round robin. A worker
whose RPC fails with ``UNAVAILABLE`` (gone, unreachable) or that is draining
(``shutting_down``) is taken out of the rotation, and probed (grpc.health.v1)
every ``SNAKEPIT_PROBE_INTERVAL`` seconds until it serves again. A failed call
is never retried: the call may have run already; the client gets a 503 and
decides.

Errors are JSON, ``{"error": {"kind", "type", "message", "worker"}}`` (the
worker's traceback is logged here, never sent), with the status from
``STATUS_OF_KIND``/``STATUS_OF_TRANSPORT``.

GrpcClient is blocking: each call is started at once (``start_call``) and
waited for on a worker thread (``anyio.to_thread``, at most
``SNAKEPIT_MAX_INFLIGHT`` threads). If the request is cancelled (the HTTP
client went away during a stream), the gRPC call is cancelled, and with it the
call on the worker.

Environment:

- ``SNAKEPIT_WORKERS``: the workers' ``HOST:PORT``, comma-separated (required);
- ``SNAKEPIT_GRPC_TOKEN``: their ``--grpc-token`` (required, unless
  ``SNAKEPIT_GRPC_INSECURE=1`` for workers started without one);
- ``SNAKEPIT_CODEC``: ``json`` (default), ``msgpack`` or ``etf``;
- ``SNAKEPIT_CALL_TIMEOUT``: the gRPC deadline of each call, seconds (default 30);
- ``SNAKEPIT_PROBE_INTERVAL``: seconds between probes of a worker out of rotation (1);
- ``SNAKEPIT_MAX_INFLIGHT``: threads waiting for calls at once (64).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from snakepit_py.client import GrpcClient
from snakepit_py.errors import CallError, TransportError

log = logging.getLogger("fastapi_app")

# A call that ended with a worker's error (CallError.kind) -> HTTP status.
STATUS_OF_KIND = {
    "bad_arguments": 400,  # the arguments do not fit the method's signature
    "bad_request": 400,  # arguments the codec refused (e.g. NaN in JSON)
    "unknown_method": 404,
    "exception": 500,  # the method raised
    "unencodable": 502,  # the worker's result cannot be sent back in the codec
    "timeout": 504,  # the call's timeout_ms, or this app's gRPC deadline
    "overloaded": 503,  # the worker's --max-inflight is full
    "shutting_down": 503,  # the worker is draining (SIGTERM)
    "cancelled": 503,
}
# An RPC that failed before the worker answered (TransportError.status) -> HTTP status.
STATUS_OF_TRANSPORT = {
    "UNAVAILABLE": 503,  # the worker is gone or unreachable
    "RESOURCE_EXHAUSTED": 503,  # too many streams open on the worker, or too large
    "UNAUTHENTICATED": 502,  # this app's token is wrong: a gateway misconfiguration
}
# What takes a worker out of the rotation until a probe finds it serving again.
OUT_OF_ROTATION = {"UNAVAILABLE", "shutting_down"}


class NoWorker(Exception):
    """Every worker is out of the rotation."""


@dataclass(eq=False)
class Worker:
    address: str
    client: GrpcClient
    inflight: int = 0
    up: bool = True
    reason: str | None = None  # why it is out of the rotation


@dataclass
class Pool:
    """Least-in-flight over the workers in the rotation, ties round robin."""

    workers: list[Worker]
    call_timeout: float = 30.0
    limiter: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(64))
    _turn: itertools.count = field(default_factory=itertools.count)

    def pick(self) -> Worker:
        up = [w for w in self.workers if w.up]
        if not up:
            raise NoWorker("no worker is serving: " + ", ".join(
                f"{w.address} ({w.reason})" for w in self.workers
            ))  # fmt: skip
        start = next(self._turn) % len(up)
        ring = up[start:] + up[:start]
        return min(ring, key=lambda w: w.inflight)  # min keeps the first of equals

    def failed(self, worker: Worker, err: Exception) -> None:
        """Take the worker out of the rotation if ``err`` says it cannot serve."""
        what = err.status if isinstance(err, TransportError) else getattr(err, "kind", None)
        if what in OUT_OF_ROTATION and worker.up:
            worker.up, worker.reason = False, str(what)
            log.warning("worker %s out of the rotation: %s", worker.address, err)

    async def call(self, method: str, *args: Any, kwargs: dict[str, Any] | None = None,
                   timeout_ms: int | None = None) -> tuple[Worker, Any]:  # fmt: skip
        """Run one call on a worker; (the worker, the result)."""
        worker = self.pick()
        worker.inflight += 1
        try:
            handle = worker.client.start_call(
                method, *args, kwargs=kwargs, timeout_ms=timeout_ms, timeout=self.call_timeout
            )
            try:
                result = await anyio.to_thread.run_sync(
                    handle.wait, abandon_on_cancel=True, limiter=self.limiter
                )
            except anyio.get_cancelled_exc_class():
                handle.cancel()  # the worker cancels the call; the waiting thread returns
                raise
            except (CallError, TransportError) as err:
                self.failed(worker, err)
                err.worker = worker.address
                raise
            return worker, result
        finally:
            worker.inflight -= 1

    async def probe(self, worker: Worker, timeout: float = 2.0) -> str:
        """The worker's grpc.health.v1 status (or why it has none); puts it back in the
        rotation when it is SERVING."""
        try:
            status = await anyio.to_thread.run_sync(
                worker.client.serving_status, "", timeout, limiter=self.limiter
            )
        except (CallError, TransportError) as err:
            status = getattr(err, "status", None) or getattr(err, "kind", "error")
        if status == "SERVING":
            if not worker.up:
                log.info("worker %s back in the rotation", worker.address)
            worker.up, worker.reason = True, None
        elif worker.up:
            worker.up, worker.reason = False, status
        return status


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def pool_from_env() -> Pool:
    addresses = [a.strip() for a in os.environ.get("SNAKEPIT_WORKERS", "").split(",")]
    addresses = [a for a in addresses if a]
    if not addresses:
        raise RuntimeError("set SNAKEPIT_WORKERS to the workers' HOST:PORT, comma-separated")
    token = os.environ.get("SNAKEPIT_GRPC_TOKEN") or None
    if token is None and os.environ.get("SNAKEPIT_GRPC_INSECURE") != "1":
        raise RuntimeError(
            "set SNAKEPIT_GRPC_TOKEN to the workers' --grpc-token "
            "(or SNAKEPIT_GRPC_INSECURE=1 for workers started without one)"
        )
    codec = os.environ.get("SNAKEPIT_CODEC") or "json"
    workers = [Worker(a, GrpcClient(a, token=token, codec=codec)) for a in addresses]
    return Pool(
        workers,
        call_timeout=_env_float("SNAKEPIT_CALL_TIMEOUT", 30.0),
        limiter=anyio.CapacityLimiter(int(_env_float("SNAKEPIT_MAX_INFLIGHT", 64))),
    )


async def _prober(pool: Pool, interval: float) -> None:
    while True:
        await anyio.sleep(interval)
        for worker in pool.workers:
            if not worker.up:
                await pool.probe(worker, timeout=min(interval, 2.0))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    pool = pool_from_env()
    # A worker that does not answer at start is out of the rotation until it does
    # (the app may start before its workers).
    async with anyio.create_task_group() as tg:
        for worker in pool.workers:
            tg.start_soon(pool.probe, worker)
    app.state.pool = pool
    async with anyio.create_task_group() as tg:
        tg.start_soon(_prober, pool, _env_float("SNAKEPIT_PROBE_INTERVAL", 1.0))
        try:
            yield
        finally:
            tg.cancel_scope.cancel()
            for worker in pool.workers:
                worker.client.close()


app = FastAPI(title="snakepit FastAPI example", lifespan=lifespan)


def _pool(request: Request) -> Pool:
    pool: Pool = request.app.state.pool
    return pool


def _error_body(err: Exception) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for an error from the pool."""
    worker = getattr(err, "worker", None)
    if isinstance(err, CallError):
        if err.traceback:
            log.error("call on %s failed: %s\n%s", worker, err.message, err.traceback)
        body = {"kind": err.kind, "type": err.type, "message": err.message, "worker": worker}
        return STATUS_OF_KIND.get(err.kind, 500), {"error": body}
    if isinstance(err, TransportError):
        body = {"kind": "transport", "type": err.status, "message": err.message, "worker": worker}
        return STATUS_OF_TRANSPORT.get(err.status, 502), {"error": body}
    if isinstance(err, NoWorker):
        body = {"kind": "unavailable", "type": "NoWorker", "message": str(err), "worker": None}
        return 503, {"error": body}
    raise err


def _error_response(err: Exception) -> JSONResponse:
    status, body = _error_body(err)
    return JSONResponse(body, status_code=status)


@app.exception_handler(CallError)
@app.exception_handler(TransportError)
@app.exception_handler(NoWorker)
async def _pool_error(request: Request, err: Exception) -> JSONResponse:
    return _error_response(err)


def _served_by(worker: Worker) -> dict[str, str]:
    return {"X-Snakepit-Worker": worker.address}


class PredictIn(BaseModel):
    features: list[float]
    delay: float = Field(0.0, ge=0.0, le=60.0)
    timeout_ms: int | None = None


@app.post("/predict")
async def predict(body: PredictIn, request: Request) -> JSONResponse:
    worker, result = await _pool(request).call(
        "predict", body.features, body.delay, timeout_ms=body.timeout_ms
    )
    return JSONResponse(result, headers=_served_by(worker))


class CallIn(BaseModel):
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    timeout_ms: int | None = None


@app.post("/call/{method}")
async def call(method: str, body: CallIn, request: Request) -> JSONResponse:
    worker, result = await _pool(request).call(
        method, *body.args, kwargs=body.kwargs or None, timeout_ms=body.timeout_ms
    )
    return JSONResponse({"result": result}, headers=_served_by(worker))


_END = object()


def _next(stream: Any) -> Any:
    """The next chunk, or _END (StopIteration cannot cross a thread's future)."""
    try:
        return next(stream)
    except StopIteration:
        return _END


def _line(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


@app.get("/stream/{n}")
async def stream(
    request: Request,
    n: int = Path(ge=0, le=1_000_000),
    delay: float = Query(0.0, ge=0.0, le=60.0),
) -> Any:
    """NDJSON of the worker's ``count(n, delay)``. The first chunk is awaited before
    answering, so a call that fails at once gets its own status; an error after
    that ends the 200 body with an ``{"error": ...}`` line."""
    pool = _pool(request)
    worker = pool.pick()
    worker.inflight += 1
    chunks = worker.client.stream("count", n, delay, timeout=pool.call_timeout)

    async def next_chunk() -> Any:
        try:
            return await anyio.to_thread.run_sync(
                _next, chunks, abandon_on_cancel=True, limiter=pool.limiter
            )
        except (CallError, TransportError) as err:
            pool.failed(worker, err)
            err.worker = worker.address
            raise

    async def body(first: Any) -> AsyncIterator[bytes]:
        try:
            chunk = first
            while chunk is not _END:
                yield _line({"chunk": chunk})
                chunk = await next_chunk()
            yield _line({"result": chunks.result})
        except (CallError, TransportError) as err:
            yield _line(_error_body(err)[1])
        finally:
            if not chunks.finished:
                chunks.cancel()  # the HTTP client went away: the worker closes the generator
            worker.inflight -= 1

    try:
        first = await next_chunk()
    except BaseException:
        chunks.cancel()
        worker.inflight -= 1
        raise
    return StreamingResponse(
        body(first), media_type="application/x-ndjson", headers=_served_by(worker)
    )


@app.get("/health")
async def health(request: Request) -> JSONResponse:
    """Every worker: in the rotation or not (probed now), and its calls in flight from here."""
    pool = _pool(request)
    statuses: dict[str, str] = {}

    async def probe(worker: Worker) -> None:
        statuses[worker.address] = await pool.probe(worker)

    async with anyio.create_task_group() as tg:
        for worker in pool.workers:
            tg.start_soon(probe, worker)
    workers = [
        {"address": w.address, "up": w.up, "status": statuses[w.address], "inflight": w.inflight}
        for w in pool.workers
    ]
    up = sum(w.up for w in pool.workers)
    status = "ok" if up == len(workers) else "degraded" if up else "unavailable"
    return JSONResponse({"status": status, "workers": workers}, status_code=200 if up else 503)
