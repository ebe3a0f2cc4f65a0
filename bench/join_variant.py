"""The ``join`` variant of bench/reconcile.py: the job's join and classification alone.

It starts from the same decoded Parquet files as the ``naive`` variant and ends, like it,
with the discrepancies and matches written out, so the two compare like for like:
``MatchAndClassify`` (Arrow batches, 16 hash buckets, polars per bucket) against one dict
per row, ``CoGroupByKey`` and a per-key Python classification. This is the part of the job
that issue 4's "10x faster than a naive CoGroupByKey pipeline" is about; the Kafka read, the
decode and the warehouse load cost both designs the same.
"""

from __future__ import annotations

import time
from pathlib import Path


def run_join(work: Path, config, buckets: int = 16) -> dict:
    t = time.perf_counter()
    import apache_beam as beam
    import pyarrow as pa
    import pyarrow.parquet as pq
    from apache_beam.options.pipeline_options import PipelineOptions

    from schemas.discrepancy import DISCREPANCY_V1
    from schemas.match import RECON_MATCH_V1
    from transforms.match import MatchAndClassify
    from transforms.staging import StageTables, staged_files

    imports = time.perf_counter() - t
    src, out = work / "naive-input", str(work / "join-output")
    started = time.perf_counter()
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"]))

    def read(name: str):
        # One pa.Table per Parquet row group, as the job's readers hand over batches.
        return pipeline | f"Read_{name}" >> beam.io.ReadFromParquetBatched(
            str(src / f"{name}-*.parquet")
        )

    found = (read("ledger"), read("stripe")) | "MatchAndClassify" >> MatchAndClassify(
        config, buckets=buckets
    )
    _ = found.discrepancies | "StageDiscrepancies" >> StageTables(
        out, "discrepancies", DISCREPANCY_V1
    )
    _ = found.matches | "StageMatches" >> StageTables(out, "matches", RECON_MATCH_V1)
    pipeline.run().wait_until_finish()
    seconds = time.perf_counter() - started
    discrepancies = pa.concat_tables(
        [DISCREPANCY_V1.empty_table()]
        + [pq.read_table(p) for p in staged_files(out, "discrepancies")]
    )
    matches = sum(pq.read_metadata(p).num_rows for p in staged_files(out, "matches"))
    return {
        "import_seconds": imports,
        "work_seconds": seconds,
        "discrepancies": discrepancies.num_rows,
        "matches": matches,
        "found": discrepancies.select(["kind", "order_id", "stripe_object_id"]).to_pylist(),
    }
