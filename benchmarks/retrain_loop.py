"""Measure the correction loop on the development headshots, as a team would run it (by hand).

People of one half are imported as corrections (`import-corrections`, both sessions), the served
model is retrained on them (`retrain`, default recipe), and base and retrained are scored on the
photos of the other half (`evaluate --faces detect`) — never the same person on both sides — and
on FER2013 val. Everything goes into a temporary FACEXPR_DATA_DIR, never the repository.

    nice -n 19 .venv/bin/python -m benchmarks.retrain_loop ../shared/data/headshots-dev \
        ../shared/data/fer2013 --people F01,F03,F05,M02,M04 [--swap]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PERSON = re.compile(r"^[AB]([FM]\d\d)")


def split_folder(photos: Path, people: set[str], dest: Path) -> tuple[Path, Path]:
    """Symlink folders DEST/{train,test}/<expression>/<photo>: PEOPLE's photos on the train side."""
    for expression_dir in sorted(d for d in photos.iterdir() if d.is_dir()):
        for photo in sorted(expression_dir.iterdir()):
            match = PERSON.match(photo.name)
            if not match:
                continue
            side = "train" if match.group(1) in people else "test"
            link = dest / side / expression_dir.name / photo.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(photo.resolve())
    return dest / "train", dest / "test"


def run(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "facexpr", *args], env=env, capture_output=True, text=True)
    if done.returncode not in (0, 2):
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def accuracy(args: list[str], env: dict[str, str]) -> float:
    return float(json.loads(run(["evaluate", *args, "--json"], env))["accuracy"])


def loop(photos: Path, data: str, people: set[str], work: Path, retrain_args: list[str]) -> dict:
    train_dir, test_dir = split_folder(photos, people, work / "photos")
    env = {**os.environ, "FACEXPR_DATA_DIR": str(work / "data")}
    for key in ("FACEXPR_MODEL", "FACEXPR_S3_BUCKET", "FACEXPR_MONGODB_URI"):
        env.pop(key, None)
    imported = run(["import-corrections", str(train_dir), "--group", PERSON.pattern], env)
    started = time.perf_counter()
    retrained = run(["retrain", "--data", data, "--out", "loop", "--photos-val", str(test_dir),
                     *retrain_args], env)
    wall = time.perf_counter() - started
    card = json.loads((work / "data" / "models" / "loop.json").read_text())
    model = str(work / "data" / "models" / "loop.keras")
    return {"people": sorted(people), "retrain_args": retrain_args, "import": imported.strip(),
            "retrain": retrained.strip(),
            "wall_s": round(wall, 1), "card_wall_s": card["wall_time_s"],
            "photos": {"base": accuracy([str(test_dir), "--faces", "detect"], env),
                       "retrained": accuracy([str(test_dir), "--faces", "detect", "--model", model], env)},
            "val": {"base": card["before"]["val"]["accuracy"], "retrained": card["after"]["val"]["accuracy"]},
            "heldout": card["comparison"]["heldout"], "guardrail": card["guardrail"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos")
    parser.add_argument("data")
    parser.add_argument("--people", default="F01,F03,F05,M02,M04")
    parser.add_argument("--swap", action="store_true", help="also run with the halves swapped")
    parser.add_argument("--only-swapped", action="store_true", help="run the swapped halves only")
    args, retrain_args = parser.parse_known_args()  # the rest goes to `retrain` (e.g. --share 0.3)
    photos = Path(args.photos)
    everyone = {m.group(1) for p in photos.glob("*/*") if (m := PERSON.match(p.name))}
    halves = [set(args.people.split(","))]
    if args.swap or args.only_swapped:
        halves.append(everyone - halves[0])
    if args.only_swapped:
        halves = halves[1:]
    for people in halves:
        with tempfile.TemporaryDirectory(prefix="facexpr-loop-") as work:
            print(json.dumps(loop(photos, args.data, people, Path(work), retrain_args), indent=2), flush=True)


if __name__ == "__main__":
    main()
