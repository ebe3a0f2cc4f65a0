"""Converting Stripe report text to exact values: the conversion plan of stripe_files.

Amounts are decimal major units as text; they become integer minor units with the currency's
exponent by splitting the text (sign, whole, fraction) in vectorised polars expressions, so no
value ever passes through a float. Each conversion comes with checks that name the reason, the
column and the detail of a row that cannot be converted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import polars as pl

from schemas.currencies import ISO_4217, exponent
from schemas.dead_letter import Reason
from transforms.ledger_validation import EARLIEST, LATEST

MAX_WHOLE_DIGITS = 15  # 10**15 major units * 1000 still fits in int64

_EXPONENTS = {code: exponent(code) for code in ISO_4217}
_SCALE = {0: 1, 2: 100, 3: 1000}
_DIVISOR = {0: 1000, 2: 10, 3: 1}  # from thousandths to minor units
# ASCII digits only: \d also matches other scripts' digits ("\u0663"), which the cast to an
# integer then refuses, failing the whole file instead of the row.
_DECIMAL = r"^(?P<sign>[+-]?)(?P<whole>[0-9]+)(?:\.(?P<frac>[0-9]*))?$"
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S%.f"
ERR_SEP = "\x1f"


class Columns(NamedTuple):
    created: tuple[str, str]  # (column, timezone)
    available_on: tuple[str, str] | None


# -- the conversion plan: temporary columns computed once, in stages, then checked ---------

Check = tuple[pl.Expr, pl.Expr]  # (the row is bad, "reason<SEP>column<SEP>detail")


class Plan(NamedTuple):
    stages: list[list[pl.Expr]]
    checks: list[Check]  # in priority order: the first failing one names the row's reason


def _error(reason: Reason, column: str, *detail: pl.Expr | str) -> pl.Expr:
    parts = [pl.lit(p) if isinstance(p, str) else p.fill_null("") for p in detail]
    return pl.concat_str([pl.lit(f"{reason.value}{ERR_SEP}{column}{ERR_SEP}"), *parts])


def _quoted(column: str) -> pl.Expr:
    return pl.concat_str([pl.lit("'"), pl.col(column), pl.lit("'")])


def _empty(column: str) -> Check:
    return pl.col(column).is_null(), _error(Reason.EMPTY_FIELD, column, "empty")


def plan_conversion(schema: pl.Schema, columns: Columns, amounts: Sequence[str]) -> Plan:
    """Converted columns ``_minor_<amount>``, ``_created``, ``_available_on`` and the checks."""
    parse, split, values = [], [], []
    checks = [_empty("balance_transaction_id"), _empty("reporting_category"), _empty("currency")]
    checks.append(_unknown_currency("currency"))
    if "customer_facing_currency" in schema:
        checks.append(_unknown_currency("customer_facing_currency"))
    for column in amounts:
        currency = "customer_facing_currency" if column.startswith("customer") else "currency"
        if currency not in schema:
            continue
        parse.append(_amount_parts(column))
        split += _amount_fields(column, currency)
        values.append(_amount_value(column))
        checks += _amount_checks(column, currency, required=column != "customer_facing_amount")
    for alias, spec, required in (
        ("_created", columns.created, True),
        ("_available_on", columns.available_on, False),
    ):
        if spec is not None:
            split.append(_time(spec[0], spec[1], schema[spec[0]]).alias(alias))
            checks += _time_checks(spec[0], spec[1], alias, required)
    return Plan([parse, split, values], checks)


def _unknown_currency(column: str) -> Check:
    unknown = pl.col(column).is_not_null() & ~pl.col(column).is_in(sorted(ISO_4217))
    return unknown, _error(
        Reason.UNKNOWN_CURRENCY, column, _quoted(column), " is not an ISO 4217 currency"
    )


def _amount_parts(column: str) -> pl.Expr:
    return pl.col(column).str.strip_chars().str.extract_groups(_DECIMAL).alias(f"_{column}_parts")


def _amount_fields(column: str, currency: str) -> list[pl.Expr]:
    """Sign, whole digits, significant fraction digits and the currency's exponent."""
    parts = pl.col(f"_{column}_parts")
    return [
        (parts.struct.field("sign") == "-").alias(f"_{column}_negative"),
        parts.struct.field("whole").alias(f"_{column}_whole"),
        parts.struct.field("frac").fill_null("").str.strip_chars_end("0").alias(f"_{column}_frac"),
        pl.col(currency)
        .replace_strict(_EXPONENTS, default=None, return_dtype=pl.Int64)
        .alias(f"_{column}_exp"),
    ]


