"""The join's shuffle through files, so the local runner's memory does not grow with the day.

Beam's local runner (FnApiRunner) keeps every GroupByKey's whole input in memory until the
next stage has read it. For the reconcile join that is the day's projected ledger and Stripe
rows: at 10M events it held gigabytes, however many buckets the join had. With a spill
directory, each batch's per-bucket sub-table is written to a file and only its path crosses
the GroupByKey; the stage that classifies a bucket reads its files back. The runner then
holds paths, and the working set is one batch on the way in and one bucket on the way out:
memory bounded by the bucket size, as on Dataflow or Flink, whose shuffle is on disk.

Files are Arrow IPC streams (zstd), named by a hash of their bytes under
``<spill>/<side>/<bucket>/``, so a retried bundle rewrites the same file rather than adding
one. Two identical sub-tables share a file and keep one path each, so their rows still count
twice, as they would through the shuffle. Any Beam filesystem works; the reconcile job
spills only on local runners, where there is no shuffle service to hand the bytes to.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.ipc as ipc
from apache_beam.io.filesystems import FileSystems

from transforms.staging import StagingUnwritable

_WRITE_OPTIONS = ipc.IpcWriteOptions(compression="zstd")


def spill_part(directory: str, side: str, bucket: int, table: pa.Table) -> str:
    """Writes one bucket's sub-table of a batch; its path."""
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema, options=_WRITE_OPTIONS) as writer:
        writer.write_table(table)
    data = sink.getvalue()
    name = hashlib.sha256(data).hexdigest()[:32] + ".arrow"
    path = FileSystems.join(directory, side, str(bucket), name)
    try:
        with FileSystems.create(path) as out:
            out.write(data)
    except OSError as exc:
        raise StagingUnwritable(
            f"cannot write the staging file {path} (the join's shuffle): {exc}"
        ) from exc
    return path


def read_part(part: pa.Table | str) -> pa.Table:
    """A sub-table that crossed the shuffle: itself, or the one spilled at its path."""
    if isinstance(part, pa.Table):
        return part
    with FileSystems.open(part) as f:
        return ipc.open_stream(f.read()).read_all()
