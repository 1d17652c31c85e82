"""`facexpr serve` as a real uvicorn server process on loopback, for the API tests.

    with ApiServer(env={...}) as server:
        httpx.post(server.url + "/v1/predictions", files=...)

The process gets only the settings given (plus PATH and the AWS test keys when asked), so it never
sees the developer's own FACEXPR_* settings; its output goes to a log file the tests read.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.conftest import ROOT

START_TIMEOUT_S = 180  # TensorFlow's import and the model's load, on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ApiServer:
    env: dict[str, str]
    log_path: Path
    workers: int = 1
    port: int = 0
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiServer:
        return self.launch().wait_ready()

    def launch(self) -> ApiServer:
        """Start the process without waiting (several servers then load their models side by side)."""
        self.port = self.port or free_port()
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2",
               "HOME": os.environ.get("HOME", "/tmp"), **self.env}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - open for the process's lifetime
        self.process = subprocess.Popen(
            [sys.executable, "-m", "facexpr", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", str(self.workers), "--log-level", "warning"],
            env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self) -> ApiServer:
        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"facexpr serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code in (200, 503):
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"facexpr serve did not answer within {START_TIMEOUT_S} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
