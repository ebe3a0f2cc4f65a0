"""What a job run did, from its Beam metrics: counts that must add up, and offsets read."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from apache_beam.metrics.metric import MetricsFilter

from transforms.decode import NAMESPACE as DECODE_NS
from transforms.kafka import NAMESPACE as KAFKA_NS
from transforms.kafka_offsets import ReadPlan


def counters(result, namespace: str) -> dict[str, int]:
    """Committed counter values of one namespace, by name (attempted where not committed)."""
    query = result.metrics().query(MetricsFilter().with_namespace(namespace))
    totals: Counter[str] = Counter()
    for c in query["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        totals[c.key.metric.name] += value or 0
    return dict(totals)


@dataclass
class ReadSummary:
    """Counts of a read-and-decode run. ``messages_in == events_out + dead_letters``."""

    plan: ReadPlan
    messages_read: int = 0
    messages_outside_window: int = 0
    messages_in: int = 0
    events_out: int = 0
    dead_letters: int = 0
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_result(cls, result, plan: ReadPlan) -> ReadSummary:
        kafka, decode = counters(result, KAFKA_NS), counters(result, DECODE_NS)
        prefix = "dead_letters."
        return cls(
            plan=plan,
            messages_read=kafka.get("messages_read", 0),
            messages_outside_window=kafka.get("messages_outside_window", 0),
            messages_in=decode.get("messages_in", 0),
            events_out=decode.get("events_out", 0),
            dead_letters=decode.get("dead_letters", 0),
            dead_letters_by_reason={
                k[len(prefix) :]: v for k, v in sorted(decode.items()) if k.startswith(prefix) and v
            },
        )

    @property
    def balanced(self) -> bool:
        """in = out + dead letters, and every message read is in the window or outside it."""
        return (
            self.messages_in == self.events_out + self.dead_letters
            and self.messages_read == self.messages_in + self.messages_outside_window
            and self.dead_letters == sum(self.dead_letters_by_reason.values())
        )

    def render(self) -> str:
        lines = [
            f"messages read      {self.messages_read:>12,}  "
            f"({self.messages_outside_window:,} outside the window, skipped)",
            f"messages in window {self.messages_in:>12,}",
            f"events decoded     {self.events_out:>12,}",
            f"dead letters       {self.dead_letters:>12,}",
        ]
        lines += [f"  {reason:<24}{n:>10,}" for reason, n in self.dead_letters_by_reason.items()]
        lines.append(
            f"counts add up      {'yes' if self.balanced else 'NO'} (in = decoded + dead letters)"
        )
        lines.append("offsets read per partition:")
        lines += [
            f"  {r.topic}[{r.partition}]  {r.start:>10,} .. {r.stop:<10,}({r.size:,} offsets)"
            for r in self.plan.ranges
        ]
        return "\n".join(lines)
