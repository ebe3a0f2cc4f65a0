"""Where the BigQuery sink's settings come from.

The URL names the place, ``bigquery://project/dataset`` with an optional ``?location=EU``
(where a missing dataset is created and jobs run). Credentials never come from the URL: the
client finds Application Default Credentials (``gcloud auth application-default login``,
``GOOGLE_APPLICATION_CREDENTIALS``, or the metadata server on GCP). When
``BIGQUERY_EMULATOR_HOST`` is set (the client library's own setting), the client talks to
that endpoint without credentials, as emulators and the tests' fake expect.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple
from urllib.parse import parse_qs, urlparse

from google.auth.credentials import AnonymousCredentials
from google.auth.exceptions import DefaultCredentialsError
from google.cloud import bigquery

from transforms.warehouse.base import redact

USAGE = "bigquery://project/dataset[?location=EU]"
_DATASET = re.compile(r"[A-Za-z0-9_]{1,1024}")
_QUERY_KEYS = ("location",)


class BigQueryPlace(NamedTuple):
    project: str
    dataset: str
    location: str | None


def parse_url(url: str) -> BigQueryPlace:
    """The project, dataset and location of ``url``; ValueError (without credentials)
    saying what is expected."""
    parts = urlparse(url)
    if parts.username or parts.password:
        raise ValueError(
            f"--warehouse {redact(url)!r}: BigQuery takes no credentials in the URL; they come "
            "from Application Default Credentials (gcloud auth application-default login, "
            "or GOOGLE_APPLICATION_CREDENTIALS)"
        )
    dataset = parts.path.strip("/")
    if not parts.netloc or not _DATASET.fullmatch(dataset):
        raise ValueError(f"--warehouse {redact(url)!r}: expected {USAGE}")
    params = parse_qs(parts.query)
    unknown = sorted(set(params) - set(_QUERY_KEYS))
    if unknown:
        raise ValueError(
            f"--warehouse {redact(url)!r}: unknown parameters {unknown}; "
            f"allowed: {', '.join(_QUERY_KEYS)}"
        )
    location = params["location"][-1] if "location" in params else None
    return BigQueryPlace(parts.netloc, dataset, location)


def default_client(project: str, location: str | None) -> bigquery.Client:
    """A client with Application Default Credentials (anonymous against an emulator)."""
    anonymous = AnonymousCredentials() if os.environ.get("BIGQUERY_EMULATOR_HOST") else None
    try:
        return bigquery.Client(project=project, location=location, credentials=anonymous)
    except DefaultCredentialsError:
        raise ValueError(
            f"--warehouse bigquery://{project}/...: no Google credentials found; run "
            "`gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS"
        ) from None
