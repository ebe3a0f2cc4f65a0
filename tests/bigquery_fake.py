"""A local fake of the BigQuery REST API: exactly the endpoints payrecon's sink uses.

No BigQuery emulator runs here, so tests point the real ``google.cloud.bigquery.Client`` at
this threaded ``http.server`` (``BigQueryFake.client()``, or ``BIGQUERY_EMULATOR_HOST``).
It records every request (method, path, query, headers, JSON body, upload payload) and keeps
real state: datasets and tables as BigQuery resources, their rows in DuckDB
(``tests/bigquery_fake_engine.py``), load jobs that read the uploaded Parquet, query jobs and
transaction scripts that run on DuckDB. Any other endpoint answers 501, so a test notices
when the sink starts using one the fake does not know.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pyarrow as pa
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import bigquery

from tests.bigquery_fake_engine import LEGACY, Engine, JobFailed, encode_row, result_schema

_API = "/bigquery/v2/projects/(?P<p>[^/]+)"


@dataclass
class Recorded:
    method: str
    path: str
    params: dict[str, str]
    headers: Message  # case-insensitive, as HTTP headers are
    body: Any = None  # the JSON body, when there is one
    payload: bytes | None = None  # the data part of an upload


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


@dataclass
class _Job:
    resource: dict[str, Any]
    rows: pa.Table | None = None


@dataclass
class _State:
    datasets: dict[str, dict] = field(default_factory=dict)
    tables: dict[tuple[str, str], dict] = field(default_factory=dict)
    jobs: dict[str, _Job] = field(default_factory=dict)
    uploads: dict[str, dict] = field(default_factory=dict)


class BigQueryFake:
    """``with BigQueryFake() as fake: client = fake.client()``; stops its server on exit."""

    def __init__(self, project: str = "proj"):
        self.project = project
        self.engine = Engine(project)
        self.state = _State()
        self.requests: list[Recorded] = []
        self.errors: list[Exception] = []  # the fake's own crashes, for tests to check
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Any]]] = [
            ("GET", re.compile(_API + "/datasets/(?P<d>[^/]+)"), self._get_dataset),
            ("POST", re.compile(_API + "/datasets"), self._insert_dataset),
            (
                "GET",
                re.compile(_API + "/datasets/(?P<d>[^/]+)/tables/(?P<t>[^/]+)"),
                self._get_table,
            ),
            ("POST", re.compile(_API + "/datasets/(?P<d>[^/]+)/tables"), self._insert_table),
            (
                "PATCH",
                re.compile(_API + "/datasets/(?P<d>[^/]+)/tables/(?P<t>[^/]+)"),
                self._patch_table,
            ),
            (
                "DELETE",
                re.compile(_API + "/datasets/(?P<d>[^/]+)/tables/(?P<t>[^/]+)"),
                self._delete_table,
            ),
            ("POST", re.compile(_API + "/jobs"), self._insert_query_job),
            ("GET", re.compile(_API + "/jobs/(?P<j>[^/]+)"), self._get_job),
            ("GET", re.compile(_API + "/queries/(?P<j>[^/]+)"), self._query_results),
            ("POST", re.compile("/upload" + _API + "/jobs"), self._start_upload),
            ("PUT", re.compile("/upload" + _API + "/jobs"), self._continue_upload),
        ]

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> BigQueryFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self)

            do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> BigQueryFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def client(self, credentials: Credentials | None = None) -> bigquery.Client:
        return bigquery.Client(
            project=self.project,
            credentials=credentials or AnonymousCredentials(),
            client_options={"api_endpoint": self.endpoint},
        )

    # -- what tests look at ---------------------------------------------------------------

    def table_names(self, dataset: str) -> list[str]:
        return sorted(t for d, t in self.state.tables if d == dataset)

    def table_resource(self, dataset: str, table: str) -> dict:
        return self.state.tables[(dataset, table)]

    def rows(self, dataset: str, table: str) -> list[dict]:
        return self.engine.rows(dataset, table).to_pylist()

    def requests_to(self, method: str, pattern: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    def knows(self, request: Recorded) -> bool:
        """True when ``request`` went to an endpoint the fake implements."""
        return any(m == request.method and p.fullmatch(request.path) for m, p, _ in self._routes)

    # -- HTTP plumbing --------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlparse(handler.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        record = Recorded(handler.command, url.path, params, handler.headers)
        content_type = handler.headers.get("Content-Type", "")
        if raw and content_type.startswith("application/json"):
            record.body = json.loads(raw)
        self.requests.append(record)
        for method, pattern, action in self._routes:
            match = pattern.fullmatch(url.path)
            if method == handler.command and match:
                try:
                    status, body, headers = action(record, raw, **match.groupdict())
                except ApiError as exc:
                    status, body, headers = exc.code, _error(exc), {}
                except JobFailed as exc:  # a DDL the fake cannot type, for example
                    status, body, headers = 400, _error(ApiError(400, exc.reason, exc.message)), {}
                except Exception as exc:  # a bug in the fake: answer, never retried
                    self.errors.append(exc)
                    message = f"fake crashed: {type(exc).__name__}: {exc}"
                    status, body, headers = (
                        501,
                        _error(ApiError(501, "notImplemented", message)),
                        {},
                    )
                break
        else:
            status, headers = 501, {}
            body = _error(ApiError(501, "notImplemented", f"fake: no {handler.command} {url.path}"))
        data = b"" if body is None else json.dumps(body).encode()
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Type", "application/json; charset=UTF-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    # -- datasets and tables --------------------------------------------------------------

    def _get_dataset(self, record: Recorded, raw: bytes, p: str, d: str) -> tuple:
        self._check_project(p)
        if d not in self.state.datasets:
            raise ApiError(404, "notFound", f"Not found: Dataset {p}:{d}")
        return 200, self.state.datasets[d], {}

    def _insert_dataset(self, record: Recorded, raw: bytes, p: str) -> tuple:
        self._check_project(p)
        resource = dict(record.body)
        d = resource["datasetReference"]["datasetId"]
        if d in self.state.datasets:
            raise ApiError(409, "duplicate", f"Already Exists: Dataset {p}:{d}")
        resource.setdefault("location", "US")
        resource.update(id=f"{p}:{d}", etag=uuid.uuid4().hex)
        self.engine.create_dataset(d)
        self.state.datasets[d] = resource
        return 200, resource, {}

    def _table(self, p: str, d: str, t: str) -> dict:
        self._check_project(p)
        if (d, t) not in self.state.tables:
            raise ApiError(404, "notFound", f"Not found: Table {p}:{d}.{t}")
        return self.state.tables[(d, t)]

    def _get_table(self, record: Recorded, raw: bytes, p: str, d: str, t: str) -> tuple:
        return 200, self._table(p, d, t), {}

    def _insert_table(self, record: Recorded, raw: bytes, p: str, d: str) -> tuple:
        self._check_project(p)
        resource = json.loads(json.dumps(record.body))
        t = resource["tableReference"]["tableId"]
        if d not in self.state.datasets:
            raise ApiError(404, "notFound", f"Not found: Dataset {p}:{d}")
        if (d, t) in self.state.tables:
            raise ApiError(409, "duplicate", f"Already Exists: Table {p}:{d}.{t}")
        fields = resource["schema"]["fields"]
        _check_layout(resource, fields)
        self.engine.create_table(d, t, fields)
        resource["schema"]["fields"] = [_as_returned(f) for f in fields]
        resource.update(id=f"{p}:{d}.{t}", etag=uuid.uuid4().hex, type="TABLE")
        resource["creationTime"] = str(int(time.time() * 1000))
        self.state.tables[(d, t)] = resource
        return 200, resource, {}

    def _patch_table(self, record: Recorded, raw: bytes, p: str, d: str, t: str) -> tuple:
        resource = self._table(p, d, t)
        if record.headers.get("If-Match", resource["etag"]) != resource["etag"]:
            raise ApiError(412, "conditionNotMet", "Precondition check failed.")
        if "schema" in record.body:
            self._change_schema(d, t, resource, record.body["schema"]["fields"])
        for key, value in record.body.items():
            if key != "schema":
                resource[key] = value
        resource["etag"] = uuid.uuid4().hex
        return 200, resource, {}

    def _change_schema(self, d: str, t: str, resource: dict, fields: list[dict]) -> None:
        """BigQuery's rules: keep every column and its type; new columns NULLABLE (or
        REPEATED); a REQUIRED column may become NULLABLE, not the reverse."""
        old = {f["name"]: f for f in resource["schema"]["fields"]}
        new = {f["name"]: _as_returned(f) for f in fields}
        for name, before in old.items():
            after = new.get(name)
            if after is None:
                raise ApiError(
                    400, "invalid", f"Provided Schema does not match Table: {name} missing"
                )
            if _strip_modes(before) != _strip_modes(after) or (
                before["mode"] != "REQUIRED" and after["mode"] == "REQUIRED"
            ):
                raise ApiError(
                    400, "invalid", f"Provided Schema does not match Table: {name} changed"
                )
        for name, after in new.items():
            if name not in old:
                if after["mode"] == "REQUIRED":
                    raise ApiError(400, "invalid", f"Cannot add required field {name}")
                self.engine.add_column(d, t, after)
            elif old[name]["mode"] == "REQUIRED" and after["mode"] == "NULLABLE":
                self.engine.drop_not_null(d, t, name)
        resource["schema"]["fields"] = list(new.values())

    def _delete_table(self, record: Recorded, raw: bytes, p: str, d: str, t: str) -> tuple:
        self._table(p, d, t)
        self.engine.drop_table(d, t)
        del self.state.tables[(d, t)]
        return 204, None, {}

    def _check_project(self, p: str) -> None:
        if p != self.project:
            raise ApiError(403, "accessDenied", f"Access Denied: Project {p}")

    # -- jobs -----------------------------------------------------------------------------

    def _new_job(self, p: str, config: dict, reference: dict | None) -> dict:
        reference = dict(reference or {})
        reference.setdefault("jobId", uuid.uuid4().hex)
        reference.setdefault("location", "US")
        reference["projectId"] = p
        now = str(int(time.time() * 1000))
        return {
            "kind": "bigquery#job",
            "id": f"{p}:{reference['location']}.{reference['jobId']}",
            "jobReference": reference,
            "configuration": config,
            "status": {"state": "DONE"},
            "statistics": {"creationTime": now, "startTime": now, "endTime": now},
        }

    def _finish(self, resource: dict, failure: JobFailed | None) -> None:
        if failure is not None:
            error = {"reason": failure.reason, "message": failure.message}
            resource["status"] = {"state": "DONE", "errorResult": error, "errors": [error]}
        self.state.jobs[resource["jobReference"]["jobId"]] = _Job(resource)

    def _insert_query_job(self, record: Recorded, raw: bytes, p: str) -> tuple:
        self._check_project(p)
        config = record.body["configuration"]
        query = config.get("query")
        if query is None:
            raise ApiError(501, "notImplemented", "fake: only query jobs are inserted here")
        resource = self._new_job(p, config, record.body.get("jobReference"))
        if query.get("useLegacySql", True):
            self._finish(resource, JobFailed("invalidQuery", "fake: legacy SQL"))
            return 200, resource, {}
        default = query.get("defaultDataset", {}).get("datasetId")
        try:
            result = self.engine.run(query["query"], default)
        except JobFailed as exc:
            self._finish(resource, exc)
            return 200, resource, {}
        resource["statistics"]["query"] = {"statementType": result.statement_type}
        self._finish(resource, None)
        self.state.jobs[resource["jobReference"]["jobId"]].rows = result.table
        return 200, resource, {}

    def _get_job(self, record: Recorded, raw: bytes, p: str, j: str) -> tuple:
        self._check_project(p)
        if j not in self.state.jobs:
            raise ApiError(404, "notFound", f"Not found: Job {p}:{j}")
        return 200, self.state.jobs[j].resource, {}

    def _query_results(self, record: Recorded, raw: bytes, p: str, j: str) -> tuple:
        _, job, _ = self._get_job(record, raw, p, j)
        status = job["status"]
        if "errorResult" in status:
            error = status["errorResult"]
            raise ApiError(400, error["reason"], error["message"])
        rows = self.state.jobs[j].rows
        fields = result_schema(rows.schema) if rows is not None else []
        body: dict[str, Any] = {
            "kind": "bigquery#getQueryResultsResponse",
            "jobReference": job["jobReference"],
            "jobComplete": True,
            "schema": {"fields": fields},
            "totalRows": str(rows.num_rows if rows is not None else 0),
        }
        start = int(record.params.get("pageToken") or record.params.get("startIndex") or 0)
        size = int(record.params.get("maxResults") or 10_000)
        if rows is not None and size > 0:
            int64_ts = record.params.get("formatOptions.useInt64Timestamp", "").lower() == "true"
            page = rows.slice(start, size).to_pylist()
            body["rows"] = [encode_row(r, fields, int64_ts) for r in page]
            if start + size < rows.num_rows:
                body["pageToken"] = str(start + size)
        return 200, body, {}

    # -- load jobs: multipart and resumable uploads ----------------------------------------

    def _start_upload(self, record: Recorded, raw: bytes, p: str) -> tuple:
        self._check_project(p)
        kind = record.params.get("uploadType")
        if kind == "multipart":
            metadata, payload = _multipart(record.headers["Content-Type"], raw)
            record.body, record.payload = metadata, payload
            return 200, self._load(p, metadata, payload), {}
        if kind == "resumable":
            upload_id = uuid.uuid4().hex
            self.state.uploads[upload_id] = {"metadata": record.body, "data": bytearray()}
            location = f"{self.endpoint}{record.path}?uploadType=resumable&upload_id={upload_id}"
            return 200, None, {"Location": location}
        raise ApiError(400, "invalid", f"fake: uploadType {kind!r}")

    def _continue_upload(self, record: Recorded, raw: bytes, p: str) -> tuple:
        upload = self.state.uploads.get(record.params.get("upload_id", ""))
        if upload is None:
            raise ApiError(404, "notFound", "fake: unknown upload session")
        span = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", record.headers.get("Content-Range", ""))
        if span is None or int(span.group(1)) != len(upload["data"]):
            raise ApiError(400, "invalid", "fake: bad Content-Range")
        upload["data"].extend(raw)
        if span.group(3) == "*" or len(upload["data"]) < int(span.group(3)):
            return 308, None, {"Range": f"bytes=0-{len(upload['data']) - 1}"}
        record.body, record.payload = upload["metadata"], bytes(upload["data"])
        del self.state.uploads[record.params["upload_id"]]
        return 200, self._load(p, record.body, record.payload), {}

    def _load(self, p: str, metadata: dict, payload: bytes) -> dict:
        config = metadata["configuration"]
        load = config["load"]
        resource = self._new_job(p, config, metadata.get("jobReference"))
        try:
            if load.get("sourceFormat") != "PARQUET":
                raise JobFailed("invalid", "fake: only PARQUET loads")
            if load.get("createDisposition") != "CREATE_NEVER":
                raise JobFailed("invalid", "fake: loads into existing tables only")
            if load.get("writeDisposition") != "WRITE_APPEND":
                raise JobFailed("invalid", "fake: WRITE_APPEND loads only")
            dest = load["destinationTable"]
            key = (dest["datasetId"], dest["tableId"])
            if dest["projectId"] != self.project or key not in self.state.tables:
                raise JobFailed("notFound", f"Not found: Table {p}:{key[0]}.{key[1]}")
            fields = self.state.tables[key]["schema"]["fields"]
            count = self.engine.load_parquet(*key, fields, payload, load)
            resource["statistics"]["load"] = {"outputRows": str(count)}
            self._finish(resource, None)
        except JobFailed as exc:
            self._finish(resource, exc)
        return resource


def _multipart(content_type: str, raw: bytes) -> tuple[dict, bytes]:
    """The JSON metadata and the data of a ``multipart/related`` upload."""
    boundary = re.search(r'boundary="?([^";]+)"?', content_type)
    if boundary is None:
        raise ApiError(400, "invalid", "fake: multipart without boundary")
    parts = raw.split(b"--" + boundary.group(1).encode())
    bodies = [part.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n") for part in parts[1:-1]]
    return json.loads(bodies[0]), bodies[1]


def _check_layout(resource: dict, fields: list[dict]) -> None:
    """What BigQuery checks when a table is created: a partitioning column that is a
    top-level DATE, TIMESTAMP or DATETIME; at most four top-level clustering columns."""
    top = {f["name"]: f for f in fields}
    partitioning = resource.get("timePartitioning")
    if partitioning and "field" in partitioning:
        column = top.get(partitioning["field"])
        if column is None or column["type"] not in ("DATE", "TIMESTAMP", "DATETIME"):
            raise ApiError(400, "invalid", f"cannot partition by {partitioning['field']}")
        if column.get("mode") == "REPEATED":
            raise ApiError(400, "invalid", "cannot partition by a repeated column")
    clustering = resource.get("clustering", {}).get("fields", [])
    if len(clustering) > 4 or any(c not in top for c in clustering):
        raise ApiError(400, "invalid", f"bad clustering fields {clustering}")


def _as_returned(field: dict) -> dict:
    """A field as BigQuery returns it: legacy type names, explicit mode, numbers as strings."""
    out = dict(field)
    out["type"] = LEGACY.get(field["type"].upper(), field["type"].upper())
    out.setdefault("mode", "NULLABLE")
    for key in ("precision", "scale"):
        if key in out:
            out[key] = str(out[key])
    if out.get("description") is None:
        out.pop("description", None)
    if "fields" in out:
        out["fields"] = [_as_returned(f) for f in out["fields"]]
    return out


def _strip_modes(field: dict) -> dict:
    """The field without descriptions and REQUIRED/NULLABLE (REPEATED stays)."""
    out = {k: v for k, v in field.items() if k not in ("description", "mode")}
    out["repeated"] = field.get("mode") == "REPEATED"
    if "fields" in field:
        out["fields"] = [_strip_modes(f) for f in field["fields"]]
    return out


def _error(exc: ApiError) -> dict:
    return {
        "error": {
            "code": exc.code,
            "message": exc.message,
            "errors": [{"reason": exc.reason, "message": exc.message, "domain": "global"}],
        }
    }
