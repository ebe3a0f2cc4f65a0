"""Helpers shared by the benchmarks: measuring a child process, its tree's memory, tables.

Every variant of a benchmark runs in a fresh child process so that its peak memory is its
own. :func:`run_measured` starts the child, samples the resident memory of the child's
whole process tree from ``/proc`` while it runs, and reaps it with ``os.wait4``, whose
``ru_maxrss`` is the peak RSS of the child or of any descendant it reaped (the largest
single process, exact). The sampled tree sum also counts worker processes that are alive at
the same time (it double-counts pages they share, so it is an upper bound, and it can miss
a peak shorter than the sampling interval).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024


@dataclass
class Measured:
    """What one child process cost, seen from outside."""

    argv: list[str]
    returncode: int
    seconds: float  # wall time from spawn to exit (interpreter start and imports included)
    max_rss_bytes: int  # ru_maxrss of wait4: the largest single process of the tree
    tree_rss_bytes: int  # peak of the sampled sum over the live process tree
    processes: int  # most processes seen alive in the tree at once
    log: Path
    result: dict = field(default_factory=dict)  # what the child wrote to its result file

    @property
    def peak_rss_bytes(self) -> int:
        return max(self.max_rss_bytes, self.tree_rss_bytes)


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: split after the last ')'.
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        children[ppid].append(int(entry.name))
    return children


def tree_rss(pid: int) -> tuple[int, int]:
    """(resident bytes summed over ``pid`` and its live descendants, number of processes)."""
    children = _children_by_parent()
    total, count, todo = 0, 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm", "rb") as f:
                total += int(f.read().split()[1]) * PAGE_SIZE
            count += 1
        except (OSError, IndexError, ValueError):
            pass
        todo.extend(children.get(p, ()))
    return total, count


class _TreeSampler(threading.Thread):
    def __init__(self, pid: int, interval: float):
        super().__init__(daemon=True)
        self._pid = pid
        self._interval = interval
        self._halt = threading.Event()
        self.peak = 0
        self.processes = 0

    def run(self) -> None:
        while not self._halt.is_set():
            rss, count = tree_rss(self._pid)
            self.peak = max(self.peak, rss)
            self.processes = max(self.processes, count)
            self._halt.wait(self._interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def run_measured(
    argv: list[str],
    *,
    log: Path,
    result_file: Path | None = None,
    timeout: float | None = None,
    interval: float = 0.2,
) -> Measured:
    """Run ``argv`` to completion (stdout and stderr to ``log``) and measure it.

    The child gets its own session, so on a timeout or an interrupt its whole process group
    (and nothing else) is killed.
    """
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        sampler = _TreeSampler(proc.pid, interval)
        sampler.start()
        timer = None
        if timeout is not None:
            timer = threading.Timer(timeout, _kill_group, [proc.pid])
            timer.daemon = True
            timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            _kill_group(proc.pid)
            proc.wait()
            raise
        finally:
            if timer is not None:
                timer.cancel()
            sampler.stop()
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    # A worker the child left behind in its group is ours to end.
    _kill_group(proc.pid)
    result = {}
    if result_file is not None and result_file.exists():
        result = json.loads(result_file.read_text())
    return Measured(
        argv=argv,
        returncode=proc.returncode,
        seconds=seconds,
        max_rss_bytes=usage.ru_maxrss * 1024,  # kilobytes on Linux
        tree_rss_bytes=sampler.peak,
        processes=sampler.processes,
        log=log,
        result=result,
    )


def variants_parser(
    doc: str | None, variants: tuple[str, ...], default: str, events: int, events_help: str,
    helpers: tuple[str, ...] = (),
) -> argparse.ArgumentParser:  # fmt: skip
    """The flags of a benchmark whose variants run in children: ``--events``,
    ``--variants``, ``--keep``, ``--timeout``, and the hidden ones a child is started with
    (``helpers``: child steps that are not variants)."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=events, help=events_help)
    parser.add_argument(
        "--variants",
        default=default,
        help=f"comma-separated, of {', '.join(variants)} (default: %(default)s)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (data, logs)")
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds per variant (default: 3600)"
    )
    # Internal: how the parent starts a child.
    parser.add_argument("--variant", choices=[*variants, *helpers], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    return parser


def run_parent(
    args: argparse.Namespace,
    variants: tuple[str, ...],
    prefix: str,
    run: Callable[[argparse.Namespace, list[str], Path], int],
) -> int:
    """Check ``--variants`` and ``--events``, then ``run(args, chosen variants, work)`` in a
    fresh temp dir, removed afterwards unless ``--keep``; returns the exit code."""
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in variants]
    if unknown or not chosen:
        print(f"bench: unknown variants {unknown}; choose from {variants}", file=sys.stderr)
        return 2
    if args.events < 1000:
        print("bench: --events must be at least 1000", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        return run(args, chosen, work)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_variant(
    script: str,
    work: Path,
    bootstrap: str,
    variant: str,
    timeout: float,
    *,
    quiet: bool = False,
    extra: Sequence[str] = (),
) -> Measured:
    """Run one variant of a benchmark ``script`` in a fresh child (``--variant``, its work
    dir and the broker as flags, then ``extra``); its log and result file go to ``work``.
    Unless ``quiet``, says when it starts and, if it succeeded, its time and peak memory."""
    if not quiet:
        print(f"running {variant} ...", flush=True)
    argv = [
        sys.executable,
        str(Path(script).resolve()),
        "--variant",
        variant,
        "--work",
        str(work),
        "--bootstrap",
        bootstrap,
        *extra,
    ]
    measured = run_measured(
        argv,
        log=work / f"{variant}.log",
        result_file=work / f"result-{variant}.json",
        timeout=timeout,
    )
    if not quiet and measured.returncode == 0:
        print(
            f"  {variant}: {measured.seconds:.1f} s, peak RSS "
            f"{measured.peak_rss_bytes / MIB:,.0f} MiB",
            flush=True,
        )
    return measured


def failed(measured: Measured) -> int:
    """Say which variant failed, with the end of its log; the benchmark's exit code."""
    print(
        f"bench: {measured.argv[3]} exited with {measured.returncode}; the end of its log:\n"
        f"{tail(measured.log)}",
        file=sys.stderr,
    )
    return 1


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def command_line(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def machine() -> str:
    """One line about where the numbers come from."""
    cpus = os.cpu_count()
    try:
        with open("/proc/meminfo") as f:
            total_kib = int(f.readline().split()[1])
        mem = f"{total_kib / MIB:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        mem = "? GiB RAM"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{cpus} CPUs, {mem}, load average {load}, Python "
        f"{sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )


class Stopwatch:
    """Named, cumulative phases: ``with watch("decode"): ...``; ``watch.phases`` in seconds."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._name = ""
        self._started = 0.0

    def __call__(self, name: str) -> Stopwatch:
        self._name = name
        return self

    def __enter__(self) -> Stopwatch:
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self._started
        self.phases[self._name] = self.phases.get(self._name, 0.0) + elapsed


def messages_table(messages: list):
    """confluent-kafka messages as one ``KAFKA_MESSAGE`` table: what the plain variants
    decode, batch by batch, as the Beam read hands the jobs' decoders."""
    import pyarrow as pa

    from schemas.kafka_message import KAFKA_MESSAGE

    return pa.Table.from_pydict(
        {
            "topic": [m.topic() for m in messages],
            "partition": [m.partition() for m in messages],
            "offset": [m.offset() for m in messages],
            "timestamp": [m.timestamp()[1] for m in messages],
            "key": [m.key() for m in messages],
            "value": [m.value() for m in messages],
        },
        schema=KAFKA_MESSAGE,
    )


def measured_table(
    runs: dict[str, Measured], events: int, what: str, column: str, value: Callable[[dict], str]
) -> list[str]:
    """The lines a benchmark's report opens with: per variant its wall and work time,
    events per second of each, peak memory, and ``column`` (``value`` of its result)."""
    rows = [
        [
            name,
            f"{m.seconds:.1f}",
            f"{m.result['work_seconds']:.1f}",
            f"{m.result['import_seconds']:.1f}",
            f"{events / m.seconds:,.0f}",
            f"{events / m.result['work_seconds']:,.0f}",
            f"{m.max_rss_bytes / MIB:,.0f}",
            f"{m.tree_rss_bytes / MIB:,.0f}",
            str(m.processes),
            value(m.result),
        ]
        for name, m in runs.items()
    ]
    header = ["variant", "seconds", "work s", "imports s", "events/s", "events/s (work)",
              "peak RSS MiB", "tree RSS MiB", "procs", column]  # fmt: skip
    return [
        f"{events:,} {what}; seconds = child wall time (start, imports, work); "
        "work = after the imports",
        render_table(header, rows),
        "(peak RSS: ru_maxrss of the largest process in the variant's tree; tree RSS: the "
        "sampled peak of the sum over its live processes)",
        "",
    ]


def render_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain-text table, columns right-aligned except the first."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = str(cells[0]).ljust(widths[0])
        rest = [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest])

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])
