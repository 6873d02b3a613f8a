"""The heatmap cache: least recently used out first, and consistent when many threads use it at once."""

import threading
import time
from collections import OrderedDict

import pytest

from marsvision.web.lru import LockedLRU


def test_least_recently_used_goes_first():
    lru = LockedLRU(2)
    lru.put("a", b"A")
    lru.put("b", b"B")
    assert lru.get("a") == b"A"  # a is now the most recently used
    lru.put("c", b"C")
    assert lru.get("b") is None and lru.get("a") == b"A" and lru.get("c") == b"C" and len(lru) == 2
    lru.put("a", b"A2")  # replacing a value keeps one entry
    assert len(lru) == 2 and lru.get("a") == b"A2"
    with pytest.raises(ValueError):
        LockedLRU(0)


class SlowOrder(OrderedDict):
    """An OrderedDict that gives the other threads a turn inside every reordering and eviction: the window
    between a look-up and its use, which an unlocked cache loses to another thread's eviction."""

    def move_to_end(self, key, last=True):
        time.sleep(0.0002)
        super().move_to_end(key, last)

    def popitem(self, last=True):
        time.sleep(0.0002)
        return super().popitem(last)


def test_concurrent_readers_and_writers_see_only_stored_values_and_the_bound_holds():
    """8 threads get and put overlapping keys, each operation opened up for the others to run in between:
    every hit is the value stored for its key, no operation raises, and the size never exceeds the bound.
    (Without the lock this fails: a key evicted between a thread's look-up and its reordering raises
    KeyError, and two threads evicting at once leave fewer entries than the bound.)"""
    lru: LockedLRU[tuple] = LockedLRU(4)
    lru._items = SlowOrder()
    errors, sizes = [], []
    start = threading.Barrier(8)

    def work(n: int):
        try:
            start.wait()
            for i in range(150):
                key = (i * 3 + n) % 10
                hit = lru.get(key)
                if hit is not None and hit[0] != key:
                    errors.append(f"key {key} gave {hit}")
                lru.put(key, (key, n))
                sizes.append(len(lru))
        except Exception as e:  # noqa: BLE001 — any exception in a worker is a failure of the cache
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert max(sizes) <= 4 and len(lru) == 4
