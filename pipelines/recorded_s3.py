"""The local S3 server behind the embedded broker's durable mode, and its recording.

Tansu (as bundled) stores its log only in memory or in S3. Durable mode serves S3 with moto,
whose request recorder writes every request to a file in the durable directory *before*
answering it; the next start replays the recording into a fresh moto before Tansu starts.
Tansu acknowledges a produce only after its S3 writes returned, so every acknowledged message
is in the recording and survives ``kill -9`` of any process (the kernel keeps what was
written; nothing here fsyncs, so a power loss may lose the newest writes).

moto serves one request at a time here, so the recording's order is the order the requests
took effect: Tansu coordinates with conditional PUTs, and a threaded moto can record two racing
PUTs in one order and apply them in the other, which a replay then turns into a different log.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

HOST = "127.0.0.1"
S3_BUCKET = "tansu"
RECORDING_FILE = "s3-requests.jsonl"
LOCK_FILE = "broker.lock"
# Requests that change nothing in S3; a replay does not need them, so startup drops them.
_READ_ONLY_METHODS = frozenset({"GET", "HEAD"})
# Credentials for the local S3 only; moto accepts any.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "payrecon",
    "AWS_SECRET_ACCESS_KEY": "payrecon",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ALLOW_HTTP": "true",
}


class DurableDirError(ValueError):
    """The durable directory cannot be used (not writable, or in use by another broker)."""


# -- the durable directory ---------------------------------------------------------------------


def lock_durable_dir(directory: Path) -> IO[bytes]:
    """Create and lock DIR, so two brokers never write one recording. The kernel drops the lock
    when the holder dies, kill -9 included."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock_file = (directory / LOCK_FILE).open("ab")
    except OSError as exc:
        raise DurableDirError(
            f"--durable {directory}: cannot write there ({exc.strerror or exc})"
        ) from None
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.close()
        raise DurableDirError(
            f"--durable {directory}: another payrecon broker is using this directory"
        ) from None
    return lock_file


def compact_recording(path: Path) -> bool:
    """Prepare the S3 request recording for a replay; True if it holds any change to replay.

    Drops read-only requests (they change nothing) and a last line cut short by a crash (moto
    writes a request's line before handling it, so that request was never answered, and so
    never acknowledged to a Kafka producer). The file is replaced atomically.
    """
    if not path.exists():
        return False
    kept = list(_replayable_lines(path.read_bytes().splitlines()))
    temp = path.with_suffix(".compacting")
    with temp.open("wb") as out:
        out.writelines(line + b"\n" for line in kept)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)
    return bool(kept)


def _replayable_lines(lines: Iterable[bytes]) -> Iterator[bytes]:
    for line in lines:
        try:
            method = json.loads(line)["method"]
        except (ValueError, KeyError, TypeError):
            return  # only the last line can be incomplete: nothing valid follows it
        if method not in _READ_ONLY_METHODS:
            yield line


# -- the S3 child process ----------------------------------------------------------------------

S3_CHILD_CODE = (
    "import sys; from pipelines.recorded_s3 import serve_recorded_s3; "
    "serve_recorded_s3(int(sys.argv[1]), verbose=sys.argv[2] == '1')"
)


def pythonpath_with_this_package() -> str:
    root = str(Path(__file__).resolve().parent.parent)
    existing = os.environ.get("PYTHONPATH")
    return f"{root}{os.pathsep}{existing}" if existing else root


def serve_recorded_s3(port: int, verbose: bool = False) -> None:
    """Run moto's S3 server on ``port``, applying one request at a time (see the module doc).

    The recorder's own endpoints stay concurrent: a replay sends its requests back to this
    server and waits for them, which would deadlock behind the lock.
    """
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    if not verbose:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    app = DomainDispatcherApplication(create_backend_app)
    one_at_a_time = threading.Lock()

    def serialized(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").startswith("/moto-api/recorder/"):
            return app(environ, start_response)
        with one_at_a_time:
            result = app(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        return [body]

    run_simple(HOST, port, serialized, threaded=True, request_handler=MotoRequestHandler)
