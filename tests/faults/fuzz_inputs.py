"""Hypothesis strategies for the fuzz tests: junk JSON, mutated valid messages, and a count
of the inputs each test fed to the code under test.

Inputs are of three kinds, mixed in every test:

- arbitrary bytes;
- a valid message mutated byte by byte (a bit flipped, bytes inserted, deleted, duplicated,
  the tail cut off);
- a valid message mutated field by field (a value replaced by one of the wrong type, a huge
  number, odd unicode or nested junk; a field deleted; an unknown one added), then encoded
  as JSON, sometimes with lone surrogates written as raw bytes (invalid UTF-8).

``HYPOTHESIS_PROFILE=faults`` (``make faults``) multiplies the number of examples and draws new
ones every run; the default profile keeps ``make test`` fast and repeatable. :func:`fuzz_settings`
gives each test both budgets.
"""

from __future__ import annotations

import copy
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FAST_PROFILE = "payrecon-fast"
FAULTS_PROFILE = "faults"
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", FAST_PROFILE)

_COMMON: dict[str, Any] = {
    "deadline": None,  # the first example pays for imports and broker connections
    "database": None,  # no .hypothesis/ in the work tree; a failure prints its example
    "print_blob": True,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # fixtures here are shared on purpose
    ],
}
# make test draws the same examples every run (a failure there is reproducible); make faults
# draws new ones each time, to find what those do not.
settings.register_profile(FAST_PROFILE, max_examples=100, derandomize=True, **_COMMON)
settings.register_profile(FAULTS_PROFILE, max_examples=2000, **_COMMON)
settings.load_profile(PROFILE if PROFILE in (FAST_PROFILE, FAULTS_PROFILE) else FAST_PROFILE)

# Inputs fed to the code under test, per test (reported at the end of the session).
FUZZED: Counter[str] = Counter()


def fuzz_settings(fast: int, faults: int) -> settings:
    """``max_examples`` for this test: ``fast`` in ``make test``, ``faults`` in ``make faults``."""
    return settings(max_examples=faults if PROFILE == FAULTS_PROFILE else fast)


def count(test: str, inputs: int = 1) -> None:
    FUZZED[test] += inputs


# -- junk values --------------------------------------------------------------------------------

ODD_CHARACTERS = [
    "\x00",
    "\x1f",
    "\x7f",
    "\n",
    "\r",
    "\t",
    " ",
    '"',
    "\\",
    ",",
    "é",
    "\u0663",  # ARABIC-INDIC DIGIT THREE: a digit to \d, not to int()
    "\uff11",  # FULLWIDTH DIGIT ONE
    "\U0001d7d9",  # MATHEMATICAL DOUBLE-STRUCK DIGIT ONE
    "\u202e",  # RIGHT-TO-LEFT OVERRIDE
    "\u2028",  # LINE SEPARATOR
    "\ufeff",  # BYTE ORDER MARK
    "\ufffd",
    "\U0001f4b8",
    "\ud800",  # lone surrogates: valid as a JSON escape, not as UTF-8
    "\udfff",
]
LOOKALIKES = [
    "",
    " ",
    "null",
    "NaN",
    "-0",
    "0x10",
    "1e3",
    "1,000.00",
    "12.345",
    " 12.50 ",
    "-0.001",
    "\u0663\u0660\u0660",
    "\uff11\uff10\uff10",
    "9" * 40,
    "USD",
    "usd\n",
    "US\n",
    "2026-11-20T10:00:00Z\n",
    "2026-02-30T10:00:00Z",
    "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59-23:59",
    "2026-11-20 24:00:00",
    "10000-01-01 00:00:00",
    "evt_",
    "ch_" + "x" * 300,
]
HUGE_NUMBERS = [
    2**31,
    -(2**31) - 1,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**63) - 1,
    10**30,
    10**400,
    253402300799,  # 9999-12-31T23:59:59Z in Unix seconds
    253402300800,
    -1,
    0,
]

