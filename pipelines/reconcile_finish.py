"""After the pipeline: check conservation, load the warehouse atomically, commit offsets, and
print the summary. Everything here reads the staged tables, so it is the same on every
runner, and everything it writes is an upsert, so a rerun after a crash converges."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from pipelines.discrepancy_aging import (
    AGING,
    aging_snapshot,
    open_in_warehouse,
    previous_snapshot,
)
from pipelines.reconcile_tables import (
    REVENUE_COLUMNS,
    aggregate_dq_results,
    conservation_table,
    daily_revenue,
    revenue_sums,
    run_row,
    tally,
    unreadable,
)
from pipelines.run_health import health_row
from schemas.balance_transaction import BALANCE_TRANSACTION_V1
from schemas.currencies import ISO_4217, exponent
from schemas.dead_letter import DEAD_LETTER_V1
from schemas.discrepancy import DISCREPANCY_V1, KINDS
from schemas.dq_result import DQ_RESULT_V1
from schemas.match import RECON_COUNT_V1, RECON_TOTALS_V1, STRIPE_EXPORT_REJECT_V1
from schemas.tables import TABLES
from transforms.kafka_offsets import ReadPlan, commit_offsets
from transforms.quality import validate
from transforms.quality_suites import RECONCILIATION_INVARIANTS
from transforms.staging import read_staged, staged_files
from transforms.warehouse import ParquetFiles, open_warehouse

_FACT_COLUMNS = ["balance_transaction_id", *REVENUE_COLUMNS]


def _columns(staging: str, name: str, columns: list[str]) -> pa.Table:
    """A few columns of a (possibly large) staged table, read without the rest."""
    files = staged_files(staging, name)
    if not files:
        return pa.table(
            {c: pa.array([], pa.int64() if c == "amount" else pa.string()) for c in columns}
        )
    return ds.dataset(files, format="parquet").to_table(columns=columns)


def _batches(staging: str, name: str, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """A staged table's columns, batch by batch (nothing when it has no files)."""
    files = staged_files(staging, name)
    if files:
        yield from ds.dataset(files, format="parquet").to_batches(columns=columns)


def _tally(staging: str, name: str) -> pl.DataFrame:
    return tally(_batches(staging, name, ["currency", "amount"]))


def _n(tallied: pl.DataFrame) -> int:
    return int(tallied["n"].sum())


def _count_by(table: pa.Table, column: str) -> dict[str, int]:
    return dict(sorted(Counter(table.column(column).to_pylist()).items()))


