"""The proxy worker: Ray exposed as ordinary snakepit methods.

Every method is async, so a long ``results`` stream never blocks ``status`` or
``cancel`` (async calls overlap whatever ``--threads`` says); blocking Ray calls
run on a small thread pool of the proxy's own, each bounded to at most 0.5 s.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import shlex
from collections.abc import AsyncIterator, Callable
from typing import Any

import snakepit_py as snakepit

from ._actors import ActorTable
from ._batches import Batch, BatchTable
from ._connection import RayConnection, unignore_sigint
from ._generators import next_events
from ._jobs import JobsClient
from ._loader import load_task_modules
from ._options import ProxyOptions, parse_options
from ._outcome import raise_failed
from ._registry import Catalog, Spec
from .errors import ProxyConfigError, RayProxyError, UnknownJob

__all__ = ["RayProxy"]

ARGS_ENV = "SNAKEPIT_RAY_PROXY_ARGS"
POLL_S = 0.5  # the longest any one blocking Ray wait may take
MAX_REPLICAS = 100_000


class RayProxy:
    """Submit Ray tasks, actors and jobs from the BEAM (``docs/ray.md``).

    Launch options come after ``--`` (``snakepit.worker_args()``); see
    :mod:`snakepit_py.ray_proxy._options`. The proxy connects to Ray while it
    loads, before ``:ready`` (``--connect-on-first-call`` defers it), so no call
    pays the seconds ``ray.init`` takes.

    Raises:
        ProxyConfigError: bad launch options.
        RayProxyError: Ray is not installed, or could not start or connect.
    """

    def __init__(self, argv: list[str] | None = None) -> None:
        if argv is None:  # after `--`, else $SNAKEPIT_RAY_PROXY_ARGS (for launchers without `--`)
            argv = snakepit.worker_args() or shlex.split(os.environ.get(ARGS_ENV, ""))
        self.options: ProxyOptions = parse_options(argv)
        _, self._by_value = load_task_modules(self.options.tasks)
        self.catalog = Catalog(self.options.allow)
        self.conn = RayConnection(self.options)
        self.batches = BatchTable()
        self.actors = ActorTable()
        self.jobs = JobsClient(self.options.jobs_address, self.options.allow_entrypoint)
        self._pool = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="snakepit-ray")
        unignore_sigint()  # before any Ray process exists (see its docstring)
        if self.options.connect_at_start:  # the default: before :ready, not in a call's timeout
            self._connect()

    # --- plumbing ---------------------------------------------------------------------------

    def _connect(self) -> Any:
        first = not self.conn.connected
        ray = self.conn.ensure()
        if first and self._by_value:
            from ray import cloudpickle

            for module in self._by_value:
                cloudpickle.register_pickle_by_value(module)
        return ray

    async def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def _ray(self) -> Any:
        if self.conn.connected:
            return self.conn._ray
        return await self._run(self._connect)

    def _remote(self, ray: Any, spec: Spec) -> Any:
        if spec.remote is None:
            opts = dict(spec.options)
            if spec.is_generator:
                opts["num_returns"] = "streaming"
            spec.remote = ray.remote(**opts)(spec.target) if opts else ray.remote(spec.target)
        return spec.remote

    def _batch(self, job_id: Any) -> Batch:
        batch = self.batches.batches.get(job_id) if isinstance(job_id, str) else None
        if batch is None:
            raise UnknownJob(f"no job {job_id!r} in this proxy")
        return batch

    # --- tasks ------------------------------------------------------------------------------

    async def _submit(self, task: str, calls: list[tuple[list, dict]]) -> Batch:
        spec = self.catalog.get(task, "task")
        ray = await self._ray()

        def submit() -> list[Any]:
            remote = self._remote(ray, spec)
            return [remote.remote(*a, **k) for a, k in calls]

        batch = Batch(self.batches.new_id(), spec, await self._run(submit))
        self.batches.add(batch)
        return batch

    @snakepit.method
    async def submit(self, task: str, args: list | None = None, kwargs: dict | None = None,
                     num_replicas: int = 1) -> str:  # fmt: skip
        """Submit ``num_replicas`` runs of a registered task; returns the job id at once."""
        _check_replicas(num_replicas)
        batch = await self._submit(task, [(_args(args), _kwargs(kwargs))] * num_replicas)
        return batch.id

    @snakepit.method
    async def submit_batch(self, task: str, batch: list, kwargs: dict | None = None) -> str:
        """Submit one run per entry of ``batch`` (each entry: that run's positional args)."""
        _check_replicas(len(batch) or 1)
        calls = [(_args(a if isinstance(a, (list, tuple)) else [a]), _kwargs(kwargs))
                 for a in batch]  # fmt: skip
        return (await self._submit(task, calls)).id

    @snakepit.method
    async def submit_ray_job(self, task: str, args: list | None = None, num_replicas: int = 1,
                             kwargs: dict | None = None) -> dict:  # fmt: skip
        """Run a task ``num_replicas`` times and wait: ``%{status, results, num_completed}``.

        Cancelling this call cancels the Ray tasks. A failing replica raises TaskFailed.
        """
        _check_replicas(num_replicas)
        batch = await self._submit(task, [(_args(args), _kwargs(kwargs))] * num_replicas)
        ray = self.conn._ray
        try:
            results: dict[int, Any] = {}
            sent: set[int] = set()
            async for i, item in self._settled(ray, batch, sent, want_all=True):
                if batch.streaming and item is not _END:
                    results.setdefault(i, []).append(item)
                    continue
                kind, value, exc = batch.outcomes[i]
                if kind != "ok":
                    assert exc is not None
                    raise_failed(batch.spec.name, i, exc)
                if not batch.streaming:
                    results[i] = value
        except BaseException:
            if batch.finished is None:
                await self._run(self._cancel_refs, ray, batch, False)
            raise
        return {"job_id": batch.id, "status": batch.state(),
                "results": [results.get(i) for i in range(batch.total)],
                "num_completed": batch.counts()["completed"]}  # fmt: skip

    async def _settled(self, ray: Any, batch: Batch, sent: set[int],
                       want_all: bool = False) -> AsyncIterator[tuple[int, Any]]:  # fmt: skip
        """Yield ``(index, item)`` for each replica as it settles (for generator tasks:
        one per yielded item, then ``(index, None)`` when the generator ends)."""
        if batch.streaming:
            async for event in self._generator_events(ray, batch):
                yield event
            return
        while True:
            for i in batch.unsent(sent):
                sent.add(i)
                yield i, None
            if len(sent) == batch.total:
                return
            await self._run(batch.poll, ray, POLL_S, want_all)

    async def _generator_events(self, ray: Any, batch: Batch) -> AsyncIterator[tuple[int, Any]]:
        if batch.consumed:
            raise RayProxyError(
                f"the items of generator job {batch.id} were already streamed (Ray streams "
                "a generator's items once); use status() for its counts"
            )
        batch.consumed = True
        gens = {i: g for i, g in enumerate(batch.refs) if i not in batch.outcomes
                or batch.outcomes[i][0] == "ok"}  # fmt: skip
        while gens:
            for i, kind, value in await self._run(next_events, ray, gens, POLL_S):
                if kind == "item":
                    yield i, value
                    continue
                del gens[i]
                if kind == "error":
                    batch.record_error(i, value)
                else:
                    batch._record(i, "ok", None, None)
                yield i, _END

    @snakepit.method(streaming=True)
    async def results(self, job_id: str, stop_on_error: bool = True) -> dict:
        """Stream each result as it completes, then return the job's summary.

        Chunks: ``%{"index" => i, "result" => v}``; for generator tasks one
        ``%{"index" => i, "item" => v}`` per yielded item. A failed replica raises
        TaskFailed, or with ``stop_on_error: false`` becomes ``%{"index", "error"}``.
        Cancelling this stream stops the watching, not the job (use ``cancel``).
        """
        batch = self._batch(job_id)
        ray = await self._ray()
        send = snakepit.current_call().asend
        sent: set[int] = set()
        async for i, item in self._settled(ray, batch, sent):
            if batch.streaming and item is not _END:
                await send({"index": i, "item": item})
                continue
            kind, value, exc = batch.outcomes[i]
            if kind == "ok":
                if not batch.streaming:
                    await send({"index": i, "result": value})
            elif kind == "error" and not stop_on_error:
                await send({"index": i, "error": value})
            elif kind == "error":
                assert exc is not None
                raise_failed(batch.spec.name, i, exc)
            else:
                await send({"index": i, "cancelled": True})
        return batch.summary()

    @snakepit.method
    async def status(self, job_id: str) -> dict:
        """``%{job_id, task, status, total, completed, failed, cancelled}``; status is one
        of pending|running|complete|failed|cancelled (pending: nothing finished yet)."""
        batch = self._batch(job_id)
        if batch.finished is None:
            await self._run(batch.poll, await self._ray(), 0)
        return batch.summary()

    @snakepit.method
    async def get_job_status(self, job_id: str) -> dict:
        """Alias of ``status`` (the seed's name)."""
        return await self.status(job_id)

    def _cancel_refs(self, ray: Any, batch: Batch, force: bool) -> None:
        batch.cancel_requested = True
        for i, ref in enumerate(batch.refs):
            if i in batch.outcomes and not batch.streaming:
                continue
            try:
                ray.cancel(ref, force=force, recursive=True)
            except Exception:  # already finished, or force on an actor task
                pass

    @snakepit.method
    async def cancel(self, job_id: str, force: bool = False) -> dict:
        """Cancel a job's unfinished replicas: queued ones never start; running ones get
        KeyboardInterrupt (Python code only) or, with ``force: true``, their worker process
        is killed. Returns the job's status."""
        batch = self._batch(job_id)
        ray = await self._ray()
        await self._run(self._cancel_refs, ray, batch, force)
        return batch.summary()

    @snakepit.method
    async def list_tasks(self) -> list:
        """The registered tasks and actor classes."""
        return [s.describe() for s in self.catalog.specs()]

    @snakepit.method
    async def connect(self) -> dict:
        """Connect now if not yet connected (only with ``--connect-on-first-call``;
        otherwise the first call that needs Ray does); returns health."""
        await self._ray()
        return self.health_check()

    # --- actors -----------------------------------------------------------------------------

    @snakepit.method
    async def create_actor(
        self, cls: str, args: list | None = None, kwargs: dict | None = None,
        name: str | None = None,
    ) -> str:  # fmt: skip
        """Create an actor of a registered class; returns its actor id. With ``name`` the
        actor is also a Ray named actor (in the proxy's namespace) that tasks can look up
        with ``ray.get_actor(name)``; it still dies with the proxy."""
        spec = self.catalog.get(cls, "actor")
        ray = await self._ray()

        def create() -> Any:
            remote = self._remote(ray, spec)
            if name is not None:
                remote = remote.options(name=str(name))
            return remote.remote(*_args(args), **_kwargs(kwargs))

        return self.actors.add(spec, await self._run(create)).id

    @snakepit.method(streaming=True)
    async def call_actor(self, actor_id: str, method: str, args: list | None = None,
                         kwargs: dict | None = None) -> Any:  # fmt: skip
        """Call a public method of an actor and return its result; a generator method
        streams each yielded item as a chunk (the result is then ``nil``)."""
        rec = self.actors.get(actor_id)
        handle, is_gen = rec.method(method)
        ray = await self._ray()
        a, k = _args(args), _kwargs(kwargs)
        what = f"{rec.spec.name}.{method}"
        if not is_gen:
            ref = await self._run(lambda: handle.remote(*a, **k))
            try:
                return await asyncio.wrap_future(ref.future())
            except asyncio.CancelledError:
                await asyncio.shield(self._run(_quiet, ray.cancel, ref))
                raise
            except Exception as exc:
                raise_failed(what, 0, exc)
        send = snakepit.current_call().asend
        gen = await self._run(lambda: handle.options(num_returns="streaming").remote(*a, **k))
        gens = {0: gen}
        try:
            while gens:
                for _, kind, value in await self._run(next_events, ray, gens, POLL_S):
                    if kind == "item":
                        await send(value)
                    elif kind == "error":
                        raise_failed(what, 0, value)
                    else:
                        gens.clear()
        except asyncio.CancelledError:
            await asyncio.shield(self._run(_quiet, ray.cancel, gen))
            raise
        return None

    @snakepit.method
    async def kill_actor(self, actor_id: str) -> bool:
        """Kill an actor (no restart) and forget it."""
        rec = self.actors.pop(actor_id)
        ray = await self._ray()
        await self._run(ray.kill, rec.handle, no_restart=True)
        return True

    # --- Ray Jobs ---------------------------------------------------------------------------

    @snakepit.method
    async def submit_job(self, entrypoint: list[str] | str, runtime_env: dict | None = None,
                         metadata: dict | None = None, submission_id: str | None = None,
                         entrypoint_num_cpus: float | None = None) -> str:  # fmt: skip
        """Submit a Ray job; returns its id. ``entrypoint``: a list of words (each quoted
        for Ray's shell) or a string of plain words (no shell syntax); either must start
        with an ``--allow-entrypoint`` prefix."""
        self.jobs.check(entrypoint)  # refuse here, before a thread and the Jobs client
        kwargs: dict[str, Any] = {"runtime_env": runtime_env, "metadata": metadata,
                                  "submission_id": submission_id}  # fmt: skip
        if entrypoint_num_cpus is not None:
            kwargs["entrypoint_num_cpus"] = entrypoint_num_cpus
        return await self._run(self.jobs.submit, entrypoint, **kwargs)

    @snakepit.method
    async def job_status(self, job_id: str) -> dict:
        """A Ray job's status: pending|running|stopped|succeeded|failed, with its message."""
        return await self._run(self.jobs.status, job_id)

    @snakepit.method(streaming=True)
    async def job_logs(self, job_id: str, follow: bool = True) -> dict:
        """Stream a Ray job's log text as it is written until the job ends
        (``follow: false``: what exists now, as one chunk); returns the job's status."""
        await self._run(self.jobs.client)
        send = snakepit.current_call().asend
        if not follow:
            await send(await self._run(self.jobs.logs, job_id))
        else:
            async for text in self.jobs.tail(job_id):
                if text:
                    await send(text)
        return await self._run(self.jobs.status, job_id)

    @snakepit.method
    async def stop_job(self, job_id: str) -> bool:
        """Ask Ray to stop a job; true if it was still running."""
        return await self._run(self.jobs.stop, job_id)

    # --- health -----------------------------------------------------------------------------

    @snakepit.method
    def health_check(self) -> dict:
        """The cluster's resources, live jobs and actors (no Ray call: a snapshot kept
        fresh every 2 s); also merged into the worker's health reports."""
        return {
            "ray": self.conn.info(),
            "jobs": {"live": self.batches.live(), "tracked": len(self.batches.batches)},
            "actors": self.actors.summary(),
            "tasks": self.catalog.names(),
            "jobs_api": self.options.jobs_address,
        }


_END = object()  # marks the end of one generator replica in _settled


def _quiet(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        pass


def _args(args: Any) -> list:
    if args is None:
        return []
    if not isinstance(args, (list, tuple)):
        raise ProxyConfigError(f"args must be a list; got: {args!r}")
    return list(args)


def _kwargs(kwargs: Any) -> dict:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ProxyConfigError(f"kwargs must be a map with string keys; got: {kwargs!r}")
    return dict(kwargs)


def _check_replicas(n: Any) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_REPLICAS:
        raise ProxyConfigError(f"num_replicas must be an int in 1..{MAX_REPLICAS}; got: {n!r}")


RayProxy.__module__ = "snakepit_py.ray_proxy"  # so TARGET snakepit_py.ray_proxy finds it
