"""The ``plain`` variant of bench/telemetry.py: the telemetry job's windows without Beam.

One script doing what ``payrecon telemetry`` does up to ``telemetry_minutely``: the same
Kafka read (``plan_read``, then ``consume_plan``: ``assign()`` and consume to the planned
ends), the same decoder (``decode_payment_batch``), the same counts per event-time minute
and gateway (``transforms.telemetry_counts.minute_counts``), windows assigned and summed
with polars instead of Beam's ``WindowInto`` + ``CombinePerKey``, the same metrics per
window (``transforms.telemetry_metrics.window_metrics``), and one DuckDB load of the rows.

It does not write dead letters to Kafka, stage files, build ``fact_payment_requests`` or
``payment_conversion``, score anomalies, record ``recon_health`` or commit offsets.
"""

from __future__ import annotations

import time
from pathlib import Path

from common import Stopwatch, messages_table

# The job's default --windows minute,hour (transforms.telemetry_windows: MINUTE and
# HOUR_EVERY_5_MINUTES), as (size, period) in seconds; written out so this script does
# not import Beam.
WINDOWS = ((60, 60), (3600, 300))


def window_sums(minutes):
    """Minute counts (``MinuteCounts``) in; the counts of every window holding one of them
    out, one row per window, gateway and component (``start``/``end`` in epoch seconds).

    A minute belongs to each window ``[s, s + size)`` whose start ``s`` is a multiple of
    the period, with ``s <= minute < s + size``: ``size / period`` windows, as Beam's
    ``FixedWindows`` and ``SlidingWindows`` assign them."""
    import polars as pl

    long = pl.DataFrame(
        [(m.minute, m.gateway, c, n) for m in minutes for c, n in m.counts.items()],
        schema={"minute": pl.Int64, "gateway": pl.String, "component": pl.String, "n": pl.Int64},
        orient="row",
    )
    assigned = [
        long.with_columns(k=pl.int_ranges(0, size // period))
        .explode("k")
        .with_columns(start=pl.col("minute") // period * period - pl.col("k") * period)
        .with_columns(end=pl.col("start") + size)
        for size, period in WINDOWS
    ]
    return (
        pl.concat(assigned).group_by("start", "end", "gateway", "component").agg(pl.col("n").sum())
    )


def minutely_rows(sums, run_id: str):
    """``telemetry_minutely`` rows of the windows in ``sums`` (from :func:`window_sums`)."""
    import polars as pl

    from schemas.tables import TABLES
    from transforms.telemetry_metrics import window_metrics

    per_window = sums.group_by("start", "end", "gateway").agg("component", "n")
    metrics = [
        (start, end, gateway, m["metric"], m["dimension"], m["value"], m["events"], m["amount"])
        for start, end, gateway, components, counts in per_window.iter_rows()
        for m in window_metrics(dict(zip(components, counts, strict=True)))
    ]
    frame = pl.DataFrame(
        metrics,
        schema={
            "start": pl.Int64, "end": pl.Int64, "gateway": pl.String, "metric": pl.String,
            "dimension": pl.String, "value": pl.Float64, "events": pl.Int64, "amount": pl.Int64,
        },
        orient="row",
    )  # fmt: skip
    frame = frame.with_columns(
        window_start=pl.from_epoch("start", time_unit="s").dt.replace_time_zone("UTC"),
        window_end=pl.from_epoch("end", time_unit="s").dt.replace_time_zone("UTC"),
        window_seconds=pl.col("end") - pl.col("start"),
        run_id=pl.lit(run_id),
    )
    schema = TABLES["telemetry_minutely"].schema
    return frame.select(schema.names).to_arrow().cast(schema)


def read_payments(bootstrap: str, plan, topics: dict[str, str], batch: int = 20_000):
    """The planned messages, decoded batch by batch per topic; returns ({"telemetry":
    tables, "results": tables}, dead letters, messages)."""
    import pyarrow.compute as pc

    from schemas.payments import PAYMENT_RESULT_V1, PAYMENT_TELEMETRY_V1
    from transforms.kafka_ranges import consume_plan
    from transforms.payment_decode import decode_payment_batch

    schemas = {"telemetry": PAYMENT_TELEMETRY_V1, "results": PAYMENT_RESULT_V1}
    decoded: dict[str, list] = {kind: [] for kind in schemas}
    dead = messages = 0
    for kept in consume_plan(bootstrap, plan, batch_size=batch):
        table = messages_table(kept)
        messages += table.num_rows
        for kind, schema in schemas.items():
            part = table.filter(pc.equal(table["topic"], topics[kind]))
            if part.num_rows:
                out = decode_payment_batch(part, schema, job="bench")
                decoded[kind].append(out.events)
                dead += out.dead_letters.num_rows
    return decoded, dead, messages


def run_plain(work: Path, bootstrap: str, topics: dict[str, str]) -> dict:
    t = time.perf_counter()
    import pyarrow as pa

    from schemas.tables import TABLES
    from transforms.kafka_offsets import plan_read
    from transforms.payment_decode import DECODED_RESULT, DECODED_TELEMETRY
    from transforms.telemetry_counts import minute_counts
    from transforms.warehouse import open_warehouse

    imports = time.perf_counter() - t
    started = time.perf_counter()
    watch = Stopwatch()
    with watch("plan"):
        plan = plan_read(bootstrap, [topics["telemetry"], topics["results"]])
    with watch("kafka read + decode"):
        decoded, dead, messages = read_payments(bootstrap, plan, topics)
    with watch("minute counts"):
        telemetry = pa.concat_tables([DECODED_TELEMETRY.empty_table(), *decoded["telemetry"]])
        results = pa.concat_tables([DECODED_RESULT.empty_table(), *decoded["results"]])
        minutes = minute_counts(telemetry, "at") + minute_counts(results, "processed_at")
    with watch("windows + metrics"):
        minutely = minutely_rows(window_sums(minutes), "plain")
    with watch("duckdb load"), open_warehouse(f"duckdb:///{work / 'plain.duckdb'}") as warehouse:
        warehouse.load({TABLES["telemetry_minutely"]: minutely})
    return {
        "import_seconds": imports,
        "work_seconds": time.perf_counter() - started,
        "phases": watch.phases,
        "messages_in": messages,
        "decoded": telemetry.num_rows + results.num_rows,
        "dead_letters": dead,
        "minutely_rows": minutely.num_rows,
    }
