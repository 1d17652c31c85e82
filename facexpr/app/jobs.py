"""The app's background retrain: one job at a time across sessions and processes.

A job is a separate process (`python -m facexpr.app.jobs`), so the page never blocks and a heavy
fine-tune never shares the app's TensorFlow state. The lock is an exclusive `flock` on
`FACEXPR_DATA_DIR/jobs/retrain.lock`, taken by the starting process and handed to the worker as an
inherited descriptor: the operating system releases it when the worker ends, however it ends, so
a crashed job never leaves a stale lock. (It covers the processes that share that folder; replicas
on separate machines each have their own.) Progress and the outcome go to `retrain.json` beside it,
written atomically.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import traceback
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from facexpr.core.config import Settings, load_settings
from facexpr.core.errors import FacexprError
from facexpr.storage.store import atomic_write

JOBS = "jobs"
LOCK_FD_ENV = "FACEXPR_JOB_LOCK_FD"
_children: list[subprocess.Popen] = []  # workers this process started, reaped by `status`


class JobBusy(FacexprError):
    """Another retrain is running (in this or another process)."""


@dataclass
class JobStatus:
    state: str = "idle"  # idle | running | done | failed
    progress: float = 0.0
    message: str = ""
    name: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    pid: int | None = None
    error: str | None = None
    card: dict[str, Any] | None = None  # the new version's card once done

    @property
    def running(self) -> bool:
        return self.state == "running"


def candidate_place(state: Any, name: str | None) -> str | None:
    """Where a finished retrain's version stands in the registry, when it is no longer a candidate:
    served (promoted since, e.g. from the CLI) or on the rollback stack; None while it is one."""
    if name is None or name not in state.stack:
        return None
    return "is served now" if state.served == name else "was served and may be rolled back to"


def _dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / JOBS


def _lock_path(settings: Settings) -> Path:
    return _dir(settings) / "retrain.lock"


def _status_path(settings: Settings) -> Path:
    return _dir(settings) / "retrain.json"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_status(settings: Settings, status: JobStatus) -> None:
    atomic_write(_status_path(settings), json.dumps(asdict(status)).encode())


def _try_lock(settings: Settings) -> int | None:
    """An open descriptor holding the job lock, or None when another process holds it."""
    path = _lock_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def is_running(settings: Settings) -> bool:
    fd = _try_lock(settings)
    if fd is None:
        return True
    os.close(fd)
    return False


def status(settings: Settings) -> JobStatus:
    """The last job's status; a job marked running whose process is gone reads as failed."""
    for child in list(_children):
        if child.poll() is not None:
            _children.remove(child)
    path = _status_path(settings)
    try:
        current = JobStatus(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return JobStatus()
    if current.running and not is_running(settings):
        current.state = "failed"
        current.error = current.error or "The retrain process stopped before it finished."
    return current


def settings_env(settings: Settings) -> dict[str, str]:
    """SETTINGS as environment variables, so the worker sees what the app read from secrets.toml too
    (AWS keys found only there are already exported by load_settings)."""
    values = {"FACEXPR_MODEL": settings.model, "FACEXPR_DATA_DIR": str(settings.data_dir),
              "FACEXPR_S3_BUCKET": settings.s3_bucket, "FACEXPR_S3_PREFIX": settings.s3_prefix,
              "FACEXPR_MONGODB_URI": settings.mongodb_uri, "FACEXPR_MONGODB_DB": settings.mongodb_db,
              "FACEXPR_TRAIN_DATA": settings.train_data, "FACEXPR_RETRAIN_RECIPE": settings.retrain_recipe,
              "FACEXPR_PHOTOS_VAL": settings.photos_val}
    return {k: v for k, v in values.items() if v}


def start(settings: Settings, data_uri: str, name: str | None = None, command: list[str] | None = None
          ) -> JobStatus:
    """Start a retrain in the background; JobBusy when one is already running anywhere on this data dir.

    COMMAND replaces the worker (tests); it inherits the lock in FACEXPR_JOB_LOCK_FD."""
    fd = _try_lock(settings)
    if fd is None:
        raise JobBusy("A retrain is already running; wait for it to finish.")
    try:
        begun = JobStatus(state="running", message="starting", name=name, started_at=_now())
        write_status(settings, begun)
        env = {**os.environ, **settings_env(settings), LOCK_FD_ENV: str(fd)}
        worker = command or [sys.executable, "-m", "facexpr.app.jobs", "--data", data_uri,
                             *(["--name", name] if name else [])]
        log = open(_dir(settings) / "retrain.log", "ab")  # noqa: SIM115 - the child owns it from here
        try:
            process = subprocess.Popen(worker, env=env, pass_fds=(fd,), stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True,
                                       cwd=Path(__file__).resolve().parents[2])
        finally:
            log.close()
        _children.append(process)
        begun.pid = process.pid
        write_status(settings, begun)
        return begun
    finally:
        os.close(fd)  # the worker holds its own copy of the lock until it exits


def clear(settings: Settings) -> None:
    """Forget a finished job (after Promote or Discard); a running one is never cleared."""
    if not status(settings).running:
        _status_path(settings).unlink(missing_ok=True)


def _run_worker(data_uri: str, name: str | None) -> int:
    """The job process: retrain, put the version into the registry, report as it goes."""
    from facexpr.learn.retrain import recipe_from, retrain
    from facexpr.model.registry import ModelRegistry

    settings = load_settings()
    current = status(settings)
    current.state, current.pid = "running", os.getpid()

    def progress(fraction: float, message: str) -> None:
        current.progress, current.message = round(fraction, 4), message
        write_status(settings, current)

    try:
        result = retrain(settings, data_uri, name, recipe_from(settings.retrain_recipe),
                         photos_val=settings.photos_val, progress=progress)
        registry = ModelRegistry(settings)
        current.name = registry.add(result.keras_path)
        registry.set_shadow(current.name)  # answers beside the served model until promoted or discarded
        current.card = result.record
        current.state, current.progress = "done", 1.0
    except Exception as exc:  # the page shows it; the log keeps the trace
        traceback.print_exc()
        current.state, current.error = "failed", str(exc) if isinstance(exc, FacexprError) else repr(exc)
    current.finished_at = _now()
    write_status(settings, current)
    if os.environ.get(LOCK_FD_ENV, "").isdigit():  # free the lock now, not when TensorFlow has shut down
        os.close(int(os.environ[LOCK_FD_ENV]))
    return 0 if current.state == "done" else 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facexpr.app.jobs", description="the retrain worker")
    parser.add_argument("--data", required=True)
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    return _run_worker(args.data, args.name)


if __name__ == "__main__":
    sys.exit(main())
