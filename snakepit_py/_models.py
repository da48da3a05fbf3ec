"""``ModelCache``: the models one worker holds, loaded on first use, least recently used evicted."""

from __future__ import annotations

import _thread
import time

from . import _metrics, _state

TYPE_CHECKING = False  # typing is not imported at run time: start-up cost
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["ModelCache"]


class ModelCache:
    """At most ``max_models`` models, loaded by ``load(name)`` on first use.

    ``get(name)`` returns the model, loading it if needed and evicting the
    least recently used one beyond ``max_models`` (its ``close()`` is called
    if it has one). Every change is reported with ``snakepit.report_loaded``,
    so a pool routes calls with ``affinity: name`` to this worker at once;
    how long each load took is kept in ``load_times``.

    Thread-safe: two threads asking for the same model load it once (the
    second waits); different models load at the same time.

    Args:
        max_models: how many models to keep loaded (>= 1).
        load: called with a model's name, returns the model.
        report: report the loaded names to the supervisor (default True).

    Raises:
        ValueError: ``max_models`` below 1.
    """

    def __init__(self, max_models: int, load: Callable[[str], Any], *,
                 report: bool = True) -> None:  # fmt: skip
        if isinstance(max_models, bool) or not isinstance(max_models, int) or max_models < 1:
            raise ValueError(f"max_models must be an int >= 1, got: {max_models!r}")
        self.max_models = max_models
        self._load = load
        self._report = report
        self._lock = _thread.allocate_lock()
        self._models: dict[Any, Any] = {}  # insertion order = least recently used first
        self._loading: dict[Any, Any] = {}  # name -> a lock held while it loads
        self.load_times: dict[Any, float] = {}  # name -> seconds its last load took
        self.loads = 0
        self.evictions = 0

    def get(self, name: Any) -> Any:
        """The model called ``name``, loaded now if it is not yet.

        Raises:
            whatever ``load`` raises (nothing is cached then).
        """
        while True:
            with self._lock:
                if name in self._models:
                    model = self._models.pop(name)
                    self._models[name] = model  # now the most recently used
                    return model
                waiting = self._loading.get(name)
                if waiting is None:
                    mine = _thread.allocate_lock()
                    mine.acquire()
                    self._loading[name] = mine
                    break
            # another thread is loading it: wait, then look again
            with waiting:
                pass
        try:
            started = time.perf_counter()
            model = self._load(name)
            took = time.perf_counter() - started
        except BaseException:
            with self._lock:
                del self._loading[name]
            mine.release()
            raise
        with self._lock:
            self._models[name] = model
            self.load_times[name] = took
            self.loads += 1
            evicted = []
            while len(self._models) > self.max_models:
                oldest = next(iter(self._models))
                evicted.append(self._models.pop(oldest))
                self.evictions += 1
            del self._loading[name]
            names = list(self._models)
        mine.release()
        _metrics.observe_model_load(took)
        for old in evicted:
            _close(old)
        if self._report:
            _state.set_loaded_models(names)
        return model

    def loaded(self) -> list[Any]:
        """The names of the models loaded, least recently used first."""
        with self._lock:
            return list(self._models)

    def __contains__(self, name: Any) -> bool:
        with self._lock:
            return name in self._models

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)

    def evict(self, name: Any) -> bool:
        """Unload ``name`` (calling its ``close()``); False if it was not loaded."""
        with self._lock:
            if name not in self._models:
                return False
            model = self._models.pop(name)
            self.evictions += 1
            names = list(self._models)
        _close(model)
        if self._report:
            _state.set_loaded_models(names)
        return True

    def clear(self) -> None:
        """Unload every model (calling each one's ``close()``)."""
        with self._lock:
            models, self._models = list(self._models.values()), {}
        for model in models:
            _close(model)
        if self._report:
            _state.set_loaded_models([])


def _close(model: Any) -> None:
    close = getattr(model, "close", None)
    if callable(close):
        close()
