"""A long soak of `facexpr serve`: memory, latency and bytes kept over time (run by hand).

    python -m benchmarks.api_soak --minutes 30                     # one worker, 8 clients
    python -m benchmarks.api_soak --minutes 10 --shadow            # with a candidate in shadow

One server on loopback (embedded defaults in a fresh data folder), a second process keeping C
requests in flight for the whole soak, each one development headshot (cycled), and a share of the
answers given feedback (a label, as a person would: the prediction confirmed or corrected). Every
interval the parent records the server's resident memory (its process and any workers, from
/proc), the data folder's size, and the interval's requests, errors and latency percentiles. With
--shadow a copy of the served model is registered and made the shadow candidate, so every face is
answered a second time off the request path. Results: benchmarks/RESULTS-soak.md (appended).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.api_load import MARK, PHOTOS, ROOT, photo_files, start_server

RESULTS = ROOT / "benchmarks" / "RESULTS-soak.md"
LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


# ---------------------------------------------------------------- the client (second process)

async def _soak(url: str, concurrency: int, seconds: float, interval: float, feedback_share: float,
                photos: list[bytes]) -> None:
    import httpx

    latencies: list[float] = []
    counts = {"requests": 0, "errors": 0, "feedback": 0, "feedback_errors": 0}
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one(i: int) -> None:
            started = time.perf_counter()
            upload = [("file", (f"{i}.jpg", photos[i % len(photos)], "image/jpeg"))]
            try:
                response = await client.post("/v1/predictions", files=upload)
            except httpx.TransportError:
                counts["errors"] += 1
                return
            if response.status_code != 200:
                counts["errors"] += 1
                return
            latencies.append(time.perf_counter() - started)
            counts["requests"] += 1
            body = response.json()
            faces = body["predictions"][0]["faces"]
            if faces and (i * 0.6180339887) % 1.0 < feedback_share:  # a fixed, evenly spread share
                label = LABELS[i % len(LABELS)]
                sent = await client.post(f"/v1/predictions/{body['predictions'][0]['id']}/feedback",
                                         json={"face_index": 0, "label": label})
                counts["feedback" if sent.status_code == 200 else "feedback_errors"] += 1

        issued = 0

        async def client_loop() -> None:
            nonlocal issued
            while time.monotonic() < stop:
                issued += 1
                await one(issued)

        async def reporter() -> None:
            began = time.monotonic()
            while time.monotonic() < stop:
                await asyncio.sleep(interval)
                ordered = sorted(latencies)
                row = {"t_s": round(time.monotonic() - began), **counts, "interval_s": interval}
                if ordered:
                    row.update(p50_ms=1000 * statistics.median(ordered),
                               p95_ms=1000 * ordered[max(0, round(0.95 * len(ordered)) - 1)])
                print(MARK + json.dumps(row), flush=True)
                latencies.clear()
                counts.update(dict.fromkeys(counts, 0))

        await asyncio.gather(reporter(), *(client_loop() for _ in range(concurrency)))


def client_main(args: argparse.Namespace) -> int:
    photos = [p.read_bytes() for p in photo_files(args.photos)]
    asyncio.run(_soak(args.url, args.concurrency, args.seconds, args.interval, args.feedback_share, photos))
    return 0


# ---------------------------------------------------------------- the parent: server, memory, disk

def _tree(pid: int) -> list[int]:
    """PID and every descendant (uvicorn's workers)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            found += _tree(int(child))
    return found


def resident_mb(pid: int) -> float:
    total = 0
    for p in _tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return total / 1024


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def register_shadow(data_dir: str) -> str:
    """A copy of the shipped model, registered in DATA_DIR's model store and made the shadow."""
    from facexpr.core.config import load_settings
    from facexpr.model.registry import ModelRegistry

    os.environ["FACEXPR_DATA_DIR"] = data_dir
    work = Path(data_dir) / "shadow-copy"
    work.mkdir()
    name = "fer-vgg-v1-shadow"
    card = json.loads((ROOT / "models" / "fer-vgg-v1.json").read_text())
    card["name"] = name
    (work / f"{name}.json").write_text(json.dumps(card))
    for suffix in (".keras", ".tflite"):
        shutil.copy(ROOT / "models" / f"fer-vgg-v1{suffix}", work / f"{name}{suffix}")
    registry = ModelRegistry(load_settings())
    registry.add(work / f"{name}.keras")
    registry.set_shadow(name)
    return name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    for p in (parser, c):
        p.add_argument("--concurrency", type=int, default=8)
        p.add_argument("--interval", type=float, default=60.0, help="seconds between samples")
        p.add_argument("--feedback-share", type=float, default=0.10)
        p.add_argument("--photos", type=Path, default=PHOTOS)
    c.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--shadow", action="store_true", help="a copy of the served model in shadow")
    args = parser.parse_args(argv)
    if args.command == "client":
        return client_main(args)

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as data_dir:
        shadow = register_shadow(data_dir) if args.shadow else None
        proc, url = start_server("facexpr", args.workers, data_dir)
        try:
            started_mb = resident_mb(proc.pid)
            client = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.api_soak", "client", "--url", url,
                 "--concurrency", str(args.concurrency), "--seconds", str(args.minutes * 60),
                 "--interval", str(args.interval), "--feedback-share", str(args.feedback_share),
                 "--photos", str(args.photos)],
                cwd=ROOT, stdout=subprocess.PIPE, text=True)
            assert client.stdout is not None
            predictions = 0
            for line in client.stdout:
                if not line.startswith(MARK):
                    continue
                row = json.loads(line[len(MARK):])
                predictions += row["requests"]
                row.update(rss_mb=resident_mb(proc.pid), data_mb=folder_bytes(Path(data_dir)) / 1e6,
                           load=os.getloadavg()[0], predictions=predictions)
                rows.append(row)
                print(json.dumps(row), flush=True)
            client.wait()
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    write_results(rows, args, started_mb, shadow)
    return 0