def finish_run(request, plan: ReadPlan, config, staging: str, *, started: float) -> int:
    """Load, commit, summarise; returns the exit code."""
    from pipelines.reconcile_run import _say

    counts = read_staged(staging, "counts", RECON_COUNT_V1)
    totals = read_staged(staging, "totals", RECON_TOTALS_V1)
    discrepancies = read_staged(staging, "discrepancies", DISCREPANCY_V1)
    dead = read_staged(staging, "dead_letters", DEAD_LETTER_V1)
    quarantined_ledger = _tally(staging, "ledger_quarantined")
    quarantined_stripe = _tally(staging, "stripe_quarantined")
    rejected_stripe = read_staged(staging, "stripe_rejected", STRIPE_EXPORT_REJECT_V1).num_rows
    payouts_off = _columns(staging, "payouts_quarantined", ["payout_id"]).num_rows
    # The day's staged rows are tallied batch by batch: the job's memory does not grow
    # with the day after its pipeline either.
    ledger_rows = _tally(staging, "ledger_events")
    dropped_ledger = tally([quarantined_ledger, unreadable(dead.num_rows)])
    ledger_in = tally([ledger_rows, dropped_ledger])
    dropped_stripe = tally([quarantined_stripe, unreadable(rejected_stripe)])
    stripe_in = tally([_tally(staging, "stripe_rows"), dropped_stripe])
    conservation = conservation_table(counts, ledger_in, stripe_in, dropped_ledger, dropped_stripe)
    invariants = validate(RECONCILIATION_INVARIANTS, conservation, {})
    dq_failures = sum(1 for o in invariants.outcomes if not o.success)
    dq_results = aggregate_dq_results(read_staged(staging, "dq_results", DQ_RESULT_V1))
    dq_failures += sum(1 for ok in dq_results.column("success").to_pylist() if not ok)

    by_kind = {k: 0 for k in KINDS} | _count_by(discrepancies, "kind")
    status = "succeeded"
    if not invariants.success:
        status = "data_quality_failed"
    elif (
        request.max_discrepancies is not None and discrepancies.num_rows > request.max_discrepancies
    ):
        status = "discrepancies_over_threshold"

    matched = _rows(counts, "ledger", "matched")
    pending = _rows(counts, "ledger", "pending")
    finished = datetime.now(UTC)
    row = run_row(
        run_id=config.run_id,
        window=(request.window_start, request.window_end),
        started_at=datetime.fromtimestamp(started, UTC),
        finished_at=finished,
        status=status,
        stripe_source=request.stripe_source,
        offsets=plan.to_json(),
        counts={
            "messages_in": _n(ledger_in),
            "events_out": _n(ledger_rows) + _n(quarantined_ledger),
            "dead_letters": dead.num_rows,
            "stripe_rows": _n(stripe_in),
            "matched": matched,
            "pending": pending,
            "discrepancies": discrepancies.num_rows,
        },
        by_reason=_count_by(dead, "reason"),
        by_kind=by_kind,
        totals=totals,
        dq_failures=dq_failures,
    )

    set_aside = _n(quarantined_ledger) + _n(quarantined_stripe) + rejected_stripe
    health = health_row(
        job="reconcile",
        run_id=config.run_id,
        window=(request.window_start, request.window_end),
        started_at=row["started_at"],
        finished_at=finished,
        status=status,
        exit_code=0 if status == "succeeded" else 1,
        counts={
            "records_in": _n(ledger_in) + _n(stripe_in),
            "records_out": _n(ledger_in) + _n(stripe_in) - dead.num_rows - set_aside,
            "dead_letters": dead.num_rows,
            "dead_letters_by_reason": row["dead_letters_by_reason"],
            "quarantined": set_aside,
            "discrepancies": discrepancies.num_rows,
            "dq_failures": dq_failures,
            "counts_conserved": invariants.success,
            "offsets": row["offsets"],
        },
    )

    _say(f"loading the warehouse {request.warehouse.split('?')[0]}")
    with open_warehouse(request.warehouse) as warehouse:
        warehouse.load(
            _staged_loads(staging)
            | {TABLES["dq_results"]: dq_results}
            | {
                TABLES["recon_runs"]: pa.Table.from_pylist(
                    [row], schema=TABLES["recon_runs"].schema
                ),
                TABLES["recon_health"]: health,
            }
            | _daily_revenue_load(warehouse, staging, request.window_start, request.window_end)
            | _aging_load(warehouse, discrepancies, request)
        )
    if status != "data_quality_failed":
        commit_offsets(
            request.bootstrap_servers,
            request.group_id,
            plan.ranges,
            request.kafka_overrides,
            forward_only=True,
            timeout=request.broker_timeout,
        )
    print(
        render_summary(
            row,
            by_kind,
            discrepancies,
            totals,
            invariants,
            {
                "ledger events quarantined by data quality": _n(quarantined_ledger),
                "Stripe rows quarantined by data quality": _n(quarantined_stripe),
                "Stripe export rows rejected (unreadable)": rejected_stripe,
                "payouts not equal to the net of their transactions": payouts_off,
            },
            time.time() - started,
        )
    )
    if status == "succeeded":
        return 0
    return 1


def _rows(counts: pa.Table, side: str, outcome: str) -> int:
    mask = pc.and_(
        pc.equal(counts.column("side"), side), pc.equal(counts.column("outcome"), outcome)
    )
    return int(pc.sum(counts.filter(mask).column("rows")).as_py() or 0)


def _staged_loads(staging: str) -> dict:
    loads = {}
    for staged, table in (
        ("discrepancies", "recon_discrepancies"),
        ("ledger_events", "fact_ledger_events"),
        ("stripe_rows", "fact_balance_transactions"),
    ):
        loads[TABLES[table]] = ParquetFiles(tuple(staged_files(staging, staged)))
    loads[TABLES["recon_matches"]] = ParquetFiles(
        tuple(staged_files(staging, "matches") + staged_files(staging, "pending"))
    )
    return loads


