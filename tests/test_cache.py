"""The one bounded cache (``app.cache.BoundedCache``): entries, bytes, weak keys, threads."""

from __future__ import annotations

import gc
import threading

import pytest

from app.cache import BoundedCache


class Model:
    """A stand-in for a module: any object that takes weak references."""


def test_least_recently_used_goes_first():
    cache = BoundedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)
    assert cache.keys() == ["a", "c"]
    assert cache.get("b", "gone") == "gone"
    assert cache.evictions == 1
    assert (cache.hits, cache.misses) == (1, 1)


def test_a_byte_budget_evicts_by_cost_but_keeps_the_newest():
    cache = BoundedCache(10, max_bytes=100, cost=len)
    cache.put("a", b"x" * 40)
    cache.put("b", b"x" * 40)
    assert cache.nbytes == 80
    cache.put("c", b"x" * 40)  # 120 > 100: a goes
    assert cache.keys() == ["b", "c"] and cache.nbytes == 80
    cache.put("huge", b"x" * 500)  # over the budget alone: kept, everything else goes
    assert cache.keys() == ["huge"] and cache.nbytes == 500
    cache.put("huge", b"x" * 10)  # replacing an entry replaces its cost
    assert cache.nbytes == 10


def test_weak_keys_never_keep_an_object_alive():
    cache = BoundedCache(8, weak_keys=True)
    model, other = Model(), Model()
    cache.put(model, "spec")
    cache.put(other, "other")
    assert cache.get(model) == "spec"
    del model
    gc.collect()
    assert len(cache) == 1 and cache.keys() == [other]
    # a new object that reuses a dead one's id is not mistaken for it
    assert cache.get(Model()) is None


def test_objects_without_weak_references_are_not_kept():
    cache = BoundedCache(8, weak_keys=True)
    assert cache.get_or_make(3, lambda: "three") == "three"
    assert len(cache) == 0


def test_get_or_make_makes_once_and_discard_where_filters_keys():
    cache = BoundedCache(8)
    made = []
    for _ in range(3):
        cache.get_or_make(("w1", "m1"), lambda: made.append(1) or "model")
    assert made == [1]
    cache.put(("w1", "m2"), "x")
    cache.put(("w2", "m1"), "y")
    assert cache.discard_where(lambda key: key[0] == "w1") == 2
    assert cache.keys() == [("w2", "m1")]
    assert cache.pop(("w2", "m1")) == "y" and len(cache) == 0


def test_bounds_hold_under_threads():
    cache = BoundedCache(16, max_bytes=64, cost=lambda value: value)
    barrier = threading.Barrier(8)

    def work(offset):
        barrier.wait()
        for i in range(500):
            cache.put((offset, i), 4)
            cache.get((offset, i - 1))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 16 and cache.nbytes == 64


def test_a_budget_needs_a_cost_and_at_least_one_entry():
    with pytest.raises(ValueError):
        BoundedCache(4, max_bytes=10)
    with pytest.raises(ValueError):
        BoundedCache(0)


def test_two_threads_making_one_key_get_the_same_value():
    cache = BoundedCache(4)
    barrier = threading.Barrier(2)
    got = []

    def make():
        barrier.wait()  # both threads are making at once
        return object()

    threads = [
        threading.Thread(target=lambda: got.append(cache.get_or_make("k", make))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got[0] is got[1] is cache.get("k")
