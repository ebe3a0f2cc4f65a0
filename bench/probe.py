"""Where a job's time and memory go, from inside its process (bench/reconcile.py and
bench/telemetry.py): its launcher's phases and each FnApiRunner stage, with peak RSS."""

from __future__ import annotations

import os
import re
import sys
import threading
import time

from common import MIB, tree_rss


class Probe:
    """Where the job's time and memory go, from inside its process: the launcher's phases
    (its ``==>`` progress lines on stderr) and FnApiRunner's stages (each bundle it runs),
    with the peak RSS of the process tree sampled during each."""

    def __init__(self, started: float, phases: dict[str, str], interval: float = 0.1):
        self.started = started
        self.phases = phases  # first word of a progress line -> the phase's name
        self.label = "start"
        self.marks: list[tuple[float, str]] = []
        self.peaks: dict[str, int] = {}
        self.stages: dict[str, list[float]] = {}  # label -> [seconds, bundles]
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(interval,), daemon=True)

    def _sample(self, interval: float) -> None:
        pid = os.getpid()
        while not self._halt.is_set():
            label = self.label
            self.peaks[label] = max(self.peaks.get(label, 0), tree_rss(pid)[0])
            self._halt.wait(interval)

    def __enter__(self) -> Probe:
        self._stream, sys.stderr = sys.stderr, self  # type: ignore[assignment]
        self._unpatch = self._patch_fn_api_runner()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self._thread.join()
        self._unpatch()
        sys.stderr = self._stream

    # stderr: the job's progress lines
    def write(self, text: str) -> int:
        if text.startswith("==> "):
            self.label = self.phases.get(text[4:].split()[0], text[4:28])
            self.marks.append((time.perf_counter() - self.started, self.label))
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def _patch_fn_api_runner(self):
        """Time each bundle FnApiRunner executes (a private method: skipped if it moved)."""
        try:
            from apache_beam.runners.portability.fn_api_runner import fn_runner

            original = fn_runner.FnApiRunner._execute_bundle
        except (ImportError, AttributeError):
            return lambda: None
        probe = self

        def timed(runner, context, bundle_manager, bundle_input):
            label, outer = stage_label(bundle_manager.stage.name), probe.label
            probe.label, t = label, time.perf_counter()
            try:
                return original(runner, context, bundle_manager, bundle_input)
            finally:
                spent = probe.stages.setdefault(label, [0.0, 0])
                spent[0] += time.perf_counter() - t
                spent[1] += 1
                probe.label = outer

        fn_runner.FnApiRunner._execute_bundle = timed

        def unpatch() -> None:
            fn_runner.FnApiRunner._execute_bundle = original

        return unpatch


def stage_label(name: str) -> str:
    """A fused stage's transforms, two levels deep: ``ReadStripe/ReadExports+...``."""
    plain = name.replace("ref_AppliedPTransform_", "")
    pairs = re.findall(r"(?:^|[(+])([A-Za-z][A-Za-z0-9_]*)[-/]([A-Za-z][A-Za-z0-9]*)", plain)
    names = [f"{a}/{b}" for a, b in pairs if not a.startswith(("ref_", "PCollection"))]
    return "+".join(dict.fromkeys(names))[:200] or name[:60]


def phase_lines(result: dict, pipeline: str) -> str:
    """The job's own progress lines (``==> ...``) as phases with their durations and peak
    memory, then each Beam stage (``pipeline``: the phase that runs them)."""
    marks = result["stages"]
    if not marks:
        return ""
    ends = [t for t, _ in marks[1:]] + [result["work_seconds"]]
    parts = [f"before {marks[0][0]:.1f} s"]
    peaks = dict(result.get("peaks", {}))
    beam_stages = result.get("beam_stages", [])
    if beam_stages and pipeline in peaks:  # the pipeline's peak includes its stages
        peaks[pipeline] = max(peaks[pipeline], *(s[3] for s in beam_stages))
    for (t, label), end in zip(marks, ends, strict=True):
        peak = f", peak {peaks[label] / MIB:,.0f} MiB" if label in peaks else ""
        parts.append(f"{label} {end - t:.1f} s{peak}")
    lines = ["; ".join(parts)]
    for label, seconds, bundles, peak in beam_stages:
        if seconds >= 0.05:
            shown = f"{peak / MIB:6,.0f}" if peak else "     -"
            lines.append(
                f"    stage {seconds:6.1f} s  peak {shown} MiB  {bundles:>3} bundles  {label}"
            )
    return "\n".join(lines)


def probe_result(probe: Probe) -> dict:
    """What a child puts in its result file for :func:`phase_lines`."""
    return {
        "stages": probe.marks,
        "beam_stages": [
            [k, v[0], int(v[1]), probe.peaks.get(k, 0)] for k, v in probe.stages.items()
        ],
        "peaks": probe.peaks,
    }
