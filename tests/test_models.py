"""ModelCache (snakepit.ModelCache) and @method(idempotent=True)."""

from __future__ import annotations

import threading
import time

import pytest

import snakepit_py as snakepit
from snakepit_py import _state
from snakepit_py._methods import Method, marked_options
from snakepit_py.errors import RegistryError


class Model:
    def __init__(self, name):
        self.name = name
        self.closed = False

    def close(self):
        self.closed = True


@pytest.fixture(autouse=True)
def _no_reported_models():
    _state.set_loaded_models([])
    yield
    _state.set_loaded_models([])


def test_get_loads_once_and_reports():
    loads = []
    cache = snakepit.ModelCache(max_models=2, load=lambda n: loads.append(n) or Model(n))

    a = cache.get("a")
    assert cache.get("a") is a
    assert loads == ["a"]
    assert cache.loaded() == ["a"]
    assert _state.loaded_models() == ["a"]
    assert "a" in cache.load_times and cache.load_times["a"] >= 0


def test_least_recently_used_is_evicted_and_closed():
    cache = snakepit.ModelCache(max_models=2, load=Model)
    a, b = cache.get("a"), cache.get("b")
    cache.get("a")  # b is now the least recently used
    cache.get("c")

    assert cache.loaded() == ["a", "c"]
    assert b.closed and not a.closed
    assert _state.loaded_models() == ["a", "c"]
    assert cache.evictions == 1 and cache.loads == 3


def test_a_model_without_close_is_just_dropped():
    cache = snakepit.ModelCache(max_models=1, load=lambda n: {"name": n})
    cache.get("a")
    cache.get("b")
    assert cache.loaded() == ["b"]


def test_a_failed_load_caches_nothing_and_raises():
    def load(name):
        raise RuntimeError(f"no {name}")

    cache = snakepit.ModelCache(max_models=1, load=load)
    with pytest.raises(RuntimeError, match="no a"):
        cache.get("a")
    assert cache.loaded() == [] and len(cache) == 0


def test_two_threads_asking_for_one_model_load_it_once():
    loads = []

    def load(name):
        loads.append(name)
        time.sleep(0.05)
        return Model(name)

    cache = snakepit.ModelCache(max_models=2, load=load)
    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("m"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == ["m"]
    assert len({id(m) for m in got}) == 1


def test_evict_and_clear_close_models():
    cache = snakepit.ModelCache(max_models=3, load=Model)
    a, b = cache.get("a"), cache.get("b")
    assert cache.evict("a") and a.closed
    assert not cache.evict("a")
    cache.clear()
    assert b.closed and cache.loaded() == [] and _state.loaded_models() == []


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_max_models_is_checked(bad):
    with pytest.raises(ValueError, match="max_models"):
        snakepit.ModelCache(max_models=bad, load=Model)


def test_idempotent_is_a_method_option_shown_by_describe():
    @snakepit.method(idempotent=True)
    def lookup(key):
        return key

    @snakepit.method
    def write(key):
        return key

    opts = marked_options(lookup)
    assert opts is not None and opts.idempotent is True
    assert Method.build("lookup", lookup, opts).describe()["idempotent"] is True
    # absent when false: a 1.0 supervisor has no such atom
    assert "idempotent" not in Method.build("write", write, marked_options(write)).describe()


def test_idempotent_must_be_a_bool():
    with pytest.raises(RegistryError, match="idempotent"):
        snakepit.method(idempotent="yes")


def test_a_load_is_observed_in_the_workers_model_load_metrics():
    from snakepit_py import _metrics

    def loads() -> int:
        return _metrics.histogram(_metrics._counts(_metrics._model_loads))["count"]

    before = loads()
    cache = snakepit.ModelCache(max_models=1, load=lambda name: object())
    cache.get("m1")
    cache.get("m1")  # (cached: no load)
    cache.get("m2")
    assert loads() == before + 2