def _daily_revenue_load(warehouse, staging: str, start: datetime, end: datetime) -> dict:
    """``daily_revenue`` for every whole day the window touches, to load in the same
    transaction as the facts: the warehouse's facts of those days, with this run's staged
    rows replacing the ones they upsert (a window may cover part of a day; rows read from
    the margins leave their own days alone). The staged rows are summed batch by batch;
    only a rerun, whose days already have facts, reads the staged ids to replace them."""
    days: set[date] = set()
    partials = []
    for batch in _batches(staging, "stripe_rows", REVENUE_COLUMNS):
        created = batch.column("created")
        in_window = pc.and_(
            pc.greater_equal(created, pa.scalar(start, created.type)),
            pc.less(created, pa.scalar(end, created.type)),
        )
        days.update(pc.unique(pc.cast(created.filter(in_window), pa.date32())).to_pylist())
        partials.append(revenue_sums(batch))
    if not days:
        return {}
    staged = pl.concat(partials).filter(pl.col("day").is_in(sorted(days)))
    schema = pa.schema([BALANCE_TRANSACTION_V1.field(c) for c in _FACT_COLUMNS])
    kept = schema.empty_table()
    if warehouse.has_table("fact_balance_transactions"):
        listed = ", ".join(f"DATE '{d.isoformat()}'" for d in sorted(days))
        existing = warehouse.query_arrow(
            f"SELECT {', '.join(_FACT_COLUMNS)} FROM fact_balance_transactions "
            f"WHERE CAST(created AS DATE) IN ({listed})"
        ).cast(schema)
        if existing.num_rows:
            replaced = _columns(staging, "stripe_rows", ["balance_transaction_id"])
            kept = existing.filter(
                pc.invert(
                    pc.is_in(
                        existing.column("balance_transaction_id"),
                        value_set=replaced.column("balance_transaction_id"),
                    )
                )
            )
    return {TABLES["daily_revenue"]: daily_revenue([staged, kept])}


def _aging_load(warehouse, discrepancies: pa.Table, request) -> dict:
    """Today's ``discrepancy_aging`` snapshot: the other windows' open discrepancies in the
    warehouse, and this run's (which replace whatever its window had)."""
    window = (request.window_start, request.window_end)
    others = open_in_warehouse(warehouse, window)
    mine = discrepancies.select(others.column_names).cast(others.schema)
    snapshot = aging_snapshot(
        pa.concat_tables([others, mine]),
        request.as_of,
        previous_snapshot(warehouse, request.as_of),
    )
    return {AGING: snapshot}


def _major(amount: int, currency: str) -> str:
    if currency not in ISO_4217:
        return str(amount)
    return f"{Decimal(amount).scaleb(-exponent(currency)):,}"


def render_summary(
    row: dict,
    by_kind: dict,
    discrepancies: pa.Table,
    totals: pa.Table,
    invariants,
    set_aside: dict[str, int],
    seconds: float,
) -> str:
    lines = [
        "",
        f"run {row['run_id']}  [{row['window_start']:%Y-%m-%dT%H:%M:%SZ}, "
        f"{row['window_end']:%Y-%m-%dT%H:%M:%SZ})  {row['status']}  ({seconds:.1f} s)",
        f"ledger events        {row['events_out']:>10,}   dead letters {row['dead_letters']:,}",
        f"stripe transactions  {row['stripe_rows']:>10,}",
        f"matched              {row['matched']:>10,}   pending (not yet settled) "
        f"{row['pending']:,}",
        f"discrepancies        {row['discrepancies']:>10,}",
    ]
    at_stake = _at_stake(discrepancies)
    for kind, n in by_kind.items():
        money = ", ".join(f"{_major(v, c)} {c.upper()}" for c, v in at_stake.get(kind, []))
        lines.append(f"  {kind:<22}{n:>8,}   {money}")
    lines.append("totals per currency (minor units converted to major):")
    for t in sorted(totals.to_pylist(), key=lambda r: (r["currency"], r["side"])):
        fee = (
            ""
            if t["fee"] is None
            else f"  fee {_major(t['fee'], t['currency'])}  net {_major(t['net'], t['currency'])}"
        )
        lines.append(
            f"  {t['currency'].upper()} {t['side']:<6} rows {t['rows']:>8,}  "
            f"gross {_major(t['gross'], t['currency'])}  refunds "
            f"{_major(t['refunds'], t['currency'])}  disputes "
            f"{_major(t['disputes'], t['currency'])}{fee}"
        )
    lines.append(
        f"data quality: {row['dq_failures']} failed expectation(s); conservation "
        f"{'holds' if invariants.success else 'BROKEN: ' + invariants.describe()}"
    )
    lines += [f"{what}: {n:,}" for what, n in set_aside.items() if n]
    return "\n".join(lines)


def _at_stake(discrepancies: pa.Table) -> dict[str, list[tuple[str, int]]]:
    """Per kind, per currency: the money concerned (the difference for an amount mismatch,
    else the larger of the two sides' amounts)."""
    out: dict[str, Counter] = {}
    for d in discrepancies.to_pylist():
        if d["kind"] == "amount_mismatch" and d["amount_delta"] is not None:
            amount = abs(d["amount_delta"])
        else:
            amount = max(d["ledger_amount"] or 0, d["stripe_amount"] or 0)
        out.setdefault(d["kind"], Counter())[d["currency"] or "?"] += amount
    return {k: sorted(v.items()) for k, v in out.items()}
