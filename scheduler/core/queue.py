"""The queue: every job waiting for a placement, in queue order, grouped for the planner.

Queue order is priority (high first), then submission order, then name: ``OrderKey``.
Jobs of one *shape* (class, GPU type, gang size, duration, constraints) are interchangeable
for every capacity question, so the planner walks shapes, not jobs: when the first job of a
shape can neither start nor be planned, no later one of that shape can in the same pass.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Hashable, Iterator

OrderKey = tuple[int, int, str]  # (-priority, submission seq, name): sort order is queue order


class JobQueue:
    """Waiting jobs by GPU type and shape, each shape's jobs in queue order."""

    def __init__(self) -> None:
        self._where: dict[str, tuple[str, Hashable, OrderKey]] = {}  # name -> (GPU type, shape, key)
        self._shapes: dict[str, dict[Hashable, list[OrderKey]]] = {}  # GPU type -> shape -> keys in order

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def names(self) -> Iterator[str]:
        return iter(self._where)

    def add(self, name: str, gpu_type: str, shape: Hashable, key: OrderKey) -> None:
        if name in self._where:
            return
        self._where[name] = (gpu_type, shape, key)
        insort(self._shapes.setdefault(gpu_type, {}).setdefault(shape, []), key)

    def remove(self, name: str) -> None:
        where = self._where.pop(name, None)
        if where is None:
            return
        gpu_type, shape, key = where
        shapes = self._shapes[gpu_type]
        keys = shapes[shape]
        del keys[bisect_left(keys, key)]
        if not keys:
            del shapes[shape]
            if not shapes:
                del self._shapes[gpu_type]

    def gpu_types(self) -> list[str]:
        return sorted(self._shapes)

    def shapes(self, gpu_type: str) -> dict[Hashable, list[OrderKey]]:
        """Shape -> its waiting jobs' keys in queue order (read-only for callers)."""
        return self._shapes.get(gpu_type, {})

    def in_order(self, gpu_type: str) -> list[OrderKey]:
        """Every waiting job of this GPU type in queue order (views and tests; the planner walks shapes)."""
        return sorted(k for keys in self.shapes(gpu_type).values() for k in keys)
