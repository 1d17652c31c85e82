"""Measure the correction loop on the development headshots, as a team would run it (by hand).

People of one half are imported as corrections (`import-corrections`, both sessions, one group per
person), the served model is retrained on them (`retrain`, default recipe: cross-fitted by person)
and its guardrail decides on the corrections alone (no `--photos-val`); base and retrained are then
scored on the photos of the other half (`evaluate --faces detect`) — never the same person on both
sides — and on FER2013 val. `--shuffle` imports the same photos under shuffled labels (a seeded
permutation): a guardrail worth the name refuses that. Everything goes into a temporary
FACEXPR_DATA_DIR, never the repository.

    nice -n 19 .venv/bin/python -m benchmarks.retrain_loop ../shared/data/headshots-dev \
        ../shared/data/fer2013 --people F01,F03,F05,M02,M04 [--swap] [--shuffle]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PERSON = re.compile(r"^[AB]([FM]\d\d)")


def split_folder(photos: Path, people: set[str], dest: Path, shuffle: bool = False) -> tuple[Path, Path]:
    """Symlink folders DEST/{train,test}/<expression>/<photo>: PEOPLE's photos on the train side,
    under a seeded permutation of their labels with SHUFFLE (the test side keeps its own)."""
    links = []
    for expression_dir in sorted(d for d in photos.iterdir() if d.is_dir()):
        for photo in sorted(expression_dir.iterdir()):
            match = PERSON.match(photo.name)
            if match:
                links.append(("train" if match.group(1) in people else "test", expression_dir.name, photo))
    train_labels = [label for side, label, _ in links if side == "train"]
    if shuffle:
        random.Random(0).shuffle(train_labels)
    given = iter(train_labels)
    for side, label, photo in links:
        link = dest / side / (next(given) if side == "train" else label) / photo.name
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


def loop(photos: Path, data: str, people: set[str], work: Path, retrain_args: list[str],
         shuffle: bool = False) -> dict:
    train_dir, test_dir = split_folder(photos, people, work / "photos", shuffle)
    env = {**os.environ, "FACEXPR_DATA_DIR": str(work / "data")}
    for key in ("FACEXPR_MODEL", "FACEXPR_S3_BUCKET", "FACEXPR_MONGODB_URI"):
        env.pop(key, None)
    imported = run(["import-corrections", str(train_dir), "--group", PERSON.pattern], env)
    started = time.perf_counter()
    retrained = run(["retrain", "--data", data, "--out", "loop", *retrain_args], env)
    wall = time.perf_counter() - started
    card = json.loads((work / "data" / "models" / "loop.json").read_text())
    model = str(work / "data" / "models" / "loop.keras")
    return {"people": sorted(people), "shuffled_labels": shuffle, "retrain_args": retrain_args,
            "import": imported.strip(),
            "retrain": retrained.strip(),
            "wall_s": round(wall, 1), "card_wall_s": card["wall_time_s"],
            "photos": {"base": accuracy([str(test_dir), "--faces", "detect"], env),
                       "retrained": accuracy([str(test_dir), "--faces", "detect", "--model", model], env)},
            "val": {"base": card["before"]["val"]["accuracy"], "retrained": card["after"]["val"]["accuracy"]},
            "corrections_cross_fitted": card["comparison"]["corrections"],
            "cross_fitting": card["data"]["cross_fitting"], "guardrail": card["guardrail"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos")
    parser.add_argument("data")
    parser.add_argument("--people", default="F01,F03,F05,M02,M04")
    parser.add_argument("--swap", action="store_true", help="also run with the halves swapped")
    parser.add_argument("--only-swapped", action="store_true", help="run the swapped halves only")
    parser.add_argument("--shuffle", action="store_true",
                        help="also run each half with the corrections' labels shuffled")
    args, retrain_args = parser.parse_known_args()  # the rest goes to `retrain` (e.g. --share 0.3)
    photos = Path(args.photos)
    everyone = {m.group(1) for p in photos.glob("*/*") if (m := PERSON.match(p.name))}
    halves = [set(args.people.split(","))]
    if args.swap or args.only_swapped:
        halves.append(everyone - halves[0])
    if args.only_swapped:
        halves = halves[1:]
    for people in halves:
        for shuffle in (False, True) if args.shuffle else (False,):
            with tempfile.TemporaryDirectory(prefix="facexpr-loop-") as work:
                measured = loop(photos, args.data, people, Path(work), retrain_args, shuffle)
                print(json.dumps(measured, indent=2), flush=True)


if __name__ == "__main__":
    main()