def _amount_value(column: str) -> pl.Expr:
    """Minor units: whole * 10**exp + the fraction padded to thousandths, scaled down."""
    exp = pl.col(f"_{column}_exp")
    scale = exp.replace_strict(_SCALE, default=None, return_dtype=pl.Int64)
    divisor = exp.replace_strict(_DIVISOR, default=None, return_dtype=pl.Int64)
    thousandths = pl.col(f"_{column}_frac").str.slice(0, 3).str.pad_end(3, "0")
    whole = pl.col(f"_{column}_whole").str.slice(0, MAX_WHOLE_DIGITS).cast(pl.Int64)
    magnitude = whole * scale + thousandths.cast(pl.Int64, strict=False) // divisor
    negative = pl.col(f"_{column}_negative")
    return pl.when(negative).then(-magnitude).otherwise(magnitude).alias(f"_minor_{column}")


def _amount_checks(column: str, currency: str, *, required: bool) -> list[Check]:
    present = pl.col(column).is_not_null()
    whole, frac, exp = (pl.col(f"_{column}_{part}") for part in ("whole", "frac", "exp"))
    checks = [_empty(column)] if required else []
    checks += [
        (
            present & whole.is_null(),
            _error(Reason.WRONG_TYPE, column, _quoted(column), " is not a decimal number"),
        ),
        (
            present & (whole.str.len_chars() > MAX_WHOLE_DIGITS),
            _error(Reason.AMOUNT_OUT_OF_RANGE, column, _quoted(column), " is out of range"),
        ),
        (
            present & exp.is_not_null() & (frac.str.len_chars() > exp),
            _error(
                Reason.NON_INTEGER_AMOUNT,
                column,
                _quoted(column),
                " has more than ",
                exp.cast(pl.String),
                " decimals for ",
                pl.col(currency).str.to_uppercase(),
            ),
        ),
    ]
    return checks


def _time(column: str, timezone: str, dtype: pl.DataType) -> pl.Expr:
    """UTC microseconds from Stripe's ``2026-11-20 13:45:01`` (or RFC 3339, or a date), or
    from a Parquet timestamp; null when unparseable."""
    if isinstance(dtype, pl.Datetime):
        parsed = pl.col(column).dt.cast_time_unit("us")
        if dtype.time_zone is not None:
            return parsed.dt.convert_time_zone("UTC")
    else:
        text = pl.col(column).str.strip_chars().str.replace("T", " ", literal=True)
        text = text.str.strip_suffix("Z").str.strip_suffix("+00:00")
        text = pl.when(text.str.len_chars() == 10).then(text + " 00:00:00").otherwise(text)
        parsed = text.str.to_datetime(_TIME_FORMAT, time_unit="us", strict=False)
    if timezone == "UTC":
        return parsed.dt.replace_time_zone("UTC")
    local = parsed.dt.replace_time_zone(timezone, ambiguous="null", non_existent="null")
    return local.dt.convert_time_zone("UTC")


# Balance transactions happen after the Unix epoch; the last instant an RFC 3339 time (a
# four-digit year) can name is the other bound. Polars parses year 0, which Python (and so
# every consumer of the rows) has no datetime for. The ledger's bounds, the same.
_EARLIEST, _LATEST = EARLIEST, LATEST


def _time_checks(column: str, timezone: str, alias: str, required: bool) -> list[Check]:
    checks = [_empty(column)] if required else []
    bad = pl.col(column).is_not_null() & pl.col(alias).is_null()
    example = f" is not a time like 2026-11-20 13:45:01 ({timezone})"
    checks.append((bad, _error(Reason.BAD_TIMESTAMP, column, _quoted(column), example)))
    outside = pl.col(alias).is_not_null() & ~pl.col(alias).is_between(_EARLIEST, _LATEST)
    between = " is not between 1970-01-01 and 9999-12-31 (UTC)"
    checks.append((outside, _error(Reason.BAD_TIMESTAMP, column, _quoted(column), between)))
    return checks
