"""The app's retrain job: one at a time across processes, its lock freed however the worker ends."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from facexpr.app import jobs
from facexpr.core.config import load_settings
from tests.conftest import ROOT

OTHER_PROCESS = """
from facexpr.app import jobs
from facexpr.core.config import load_settings
try:
    status = jobs.start(load_settings(), "unused", command=["true"])
except jobs.JobBusy as exc:
    print("busy:", exc)
else:
    print("started", status.pid)
"""


def start_elsewhere() -> str:
    """jobs.start from another process (another app replica or the CLI) on the same data folder."""
    run = subprocess.run([sys.executable, "-c", OTHER_PROCESS], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    return run.stdout


def wait_until_idle(settings, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while jobs.is_running(settings):
        assert time.monotonic() < deadline, "the worker did not end"
        time.sleep(0.05)


def test_one_retrain_at_a_time_across_processes(tmp_path):
    settings = load_settings()
    release = tmp_path / "release"
    worker = [sys.executable, "-c",
              f"import pathlib, time\nwhile not pathlib.Path({str(release)!r}).exists(): time.sleep(0.05)"]
    first = jobs.start(settings, "unused", command=worker)
    assert first.running and first.pid and jobs.status(settings).running

    assert start_elsewhere().startswith("busy:")  # another process is refused while it runs
    with pytest.raises(jobs.JobBusy, match="already running"):  # and so is another session here
        jobs.start(settings, "unused", command=worker)
    jobs.clear(settings)  # a running job is never forgotten
    assert jobs.status(settings).running

    release.touch()
    wait_until_idle(settings)
    # The stand-in worker ended without reporting: the job reads as failed, and the lock is free.
    ended = jobs.status(settings)
    assert ended.state == "failed" and "stopped before it finished" in ended.error
    assert start_elsewhere().startswith("started")


def test_a_killed_worker_frees_the_lock(tmp_path):
    settings = load_settings()
    status = jobs.start(settings, "unused", command=[sys.executable, "-c", "import time; time.sleep(600)"])
    assert jobs.is_running(settings)
    os.kill(status.pid, 9)
    wait_until_idle(settings)
    assert jobs.status(settings).state == "failed"
