"""The average of several models' probabilities as one candidate model (SELECTION.md, the teachers).

    .venv/bin/python -m benchmarks.ensemble --member A.keras --member B.keras --out /tmp/avg/avg-a-b \
        [--val-data ../shared/data/fer2013/val]

Writes OUT.keras (one network: the members side by side, their softmax outputs averaged), its
`.tflite` and a card, so `benchmarks.model_select` scores the average exactly as any candidate.
Flip averaging is linear, so the served file's flip average of the mean is the mean of the members'
flip averages. The members must cut faces the same way (their cards' `crop`). An average costs one
model call per member; it is scored as a teacher for one net to learn from, not served. With
--val-data its card gets `val` (flip-averaged, Keras), which a student's card then quotes.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from facexpr.model.classifier import Classifier, ModelCard, Scores, load_network, read_card, save_model


def average_network(members: list):
    """One Keras model: every member on the same input, their probabilities averaged."""
    import keras

    inputs = keras.Input(members[0].input_shape[1:], name="pixels")
    # Each member wrapped under its own name: the members share layer names (same build_network).
    outputs = [keras.Model(m.inputs, m.outputs[0], name=f"member{i}")(inputs) for i, m in enumerate(members)]
    return keras.Model(inputs, keras.layers.Average(name="probabilities")(outputs), name="facexpr_average")


def average_card(name: str, cards: list[ModelCard]) -> ModelCard:
    crops = {c.crop for c in cards}  # CropGeometry is frozen: equal crops are one
    if len(crops) != 1:
        raise SystemExit(f"The members cut faces differently ({', '.join(map(str, crops))}); "
                         "an average needs one crop.")
    members = [{"name": c.name, "val": c.val.accuracy} for c in cards]
    return ModelCard(name=name, trained_at=datetime.now(UTC), crop=cards[0].crop,
                     data={"members": [c.name for c in cards]},
                     sections={"recipe": {"kind": "the members' probabilities averaged", "members": members}})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--member", action="append", required=True, help="a member .keras (two or more)")
    parser.add_argument("--out", required=True, help="path of the average without suffix")
    parser.add_argument("--val-data", default=None, help="labelled crops (DIR/<expression>/…) for its val")
    args = parser.parse_args(argv)
    if len(args.member) < 2:
        parser.error("an average needs two or more --member")
    paths = [Path(p) for p in args.member]
    network = average_network([load_network(p) for p in paths])
    out = Path(args.out)
    card = average_card(out.name, [read_card(p) for p in paths])
    checks = {}
    if args.val_data:
        from facexpr.learn.data import load_layout
        from facexpr.learn.evaluate import report

        val = load_layout(args.val_data)
        card.val = Scores.from_dict(report(val.labels, Classifier(network).predict(val.images).argmax(1)))
        checks = {"probe": val.images[:512], "val": (val.images, val.labels)}  # as training checks its export
    keras_path = save_model(network, card, out, **checks)
    print(f"wrote {keras_path} (+ .tflite, .json) from {', '.join(p.name for p in paths)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
