"""Tiny training data made on the fly: an image layout, FER+ votes, a recipe that trains in seconds."""

import numpy as np

from facexpr.core.labels import EXPRESSIONS
from facexpr.learn.train import Recipe
from tests.conftest import image_bytes


def make_layout(root, per_class: int, seed: int = 0) -> None:
    """Each class a different brightness, so even a tiny net can learn something."""
    rng = np.random.default_rng(seed)
    for i, name in enumerate(EXPRESSIONS):
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            pixels = np.clip(i * 36 + rng.normal(0, 8, (48, 48)), 0, 255).astype(np.uint8)
            (root / name / f"{j:03d}.png").write_bytes(image_bytes(pixels))


FERPLUS_HEADER = "index,usage,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"


def ferplus_csv(path, rows: dict[int, dict[str, int]]) -> str:
    """A ferplus_labels.csv with the given votes per row (all other counts 0)."""
    columns = FERPLUS_HEADER.split(",")[2:]
    lines = [FERPLUS_HEADER] + [f"{i},Training," + ",".join(str(votes.get(c, 0)) for c in columns)
                                for i, votes in rows.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def tiny_recipe(**kw) -> Recipe:
    return Recipe(**{"epochs": 2, "batch_size": 16, "widths": (4, 8), "precision": "float32", **kw})
