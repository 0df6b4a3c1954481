"""The pending queue: priority first, then submission order, bucketed by feasibility signature.

Jobs with the same signature (class, GPU type, gang size, constraints) are interchangeable
for feasibility: if the best of a bucket cannot start, nothing behind it can either, except
a shorter job backfilling a reserved pool, which ``best_within`` finds. So a capacity event
costs one look per bucket, not one per queued job, and a 100k-job backlog does not slow
down each decision.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable, Iterator

Key = tuple[int, int, str]  # (-priority, seq, name): heap order is queue order


class _Bucket:
    __slots__ = ("by_duration", "by_priority", "gpu_type")

    def __init__(self, gpu_type: str) -> None:
        self.gpu_type = gpu_type
        self.by_priority: list[Key] = []
        self.by_duration: list[tuple[float, int, int, str]] = []  # (seconds, -priority, seq, name)


class PendingQueue:
    def __init__(self) -> None:
        self._buckets: dict[Hashable, _Bucket] = {}
        self._by_type: dict[str, set[Hashable]] = {}
        # name -> the arrival seq it is queued with: seqs are unique per submission, so a heap entry
        # is live when its seq is its name's (a job ended and submitted again gets a new seq)
        self._live: dict[str, int] = {}
        # signature -> its bucket's priority heap: ``tops[sig][0]`` is a lower bound of the bucket's
        # head (it may be a job removed since: ``head`` drops those), read where that is enough
        self.tops: dict[Hashable, list[Key]] = {}

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, name: str) -> bool:
        return name in self._live

    def names(self) -> Iterator[str]:
        return iter(self._live)

    def push(self, name: str, signature: Hashable, gpu_type: str, priority: int, seq: int, duration_seconds: float) -> bool:
        """Queue ``name`` (idempotent): order is priority (high first), then arrival ``seq``.

        Returns True when this opened a new bucket (a signature never queued before).
        """
        if name in self._live:
            return False
        self._live[name] = seq
        bucket = self._buckets.get(signature)
        new = bucket is None
        if bucket is None:
            bucket = self._buckets[signature] = _Bucket(gpu_type)
            self.tops[signature] = bucket.by_priority
            self._by_type.setdefault(gpu_type, set()).add(signature)
        heapq.heappush(bucket.by_priority, (-priority, seq, name))
        heapq.heappush(bucket.by_duration, (duration_seconds, -priority, seq, name))
        return new

    def remove(self, name: str) -> bool:
        """Forget ``name`` (lazily dropped from its heaps when it surfaces)."""
        return self._live.pop(name, None) is not None

    def _alive(self, seq: int, name: str) -> bool:
        return self._live.get(name) == seq

    def head(self, signature: Hashable) -> Key | None:
        """The best live job of one bucket, as (-priority, seq, name)."""
        bucket = self._buckets.get(signature)
        if bucket is None:
            return None
        heap = bucket.by_priority
        live = self._live
        while heap:
            head = heap[0]
            if live.get(head[2]) == head[1]:  # _alive, inlined: the hottest call of a settle
                return head
            heapq.heappop(heap)
        return None

    def signatures(self, gpu_type: str | None = None) -> list[Hashable]:
        if gpu_type is None:
            return list(self._buckets)
        return list(self._by_type.get(gpu_type, ()))

    def head_heap(self, gpu_type: str | None = None, among: Iterable[Hashable] | None = None) -> list[tuple[Key, Hashable]]:
        """Heads of every matching bucket (of ``gpu_type``, or ``among`` these), heap-ordered by priority then arrival."""
        heap = []
        for sig in self.signatures(gpu_type) if among is None else among:
            head = self.head(sig)
            if head is not None:
                heap.append((head, sig))
        heapq.heapify(heap)
        return heap

    def shortest(self, signature: Hashable) -> float | None:
        """Expected duration (s) of the shortest live job in the bucket."""
        bucket = self._buckets.get(signature)
        if bucket is None:
            return None
        heap = bucket.by_duration
        while heap:
            top = heap[0]
            if self._alive(top[2], top[3]):
                return top[0]
            heapq.heappop(heap)
        return None

    def best_within(self, signature: Hashable, max_duration_seconds: float) -> Key | None:
        """The best-priority live job of the bucket expected to last at most ``max_duration_seconds``."""
        bucket = self._buckets.get(signature)
        if bucket is None:
            return None
        best: Key | None = None
        for dur, neg_prio, seq, name in bucket.by_duration:
            if dur <= max_duration_seconds and self._alive(seq, name):
                key = (neg_prio, seq, name)
                if best is None or key < best:
                    best = key
        return best
