"""The contracts: every schema names its version and generates a valid JSON Schema."""

from __future__ import annotations

import jsonschema
import pytest

from schemas import REGISTRY
from schemas.currencies import exponent, to_major_units, to_minor_units
from schemas.fields import name_and_version
from schemas.jsonschema import json_schema


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_schema_has_a_version_and_a_valid_json_schema(name):
    schema = REGISTRY[name]
    assert name_and_version(schema) == (name, 1)
    generated = json_schema(schema)
    jsonschema.Draft202012Validator.check_schema(generated)
    assert set(generated["properties"]) == set(schema.names)


@pytest.mark.parametrize(
    ("major", "currency", "minor"),
    [
        ("12.34", "usd", 1234),
        ("1500", "jpy", 1500),
        ("5.124", "kwd", 5124),
        ("-0.01", "eur", -1),
        ("0", "krw", 0),
    ],
)
def test_major_units_convert_exactly_with_each_currency_exponent(major, currency, minor):
    assert to_minor_units(major, currency) == minor
    assert to_major_units(minor, currency) == to_major_units(
        to_minor_units(major, currency), currency
    )
    assert str(to_major_units(minor, currency)).lstrip("-").count(".") == (
        1 if exponent(currency) else 0
    )


def test_more_decimals_than_the_currency_has_is_refused_not_rounded():
    with pytest.raises(ValueError, match="JPY"):
        to_minor_units("10.5", "jpy")
    with pytest.raises(ValueError, match="unknown"):
        to_minor_units("1", "xyz")
