"""``recon_health``: one row per job run, so on-call people query the pipeline like data.

Every job writes its row at the end of a run, whatever the outcome: a run that failed
(broker or Stripe unreachable, a data-quality stop) still leaves a row saying when, how and
why, provided the warehouse itself can be reached. The key is (job, run_id): a run's id is
deterministic for its window and inputs, so a retry replaces the row of the attempt before.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.fields import UTC_MICROS, field, versioned

RECON_HEALTH_V1 = versioned(
    "recon_health",
    1,
    [
        field("job", pa.string(), "reconcile, repair, telemetry ..."),
        field(
            "run_id",
            pa.string(),
            "The run (recon_runs.run_id for reconcile); for a run that failed before its "
            "read was planned, '<job>_<window start>_unplanned'.",
        ),
        field("window_start", UTC_MICROS, "Start of the window, inclusive."),
        field("window_end", UTC_MICROS, "End of the window, exclusive."),
        field("started_at", UTC_MICROS, "When the (latest) attempt started."),
        field("finished_at", UTC_MICROS, "When it finished or failed."),
        field("duration_ms", pa.int64(), "finished_at - started_at, milliseconds."),
        field(
            "freshness_s",
            pa.int64(),
            "finished_at - window_end, seconds: how long after its window closed the "
            "results landed (negative for a window reconciled before it closed).",
        ),
        field(
            "status",
            pa.string(),
            "succeeded, discrepancies_over_threshold, data_quality_failed, or failed.",
        ),
        field("exit_code", pa.int64(), "The command's exit code (0, 1, 2 or 3)."),
        field("error", pa.string(), "Why a failed run failed, one line.", nullable=True),
        field(
            "records_in",
            pa.int64(),
            "Records read: Kafka messages in the window plus Stripe rows.",
            nullable=True,
        ),
        field(
            "records_out",
            pa.int64(),
            "Records that reached an outcome: records_in less dead letters, quarantined "
            "and rejected rows.",
            nullable=True,
        ),
        field("dead_letters", pa.int64(), "Messages dead-lettered.", nullable=True),
        field(
            "dead_letters_by_reason",
            pa.string(),
            "JSON object: reason -> count.",
            nullable=True,
        ),
        field(
            "quarantined",
            pa.int64(),
            "Rows set aside by data quality or refused as unreadable.",
            nullable=True,
        ),
        field("discrepancies", pa.int64(), "Discrepancies found.", nullable=True),
        field("dq_failures", pa.int64(), "Data-quality expectations that failed.", nullable=True),
        field(
            "counts_conserved",
            pa.bool_(),
            "records in = out + dead letters + set aside, per currency, held.",
            nullable=True,
        ),
        field(
            "offsets",
            pa.string(),
            "JSON: the Kafka offset ranges read per topic partition.",
            nullable=True,
        ),
    ],
    doc="One row per job run: window, freshness, duration, counts in and out, dead letters, "
    "data-quality failures, offsets and status.",
)
