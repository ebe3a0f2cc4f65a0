"""Headless Chromium for the report tests: run it, bound it in time, leave nothing behind.

Chromium starts helper processes (zygotes, renderers, GPU and network services) in its own
process group, and crash handlers in sessions of their own. Every one of them names the
test's private profile/home directory on its command line, which is how the cleanup finds
them all, also after a timeout.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
)


def chromium() -> str:
    """The chromium executable; a missing browser fails the test (it is a dependency)."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium is not installed: `make install` installs it (Debian's chromium "
            "package, through `make chromium`)"
        )
    return path


def run_headless(page: Path, home: Path, *flags: str, timeout: float = 60.0) -> str:
    """Run headless Chromium on ``page`` with ``flags``; returns its standard output.

    ``home`` (a fresh directory) holds the profile and is HOME for the browser, so nothing
    is written to the user's own. The browser is killed at ``timeout`` (the test fails),
    and every process it started is killed when it returns.
    """
    home.mkdir(parents=True, exist_ok=True)
    env = os.environ | {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
    }
    command = [chromium(), *FLAGS, f"--user-data-dir={home / 'profile'}", *flags, page.as_uri()]
    # Files, not pipes: a lingering helper holding a pipe open could block the read.
    stdout, stderr = home / "stdout.txt", home / "stderr.txt"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        browser = subprocess.Popen(command, stdout=out, stderr=err, env=env, start_new_session=True)
        try:
            code = browser.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"chromium did not finish within {timeout:.0f} s: {' '.join(command)}")
        finally:
            _kill_group(browser.pid)
            kill_processes_naming(str(home))
            browser.wait(timeout=10)
    if code != 0:
        pytest.fail(f"chromium exited {code}: {stderr.read_text(errors='replace')[-2000:]}")
    return stdout.read_text(encoding="utf-8")


def live_processes_naming(marker: str) -> list[int]:
    """Pids of running (not zombie) processes with ``marker`` on their command line."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # exited meanwhile
        if marker.encode() in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


def kill_processes_naming(marker: str) -> None:
    for pid in live_processes_naming(marker):
        with contextlib.suppress(ProcessLookupError):  # exited meanwhile
            os.kill(pid, signal.SIGKILL)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group has exited already
        os.killpg(pgid, signal.SIGKILL)
