"""Which offsets a consumer may commit when its messages finish out of order.

A consumer that works on several messages of a partition at once may commit offset ``n``
only when every message before ``n`` is finished (its result or dead letter acknowledged
by the broker): Kafka's committed offset says "everything before this is done". The
tracker keeps, per partition, the offsets started in order and the ones finished, and
answers the highest offset that is safe to commit. A message that never finishes (the
consumer stopped during its retries) holds the commit back, so it is processed again after
a restart.

Not thread-safe: the consume loop's thread alone calls it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

TopicPartitionKey = tuple[str, int]


@dataclass
class _Partition:
    started: deque[int] = field(default_factory=deque)
    finished: set[int] = field(default_factory=set)
    position: int | None = None  # the next offset to commit: all before it are finished
    committed: int | None = None


class OffsetTracker:
    def __init__(self) -> None:
        self._partitions: dict[TopicPartitionKey, _Partition] = {}

    def start(self, topic: str, partition: int, offset: int) -> None:
        state = self._partitions.setdefault((topic, partition), _Partition())
        if state.started and offset <= state.started[-1]:
            raise ValueError(f"offset {offset} of {topic}[{partition}] started out of order")
        state.started.append(offset)

    def finish(self, topic: str, partition: int, offset: int) -> None:
        """Mark a started offset finished (ignored for a partition :meth:`forget` dropped)."""
        state = self._partitions.get((topic, partition))
        if state is None:
            return
        state.finished.add(offset)
        while state.started and state.started[0] in state.finished:
            done = state.started.popleft()
            state.finished.discard(done)
            state.position = done + 1

    def to_commit(self, partitions: Iterable[TopicPartitionKey] | None = None) -> dict:
        """``{(topic, partition): offset}`` for partitions whose safe position moved past
        their last commit (all partitions, or the ones given)."""
        keys = self._partitions if partitions is None else partitions
        moved = {}
        for key in keys:
            state = self._partitions.get(key)
            if state is None or state.position is None:
                continue
            if state.committed is None or state.position > state.committed:
                moved[key] = state.position
        return moved

    def committed(self, positions: dict) -> None:
        for key, offset in positions.items():
            state = self._partitions.get(key)
            if state is not None:
                state.committed = offset

    def forget(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """Stop tracking partitions this consumer no longer owns (a rebalance)."""
        for key in partitions:
            self._partitions.pop(key, None)

    @property
    def in_flight(self) -> int:
        return sum(len(s.started) for s in self._partitions.values())

    def committed_positions(self) -> dict:
        return {k: s.committed for k, s in self._partitions.items() if s.committed is not None}
