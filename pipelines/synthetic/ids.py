"""Identifiers that look like the real ones and never collide within a generated day.

Stripe ids (``ch_3MoS30LgUG5tbmjc…``) are 24 base-62 characters after the prefix: a version
digit, six characters that grow with the creation time, ten characters naming the account,
then seven more. Here the last seven are a bijection of a per-prefix counter, so ids are
unique by construction, deterministic for a seed, and do not look sequential.
Order ids are ULIDs (time-sortable); idempotency keys and event ids are UUID v4, as
Stripe recommends for idempotency keys.
"""

from __future__ import annotations

import hashlib
import string

import numpy as np

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_PAIRS62 = [a + b for a in BASE62 for b in BASE62]
_SPACE7 = 62**7
# Odd and not a multiple of 31: coprime with 62**7, so seq -> seq * M + salt is a bijection.
_MULTIPLIER = 2_654_435_761

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS32 = [a + b for a in CROCKFORD for b in CROCKFORD]

ACCOUNT_TAG = "QvSzZ2eZvK"  # the merchant account's part of every Stripe id
_VERSIONS = {"ch": "3", "pi": "3", "re": "3", "txn": "3", "dp": "1"}
_BLOCK = 8192
SPACE_SIZE = 2**37  # ids per prefix per id space (1.4e11)
MAX_SPACES = _SPACE7 // SPACE_SIZE  # 25


def _salt(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % _SPACE7


def _base62_7(x: int) -> str:
    x, r1 = divmod(x, 3844)
    x, r2 = divmod(x, 3844)
    x, r3 = divmod(x, 3844)
    return BASE62[x] + _PAIRS62[r3] + _PAIRS62[r2] + _PAIRS62[r1]


def _base62_6(x: int) -> str:
    x, r1 = divmod(x, 3844)
    x, r2 = divmod(x, 3844)
    return _PAIRS62[x % 3844] + _PAIRS62[r2] + _PAIRS62[r1]


class _Tails:
    """The 7-character tails of one prefix, a bijection of its counter, made in blocks.

    Counters start at ``space * SPACE_SIZE``, so generators working in different spaces
    (the parallel chunks of a day) never mint the same id.
    """

    def __init__(self, salt: int, space: int):
        self._salt = salt
        self._next_seq = space * SPACE_SIZE
        self._block: list[str] = []

    def take(self) -> str:
        if not self._block:
            seqs = np.arange(self._next_seq, self._next_seq + _BLOCK, dtype=np.int64)
            self._next_seq += _BLOCK
            self._block = _text62(_scramble(seqs, self._salt))
            self._block.reverse()
        return self._block.pop()


def _digits62(values: np.ndarray, width: int) -> np.ndarray:
    digits = np.empty((len(values), width), dtype=np.int64)
    rest = values.copy()
    for col in range(width - 1, -1, -1):
        rest, digits[:, col] = np.divmod(rest, 62)
    return digits


def _scramble(seqs: np.ndarray, salt: int) -> np.ndarray:
    """Base-62 digits of a bijection of [0, 62**7): an affine map, then running sums of
    the digits in both directions (each invertible mod 62), so every digit depends on
    every other and consecutive counters give unrelated-looking tails."""
    digits = _digits62((seqs * _MULTIPLIER + salt) % _SPACE7, 7)
    digits = np.cumsum(digits, axis=1) % 62
    return np.cumsum(digits[:, ::-1], axis=1)[:, ::-1] % 62


def _text62(digits: np.ndarray) -> list[str]:
    letters = np.frombuffer(BASE62.encode(), dtype=np.uint8)
    chars = np.ascontiguousarray(letters[digits])
    return [b.decode() for b in chars.view(f"S{digits.shape[1]}").ravel().tolist()]


class StripeIds:
    """Mints ``ch_``, ``pi_``, ``re_``, ``dp_``, ``txn_`` and ``cus_`` ids."""

    def __init__(self, seed: int, space: int = 0):
        if not 0 <= space < MAX_SPACES:
            raise ValueError(f"id space {space} outside [0, {MAX_SPACES})")
        self._seed = seed
        self._space = space
        self._tails: dict[str, _Tails] = {}
        self._heads: dict[tuple[str, int], str] = {}
        self._customers: dict[int, str] = {}
        self._customer_salts = (_salt(seed, "cus"), _salt(seed, "cus2"))

    def new(self, prefix: str, created_s: int) -> str:
        tails = self._tails.get(prefix)
        if tails is None:
            tails = self._tails[prefix] = _Tails(_salt(self._seed, prefix), self._space)
        head = self._heads.get((prefix, created_s))
        if head is None:
            if len(self._heads) > 8192:
                self._heads.clear()
            version = _VERSIONS.get(prefix, "1")
            head = f"{prefix}_{version}{_base62_6(created_s)}{ACCOUNT_TAG}"
            self._heads[(prefix, created_s)] = head
        return head + tails.take()

    def customer(self, index: int) -> str:
        """The customer with this index (same index, same id): ``cus_`` + 14 characters."""
        known = self._customers.get(index)
        if known is None:
            a = _base62_7((index * _MULTIPLIER + self._customer_salts[0]) % _SPACE7)
            b = _base62_7((index * 3_141_592_653 + self._customer_salts[1]) % _SPACE7)
            known = self._customers[index] = f"cus_{a}{b}"
        return known


class Tokens:
    """Random UUID v4 strings and 16-character Crockford tokens from a seeded numpy
    generator, made a block at a time with vectorised numpy (per-item Python is slow)."""

    def __init__(self, rng: np.random.Generator):
        self._rng = rng
        self._uuids: list[str] = []
        self._crockford: list[str] = []

    def uuid4(self) -> str:
        if not self._uuids:
            self._uuids = _uuid_block(self._rng, _BLOCK)
        return self._uuids.pop()

    def crockford16(self) -> str:
        if not self._crockford:
            self._crockford = _token_block(self._rng, _BLOCK, CROCKFORD, 16)
        return self._crockford.pop()


def _token_block(rng: np.random.Generator, n: int, alphabet: str, width: int) -> list[str]:
    letters = np.frombuffer(alphabet.encode(), dtype=np.uint8)
    chars = letters[rng.integers(0, len(alphabet), (n, width))]
    return [b.decode() for b in np.ascontiguousarray(chars).view(f"S{width}").ravel().tolist()]


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
# Positions of the 32 hex digits in the 36-character text; the rest are dashes.
_HEX_AT = [i for i in range(36) if i not in (8, 13, 18, 23)]


def _uuid_block(rng: np.random.Generator, n: int) -> list[str]:
    nibbles = rng.integers(0, 16, (n, 32), dtype=np.uint8)
    nibbles[:, 12] = 4  # version 4
    nibbles[:, 16] = 8 | (nibbles[:, 16] & 3)  # RFC 4122 variant
    text = np.full((n, 36), ord("-"), dtype=np.uint8)
    text[:, _HEX_AT] = _HEX[nibbles]
    return [b.decode() for b in text.view("S36").ravel().tolist()]


def ulid(ms: int, tokens: Tokens) -> str:
    """A ULID: 10 characters of millisecond time, 16 of randomness (Crockford base 32)."""
    p = _PAIRS32
    return (
        p[(ms >> 40) & 1023]
        + p[(ms >> 30) & 1023]
        + p[(ms >> 20) & 1023]
        + p[(ms >> 10) & 1023]
        + p[ms & 1023]
        + tokens.crockford16()
    )


def order_id(ms: int, tokens: Tokens) -> str:
    return f"ord_{ulid(ms, tokens)}"
