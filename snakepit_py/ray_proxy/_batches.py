"""Batches ("jobs" on the BEAM side): N submissions of one task, tracked from their
object refs alone. Blocking methods here run on the proxy's Ray thread pool."""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

from ._outcome import error_info, is_cancelled
from ._registry import Spec

__all__ = ["Batch", "BatchTable"]

PENDING, RUNNING, COMPLETE, FAILED, CANCELLED = (
    "pending", "running", "complete", "failed", "cancelled",
)  # fmt: skip
OK, ERROR, CANCELLED_OUTCOME = "ok", "error", "cancelled"
BATCH_S = 0.02  # after a first result, how long to gather the ones right behind it


class Batch:
    """The refs of one submission and what became of each.

    ``outcomes[i]`` is ``(kind, value, exc)``: ``("ok", result, None)``,
    ``("error", info_map, exception)`` or ``("cancelled", None, exception)``;
    ``order`` lists settled indices in the order they settled.
    """

    def __init__(self, job_id: str, spec: Spec, refs: list[Any]) -> None:
        self.id = job_id
        self.spec = spec
        self.refs = refs
        self.total = len(refs)
        self.streaming = spec.is_generator
        self.created = time.time()
        self.finished: float | None = None
        self.outcomes: dict[int, tuple[str, Any, BaseException | None]] = {}
        self.order: list[int] = []
        self.cancel_requested = False
        self.consumed = False  # generator items can be streamed once
        self._lock = threading.Lock()

    # --- settling (blocking; on the Ray thread pool) ----------------------------------

    def poll(self, ray: Any, timeout: float, want_all: bool = False) -> None:
        """Settle every ref that is ready, waiting up to ``timeout`` s for at least one
        (``want_all``: for all of them). Results arriving within a few ms of the first are
        settled together, which keeps a fast batch from costing one round per result."""
        with self._lock:
            pending = [i for i in range(self.total) if i not in self.outcomes]
            if not pending:
                return
            refs = [self._done_ref(i) for i in pending]
            index = {id(r): i for r, i in zip(refs, pending, strict=True)}
            ready: list[Any] = []
            if timeout > 0:
                first = len(refs) if want_all else 1
                ready, refs = ray.wait(refs, num_returns=first, timeout=timeout, fetch_local=False)
            if refs and (ready or timeout == 0):
                more, _ = ray.wait(
                    refs, num_returns=len(refs), timeout=0 if timeout == 0 else BATCH_S,
                    fetch_local=False,
                )  # fmt: skip
                ready += more
            self._settle(ray, [index[id(r)] for r in ready])

    def _done_ref(self, i: int) -> Any:
        ref = self.refs[i]
        return ref.completed() if self.streaming else ref

    def _settle(self, ray: Any, indices: list[int]) -> None:
        if not indices:
            return
        if self.streaming:  # a generator's items are read by results(); its end only counts
            for i in indices:
                self._record(i, OK, None, None)
            return
        try:
            values = ray.get([self.refs[i] for i in indices])
        except Exception:
            values = None
        for n, i in enumerate(indices):
            if values is not None:
                self._record(i, OK, values[n], None)
                continue
            try:
                self._record(i, OK, ray.get(self.refs[i]), None)
            except Exception as exc:
                self.record_error(i, exc)

    def record_error(self, i: int, exc: BaseException) -> None:
        """Settle replica ``i`` as failed or cancelled."""
        if is_cancelled(exc):
            self._record(i, CANCELLED_OUTCOME, None, exc)
        else:
            self._record(i, ERROR, error_info(exc), exc)

    def _record(self, i: int, kind: str, value: Any, exc: BaseException | None) -> None:
        if i in self.outcomes and self.outcomes[i][0] != OK:
            return
        if i in self.outcomes:  # a generator that ended and then reported an error item
            self.order.remove(i)
        self.outcomes[i] = (kind, value, exc)
        self.order.append(i)
        if len(self.outcomes) == self.total and self.finished is None:
            self.finished = time.time()

    # --- reporting ------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """How many replicas completed, failed and were cancelled so far."""
        kinds = [o[0] for o in self.outcomes.values()]
        return {"completed": kinds.count(OK), "failed": kinds.count(ERROR),
                "cancelled": kinds.count(CANCELLED_OUTCOME)}  # fmt: skip

    def state(self) -> str:
        """``pending|running|complete|failed|cancelled`` (``pending``: nothing settled yet)."""
        c = self.counts()
        if self.cancel_requested or c["cancelled"]:
            return CANCELLED
        if len(self.outcomes) < self.total:
            return RUNNING if self.outcomes else PENDING
        return FAILED if c["failed"] else COMPLETE

    def summary(self) -> dict[str, Any]:
        """The status map: ``job_id``, ``task``, ``status``, ``total`` and the counts."""
        elapsed = (self.finished or time.time()) - self.created
        return {"job_id": self.id, "task": self.spec.name, "status": self.state(),
                "total": self.total, **self.counts(), "streaming": self.streaming,
                "elapsed_ms": int(elapsed * 1000)}  # fmt: skip

    def unsent(self, sent: set[int]) -> Iterator[int]:
        """Settled indices not yet in ``sent``, in settling order."""
        return (i for i in list(self.order) if i not in sent)


class BatchTable:
    """Every batch this proxy submitted, newest last; old finished ones are dropped."""

    def __init__(self, keep: int = 1000) -> None:
        self.keep = keep
        self.batches: dict[str, Batch] = {}
        self._ids = itertools.count(1)

    def new_id(self) -> str:
        """A fresh job id, unique across proxies (``job-<n>-<random>``)."""
        return f"job-{next(self._ids)}-{secrets.token_hex(4)}"

    def add(self, batch: Batch) -> None:
        """Track ``batch``; drop the oldest finished batches beyond ``keep``."""
        self.batches[batch.id] = batch
        if len(self.batches) > self.keep:
            for old in [b for b in self.batches.values() if b.finished is not None]:
                if len(self.batches) <= self.keep:
                    break
                del self.batches[old.id]

    def live(self) -> int:
        """How many batches still have unsettled replicas."""
        return sum(1 for b in self.batches.values() if b.finished is None)
