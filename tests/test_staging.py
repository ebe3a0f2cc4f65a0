"""Staged outputs: a retried or repeated write of the same rows never adds a copy."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
from apache_beam.testing.test_pipeline import TestPipeline

from transforms.staging import StageTables, read_staged, staged_files

SCHEMA = pa.schema([pa.field("id", pa.string()), pa.field("n", pa.int64())])


def batches():
    return [
        pa.table({"id": ["a", "b"], "n": [1, 2]}, schema=SCHEMA),
        pa.table({"id": ["c"], "n": [3]}, schema=SCHEMA),
    ]


def test_staging_the_same_batches_twice_keeps_one_file_per_batch(tmp_path):
    for _ in range(2):
        with TestPipeline() as p:
            _ = p | beam.Create(batches()) | StageTables(str(tmp_path), "items", SCHEMA)
    assert len(staged_files(str(tmp_path), "items")) == 2
    rows = read_staged(str(tmp_path), "items", SCHEMA).to_pylist()
    assert sorted(r["id"] for r in rows) == ["a", "b", "c"]


def test_a_table_with_no_rows_has_no_staged_files(tmp_path):
    assert staged_files(str(tmp_path), "nothing") == []
    assert read_staged(str(tmp_path), "nothing", SCHEMA).num_rows == 0
