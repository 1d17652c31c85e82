"""Candidates for rule 4 (benchmarks/SELECTION.md) that move only a model's class prior.

    nice -n 19 .venv/bin/python -m benchmarks.prior_shift MODEL.keras --alpha 0.5 --alpha 1 \
        --out-dir /tmp/candp [--fer2013 ../shared/data/fer2013]

Fits seven biases b on FER2013 *train* (original labels; nothing from val or the photos): added to
MODEL's logits, its mean flip-averaged probability of each class over the train faces equals that
class's share of the train labels (iterative proportional fitting). For each ALPHA it writes
MODEL + ALPHA·b as a model of its own (`<name><letter>.keras`, `.tflite` and card, val measured the
way training measures it); the network is otherwise MODEL's, since a bias on the `logits` layer is
exactly a bias on the log-probabilities. The card's `prior_shift` section says what was added.
"""

from __future__ import annotations

import argparse
import string
from datetime import date
from pathlib import Path

import numpy as np

from benchmarks.run import SHARED_DATA
from facexpr.core.labels import EXPRESSIONS

ITERATIONS = 500


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def view_probabilities(network, images: np.ndarray) -> list[np.ndarray]:
    """(N, 7) probabilities for each crop and for its mirror image (the served flip average's views)."""
    x = images[..., None].astype(np.float32)
    return [network.predict(view, batch_size=512, verbose=0) for view in (x, x[:, :, ::-1])]


def fit_prior_bias(views: list[np.ndarray], prior: np.ndarray, iterations: int = ITERATIONS) -> np.ndarray:
    """VIEWS: per test-time view, (N, 7) probabilities. → b with mean_i mean_v softmax(log p + b) = PRIOR."""
    logs = [np.log(np.clip(p, 1e-12, None)) for p in views]
    bias = np.zeros(len(prior))
    for _ in range(iterations):
        mean = np.mean([softmax(lp + bias) for lp in logs], axis=0).mean(0)
        bias += np.log(prior / mean)
    return bias - bias.mean()


def main(argv: list[str] | None = None) -> int:
    from facexpr.learn.data import load_layout
    from facexpr.learn.evaluate import report
    from facexpr.model.classifier import Scores, load_network, read_card, save_model

    parser = argparse.ArgumentParser(prog="python -m benchmarks.prior_shift")
    parser.add_argument("model")
    parser.add_argument("--alpha", type=float, action="append", required=True)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--fer2013", default=str(SHARED_DATA / "fer2013"))
    args = parser.parse_args(argv)

    model = Path(args.model)
    network, card = load_network(model), read_card(model)
    train = load_layout(args.fer2013.rstrip("/") + "/train")
    val = load_layout(args.fer2013.rstrip("/") + "/val")
    views = view_probabilities(network, train.images)
    prior = np.bincount(train.labels, minlength=len(EXPRESSIONS)) / len(train.labels)
    bias = fit_prior_bias(views, prior)
    logits = network.get_layer("logits")
    kernel, base_bias = logits.get_weights()
    for letter, alpha in zip(string.ascii_lowercase, args.alpha, strict=False):
        name = f"{card.name}{letter}"
        logits.set_weights([kernel, base_bias + alpha * bias])
        val_report = report(val.labels, np.mean(view_probabilities(network, val.images), axis=0).argmax(1))
        card.name = name
        card.val = Scores.from_dict({**val_report, "test_time_augmentation": "horizontal flip average"})
        card.sections["prior_shift"] = {
            "base": model.stem, "alpha": alpha,
            "bias": dict(zip(EXPRESSIONS, np.round(alpha * bias, 4).tolist(), strict=True)),
            "fitted_on": f"{train.source} ({len(train)} faces, original labels)",
            "train_prior": dict(zip(EXPRESSIONS, np.round(prior, 4).tolist(), strict=True)),
            "how": "b added to the logits layer's bias so that the mean flip-averaged probability "
                   "of each class over the train faces equals its share of the train labels",
            "made": f"{date.today().isoformat()}, python -m benchmarks.prior_shift {model.name} "
                    f"--alpha {alpha}"}
        out = save_model(network, card, Path(args.out_dir) / name, probe=val.images[:512],
                         val=(val.images, val.labels))
        print(f"{out}: alpha {alpha}, val {val_report['accuracy']:.4f}, bias "
              + " ".join(f"{e} {alpha * b:+.2f}" for e, b in zip(EXPRESSIONS, bias, strict=True)))
        card = read_card(model)  # the next alpha starts from MODEL's own card
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
