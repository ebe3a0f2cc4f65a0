"""Steps every launcher of a bounded Beam job takes around its pipeline (reconcile, telemetry)."""

from __future__ import annotations

import shutil

from apache_beam.io.filesystems import FileSystems

from pipelines.options import UsageError
from transforms.warehouse import open_warehouse


def check_warehouse(url: str) -> None:
    """Fail fast on a bad or unreachable warehouse, before reading anything."""
    try:
        warehouse = open_warehouse(url)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    warehouse.close()


def clear_staging(root: str) -> None:
    """A rerun starts from an empty staging folder (a killed run may have left files); a run
    that loaded and committed leaves none behind."""
    if "://" in root:
        if FileSystems.exists(root):
            FileSystems.delete([root])
    else:
        shutil.rmtree(root, ignore_errors=True)
