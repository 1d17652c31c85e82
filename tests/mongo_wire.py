"""A real MongoDB-wire server for the tests: SecantusDB's `secantusd-py` on loopback.

SecantusDB (PyPI `secantusdb`, pinned in tests/requirements-secantus.txt) is GPL, so it is a test
tool only: `make test` installs it into its own virtual environment (`.venv-secantus`), never into
the app's. FACEXPR_SECANTUSD names another `secantusd-py` to use. Without one the tests that need
it skip, except in CI (`CI=true`), where that fails the run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SECANTUSD = ROOT / ".venv-secantus" / "bin" / "secantusd-py"
START_S = 60  # a cold start on a busy 2-core machine; it takes ~3 s when idle


def secantusd_binary() -> str | None:
    chosen = os.environ.get("FACEXPR_SECANTUSD")
    if chosen:
        return chosen if Path(chosen).exists() else None
    return str(SECANTUSD) if SECANTUSD.exists() else shutil.which("secantusd-py")


def require_server(binary: str | None) -> str:
    """The server binary; skip without one, except in CI (CI=true), where that fails the run."""
    if binary:
        return binary
    reason = ("no MongoDB-wire server: `make test` installs secantusdb into .venv-secantus "
              "(or set FACEXPR_SECANTUSD)")
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI needs the MongoDB-wire server: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ping(uri: str, timeout_ms: int = 500) -> bool:
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    client = MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


@dataclass
class WireServer:
    """One `secantusd-py` process; `stop()` and `start()` again keep the port (and, with a storage
    folder, the data), as a restarted mongod would."""

    binary: str
    storage: str  # a folder, or ":memory:"
    log_path: Path
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self) -> WireServer:
        self.port = self.port or free_port()
        with open(self.log_path, "ab") as log:
            # --config with an empty file: no secantusd.toml found on the machine changes the server.
            config = self.log_path.with_suffix(".toml")
            config.write_text("")
            self.proc = subprocess.Popen(
                [self.binary, "--config", str(config), "--host", "127.0.0.1", "--port", str(self.port),
                 "--storage-path", self.storage, "--log-level", "WARNING"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_S
        while not ping(self.uri):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("secantusd-py did not answer a ping:\n"
                            + self.log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@contextmanager
def wire_server(folder: Path, storage: str | None = None) -> Iterator[WireServer]:
    """A started server whose log (and, unless STORAGE is ":memory:", data) live under FOLDER."""
    binary = require_server(secantusd_binary())
    folder.mkdir(parents=True, exist_ok=True)
    server = WireServer(binary, storage or str(folder / "wiredtiger"), folder / "secantusd.log")
    try:
        yield server.start()
    finally:
        server.stop()