odd_text = st.one_of(
    st.text(max_size=24),
    st.lists(st.sampled_from(ODD_CHARACTERS) | st.text(max_size=3), max_size=10).map("".join),
    st.sampled_from(LOOKALIKES),
)
numbers = st.one_of(
    st.sampled_from(HUGE_NUMBERS),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, odd_text)
json_junk = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
    max_leaves=12,
)


def extreme_like(value: Any) -> st.SearchStrategy[Any]:
    """A value of about the same kind as ``value``, at its edges: a huge or negative number
    for a number, odd unicode or a look-alike for a string, junk for anything else."""
    if isinstance(value, bool):
        return st.sampled_from([0, 1, "true", None, [True]])
    if isinstance(value, int | float):
        return st.sampled_from(HUGE_NUMBERS) | numbers | st.sampled_from([str(value), None])
    if isinstance(value, str):
        return odd_text | st.builds(lambda t: value + t, odd_text)
    return json_junk


def to_json_bytes(value: Any, *, ascii_only: bool, indent: int | None) -> bytes:
    """JSON text (NaN and Infinity included, as Python writes them); with ``ascii_only``
    False, lone surrogates are written as raw bytes, which is invalid UTF-8."""
    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    return text.encode("utf-8", "surrogatepass")


def encoded(value: Any) -> st.SearchStrategy[bytes]:
    return st.builds(
        lambda a, i: to_json_bytes(value, ascii_only=a, indent=i),
        st.booleans(),
        st.sampled_from([None, None, 2]),
    )


# -- mutations ----------------------------------------------------------------------------------

Path = tuple[str | int, ...]


def paths(value: Any, prefix: Path = ()) -> Iterator[Path]:
    """Every path to a value inside ``value`` (the root included)."""
    yield prefix
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from paths(inner, (*prefix, i))


def _parent(root: Any, path: Path) -> Any:
    for step in path[:-1]:
        root = root[step]
    return root


@st.composite
def mutated(draw: st.DrawFn, base: Any, max_mutations: int = 3) -> Any:
    """``base`` with one to ``max_mutations`` fields replaced, deleted or added."""
    value = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, max_mutations))):
        found = list(paths(value))
        # The root is replaced rarely: most inputs should get past the first check.
        path = draw(st.sampled_from(found[1:] or found))
        op = draw(st.sampled_from(["replace", "extreme", "extreme", "delete", "add"]))
        if not path:
            value = draw(json_junk)
            continue
        parent, last = _parent(value, path), path[-1]
        if op == "replace":
            parent[last] = draw(json_junk)
        elif op == "extreme":
            parent[last] = draw(extreme_like(parent[last]))
        elif op == "delete":
            del parent[last]
        elif isinstance(parent[last], dict):
            parent[last][draw(odd_text)] = draw(json_junk)
        elif isinstance(parent[last], list):
            parent[last].append(draw(json_junk))
        else:
            parent[last] = draw(st.sampled_from([[parent[last]], {"value": parent[last]}]))
    return value


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes, max_mutations: int = 4) -> bytes:
    """``data`` with bits flipped, bytes inserted, deleted or duplicated, or cut short."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, max_mutations))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "truncate"]))
        at = draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            buf[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del buf[at : at + draw(st.integers(1, 8))]
        elif op == "duplicate":
            buf[at:at] = buf[at : at + draw(st.integers(1, 16))]
        else:
            del buf[at:]
    return bytes(buf)


def message_values(
    valid: list[Any] | st.SearchStrategy[Any], *, encode: Callable[[Any], bytes] | None = None
) -> st.SearchStrategy[bytes]:
    """Message values: valid ones (drawn from ``valid``), mutated ones (by field and by
    byte), junk and bytes."""
    encode = encode or (lambda v: to_json_bytes(v, ascii_only=True, indent=None))
    base = valid if isinstance(valid, st.SearchStrategy) else st.sampled_from(valid)
    return st.one_of(
        base.map(encode),
        base.flatmap(mutated).flatmap(encoded),
        base.map(encode).flatmap(mutated_bytes),
        json_junk.flatmap(encoded),
        st.binary(max_size=256),
    )
