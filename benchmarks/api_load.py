"""Load on the HTTP API: throughput and latency at 1, 8 and 32 concurrent clients, beside `fer`.

    python -m benchmarks.api_load                      # facexpr serve (1 and 2 workers) and fer
    python -m benchmarks.api_load --levels 1,8 --requests-per-client 10

Run by hand, never in CI. Each server runs in a process of its own on loopback; the client is a
second process (asyncio + httpx) that keeps C requests in flight, each one photo (a development
headshot, ../shared/data/headshots-dev, cycled; tests/fixtures/astronaut.jpg when those are
absent), for a bounded number of requests per level after a warm-up. facexpr's server does all
that `facexpr serve` does for each request: decode, detect, classify, record the history
(embedded SQLite) and keep the prediction for feedback (local store). The `fer` server is the same
FastAPI + uvicorn with one endpoint calling `FER(mtcnn=False).detect_emotions` per photo (install
it with `pip install --no-deps -r benchmarks/requirements.txt`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT.parent / "shared" / "data" / "headshots-dev"
MARK = "@@load "
RESULTS = ROOT / "benchmarks" / "RESULTS-api.md"


def photo_files(folder: Path = PHOTOS) -> list[Path]:
    found = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return found or [ROOT / "tests" / "fixtures" / "astronaut.jpg"]


# ---------------------------------------------------------------- the client (second process)

async def _drive(url: str, concurrency: int, total: int, photos: list[bytes]) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors = 0
    issued = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one(i: int) -> None:
            nonlocal errors
            started = time.perf_counter()
            photo = photos[i % len(photos)]
            upload = [("file", (f"{i}.jpg", photo, "image/jpeg"))]
            try:
                response = await client.post("/v1/predictions", files=upload)
            except httpx.TransportError:  # e.g. the server closed a kept-alive connection: counted, not timed
                errors += 1
                return
            if response.status_code != 200:
                errors += 1
                return
            latencies.append(time.perf_counter() - started)

        for i in range(min(total, max(8, concurrency))):  # warm-up: connections, threads, caches
            await one(i)
        latencies.clear()

        async def client_loop() -> None:
            nonlocal issued
            while issued < total:
                i = issued
                issued += 1
                await one(i)

        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {"concurrency": concurrency, "requests": len(latencies), "errors": errors, "wall_s": wall,
            "throughput": len(latencies) / wall, "p50_ms": 1000 * statistics.median(ordered),
            "p95_ms": 1000 * ordered[max(0, int(round(0.95 * len(ordered))) - 1)]}


def client_main(args: argparse.Namespace) -> int:
    photos = [p.read_bytes() for p in photo_files(args.photos)]
    result = asyncio.run(_drive(args.url, args.concurrency, args.requests, photos))
    print(MARK + json.dumps(result), flush=True)
    return 0


# ---------------------------------------------------------------- the servers

def _wait(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server did not start")


def _port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(kind: str, workers: int, data_dir: str) -> tuple[subprocess.Popen, str]:
    port = _port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "FACEXPR_DATA_DIR": data_dir}
    for key in ("FACEXPR_S3_BUCKET", "FACEXPR_MONGODB_URI", "AWS_ENDPOINT_URL"):
        env.pop(key, None)
    if kind == "facexpr":
        cmd = [sys.executable, "-m", "facexpr", "serve", "--port", str(port), "--workers", str(workers),
               "--log-level", "warning"]
    else:
        cmd = [sys.executable, "-m", "uvicorn", "benchmarks.fer_server:app", "--port", str(port),
               "--workers", str(workers), "--log-level", "warning"]
    log = open(Path(data_dir) / "server.log", "wb")  # noqa: SIM115 - the server's lifetime
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    _wait(url, proc)
    return proc, url


def run_level(url: str, concurrency: int, requests: int, photos: Path) -> dict[str, Any]:
    load = os.getloadavg()[0]
    done = subprocess.run([sys.executable, "-m", "benchmarks.api_load", "client", "--url", url,
                           "--concurrency", str(concurrency), "--requests", str(requests),
                           "--photos", str(photos)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    lines = [json.loads(line[len(MARK):]) for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode or not lines:
        raise RuntimeError(done.stderr[-2000:])
    return {**lines[-1], "load_before": load, "load_after": os.getloadavg()[0]}


def fer_available() -> bool:
    return subprocess.run([sys.executable, "-c", "import fer"], capture_output=True).returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    c.add_argument("--concurrency", type=int, required=True)
    c.add_argument("--requests", type=int, required=True)
    c.add_argument("--photos", type=Path, default=PHOTOS)
    parser.add_argument("--photos", type=Path, default=PHOTOS, help="a folder of photos (headshots-dev)")
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--requests-per-client", type=int, default=12)
    parser.add_argument("--min-requests", type=int, default=140)
    parser.add_argument("--servers", default="facexpr:1,facexpr:2,fer:1")
    args = parser.parse_args(argv)
    if args.command == "client":
        return client_main(args)

    levels = [int(v) for v in args.levels.split(",")]
    rows = []
    for spec in args.servers.split(","):
        kind, workers = spec.split(":")
        if kind == "fer" and not fer_available():
            print("fer is not installed (pip install --no-deps -r benchmarks/requirements.txt): skipped")
            continue
        with tempfile.TemporaryDirectory() as data_dir:
            proc, url = start_server(kind, int(workers), data_dir)
            try:
                for level in levels:
                    result = run_level(url, level, max(args.min_requests, level * args.requests_per_client),
                                       args.photos)
                    result.update(server=kind, workers=int(workers))
                    rows.append(result)
                    print(json.dumps(result), flush=True)
            except RuntimeError:
                print(f"{kind} server (exit {proc.poll()}), its log:\n"
                      + (Path(data_dir) / "server.log").read_text(errors="replace")[-3000:])
                raise
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    write_results(rows, len(photo_files(args.photos)))
    return 0


def write_results(rows: list[dict[str, Any]], photos: int) -> None:
    cores = os.cpu_count() or 1
    # The benchmark's own server and client raise the load by about one: say "shared" only beyond that.
    shared = max(max(r["load_before"], r["load_after"]) for r in rows) > cores
    machine = ("shared with other work: figures are noisy" if shared
               else "nothing else ran: load stayed within the benchmark's own")
    lines = [f"# HTTP API under load ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)", "",
             f"`python -m benchmarks.api_load`: {photos} photos cycled, one photo per request, client in a "
             f"second process on loopback; {cores} cores ({machine}).",
             "", "| server | workers | clients | requests | errors | requests/s | p50 ms | p95 ms "
             "| load avg |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['server']} | {r['workers']} | {r['concurrency']} | {r['requests']} | "
                     f"{r['errors']} | {r['throughput']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | "
                     f"{r['load_before']:.1f}–{r['load_after']:.1f} |")
    lines += ["", f"load avg: the machine's 1-minute load average before and after the level ({cores} "
              f"cores: above {cores}, other work was competing for them)."]
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