def write_results(rows: list[dict[str, Any]], args: argparse.Namespace, started_mb: float,
                  shadow: str | None) -> None:
    cores = os.cpu_count() or 1
    half = rows[len(rows) // 2:]
    rss = [r["rss_mb"] for r in half]
    growth = (max(rss) - min(rss)) / min(rss) if rss else float("nan")
    requests = sum(r["requests"] for r in rows)
    seconds = sum(r["interval_s"] for r in rows)
    kept = rows[-1]["data_mb"] * 1e6 / max(1, rows[-1]["predictions"]) if rows else float("nan")
    shadow_said = f"on ({shadow})" if shadow else "off"
    lines = [f"## Soak, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {args.minutes:g} minutes, "
             f"{args.concurrency} clients, {args.workers} worker(s), shadow {shadow_said}",
             "",
             f"`python -m benchmarks.api_soak --minutes {args.minutes:g} --workers {args.workers}"
             f"{' --shadow' if shadow else ''}`; {cores} cores, 1-minute load average "
             f"{min(r['load'] for r in rows):.1f}–{max(r['load'] for r in rows):.1f} at the samples.",
             "",
             f"{requests:,} predictions ({requests / max(1, seconds):.1f}/s), "
             f"{sum(r['feedback'] for r in rows):,} feedbacks, "
             f"{sum(r['errors'] + r['feedback_errors'] for r in rows)} errors; resident memory "
             f"{started_mb:.0f} MB at start, {rows[0]['rss_mb']:.0f} after the first interval, "
             f"{rows[-1]['rss_mb']:.0f} at the end ({100 * growth:.1f} % from lowest to highest over "
             f"the second half); data folder {rows[-1]['data_mb']:.1f} MB, "
             f"{kept / 1e3:.1f} KB per prediction.",
             "", "| minute | requests/s | p50 ms | p95 ms | errors | resident MB | data MB |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['t_s'] / 60:.0f} | {r['requests'] / r['interval_s']:.1f} | "
                     f"{r.get('p50_ms', float('nan')):.0f} | {r.get('p95_ms', float('nan')):.0f} | "
                     f"{r['errors'] + r['feedback_errors']} | {r['rss_mb']:.0f} | {r['data_mb']:.1f} |")
    text = "\n".join(lines) + "\n\n"
    with RESULTS.open("a") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
