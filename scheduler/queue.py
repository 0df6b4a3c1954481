"""The pending queue, bucketed by feasibility signature.

Jobs with the same signature (class, GPU type, gang size, constraints) are interchangeable
for feasibility: if the head of a bucket cannot be placed, nothing behind it can either.
So a capacity event costs one attempt per bucket, not one per queued job, and a 100k-job
backlog does not slow down each decision.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterator


class PendingQueue:
    def __init__(self) -> None:
        self._buckets: dict[Hashable, list[tuple[int, int, str]]] = {}
        self._by_type: dict[str, set[Hashable]] = {}
        self._live: dict[str, tuple[Hashable, int]] = {}

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, name: str) -> bool:
        return name in self._live

    def push(self, name: str, signature: Hashable, gpu_type: str, priority: int, seq: int) -> None:
        """Queue ``name``; order is priority (high first), then arrival ``seq``."""
        self._live[name] = (signature, seq)
        bucket = self._buckets.get(signature)
        if bucket is None:
            bucket = self._buckets[signature] = []
            self._by_type.setdefault(gpu_type, set()).add(signature)
        heapq.heappush(bucket, (-priority, seq, name))

    def remove(self, name: str) -> bool:
        """Forget ``name`` (lazily dropped from its heap when it surfaces)."""
        return self._live.pop(name, None) is not None

    def names(self) -> Iterator[str]:
        return iter(self._live)

    def _clean_head(self, signature: Hashable) -> tuple[int, int, str] | None:
        bucket = self._buckets.get(signature)
        while bucket:
            head = bucket[0]
            if self._live.get(head[2]) == (signature, head[1]):
                return head
            heapq.heappop(bucket)
        return None

    def signatures(self, gpu_type: str | None = None) -> list[Hashable]:
        if gpu_type is None:
            return list(self._buckets)
        return list(self._by_type.get(gpu_type, ()))

    def head(self, signature: Hashable) -> tuple[int, int, str] | None:
        """The live head of one bucket, as (-priority, seq, name)."""
        return self._clean_head(signature)

    def head_heap(self, gpu_type: str | None = None) -> list[tuple[tuple[int, int, str], Hashable]]:
        """Heads of every matching bucket, heap-ordered by priority then arrival."""
        heap = []
        for sig in self.signatures(gpu_type):
            head = self._clean_head(sig)
            if head is not None:
                heap.append((head, sig))
        heapq.heapify(heap)
        return heap

    def pop(self, name: str) -> None:
        """Take ``name`` (a live bucket head) out of the queue."""
        sig, _ = self._live.pop(name)
        bucket = self._buckets[sig]
        heapq.heappop(bucket)
