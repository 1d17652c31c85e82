"""`pip install facexpr` into a fresh virtual environment, measured (run by hand; needs the package index).

    python -m benchmarks.lean_install [--keep DIR]

A wheel is built from the checkout's tracked files, a fresh venv (with its own pip) installs it
and its dependencies from the package index, and then: the venv's size on disk (every file's
bytes) and its largest packages; which optional parts are absent (TensorFlow, Keras, OpenCV,
pandas, Streamlit); a fresh `facexpr predict` on the test photo (wall time, median of 5) and a
fresh python's resident memory after answering it. Results: benchmarks/RESULTS-install.md.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS-install.md"
PHOTO = ROOT / "tests" / "fixtures" / "astronaut.jpg"
OPTIONAL = ("tensorflow", "keras", "cv2", "pandas", "streamlit")
ANSWER_RSS = """import resource, facexpr
r = facexpr.Recognizer(); r.classify({photo!r})
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"""


def build_wheel(out: Path) -> Path:
    src = out / "src"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(out), str(src)], check=True, capture_output=True)
    return next(out.glob("facexpr-*.whl"))


def tree_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, default=None, help="build the venv here and keep it")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        venv = args.keep or Path(tmp) / "venv"
        wheel = build_wheel(Path(tmp))
        wheel_mb = wheel.stat().st_size / 1e6
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True,
                       stderr=subprocess.DEVNULL)
        install_s = time.perf_counter() - started
        site = next((venv / "lib").glob("python3*/site-packages"))
        total = tree_bytes(venv)
        packages = sorted(((tree_bytes(p), p.name) for p in site.iterdir() if p.is_dir()), reverse=True)
        absent = [m for m in OPTIONAL
                  if subprocess.run([str(python), "-c", f"import {m}"], capture_output=True).returncode]
        runs = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run([str(venv / "bin" / "facexpr"), "predict", "--no-record", str(PHOTO)], cwd=tmp,
                           check=True, capture_output=True)
            runs.append(time.perf_counter() - t)
        rss = float(subprocess.run([str(python), "-c", ANSWER_RSS.format(photo=str(PHOTO))], cwd=tmp,
                                   check=True, capture_output=True, text=True).stdout.split()[-1])
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        cpu = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                    if line.startswith("Model name")), "unknown CPU")
    lines = [f"# `pip install facexpr` in a fresh venv ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)", "",
             f"`python -m benchmarks.lean_install`: Python {sys.version.split()[0]}, {cpu}; the wheel "
             f"({wheel_mb:.1f} MB) and its dependencies from the package index into "
             f"`python -m venv` (pip and setuptools included) in {install_s:.0f} s.", "",
             "| measurement | value |", "|---|---:|",
             f"| the venv on disk (every file's bytes) | {total / 1e6:.0f} MB |",
             f"| not installed | {', '.join(absent) or 'none'} |",
             f"| a fresh `facexpr predict photo.jpg` (s, median of 5) | {statistics.median(runs):.2f} |",
             f"| resident memory after answering one photo (MB) | {rss:.0f} |", "",
             "Largest packages:", "", "| package folder | MB |", "|---|---:|"]
    lines += [f"| {name} | {size / 1e6:.1f} |" for size, name in packages[:10]]
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
