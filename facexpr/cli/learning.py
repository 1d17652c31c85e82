"""The commands that make and feed models: `train`, `retrain`, `export`, `import-corrections`, `pack`,
`import-fer2013`, `upload-dataset` and `sync`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facexpr.cli.common import model_path, print_per_class
from facexpr.core.errors import FacexprError
from facexpr.core.extras import require


def cmd_train(args: argparse.Namespace) -> int:
    from facexpr.core.config import load_settings
    from facexpr.learn.train import Recipe, train

    require("train", "Training", modules=("keras",))  # Keras on any backend, JAX included
    recipe = Recipe()
    if args.epochs is not None:
        recipe.epochs = args.epochs
    if args.seed is not None:
        recipe.seed = args.seed
    if args.widths is not None:
        recipe.widths = args.widths
    if args.learning_rate is not None:
        recipe.learning_rate = args.learning_rate
    if args.ferplus:
        recipe.ferplus, recipe.ferplus_weight = args.ferplus, args.ferplus_weight
    if args.teacher:
        recipe.teacher, recipe.teacher_weight = args.teacher, args.teacher_weight
    if args.precision is not None:
        recipe.precision = args.precision
    if args.logit_adjust is not None:
        recipe.logit_adjust = args.logit_adjust
    if args.aligned_share is not None:
        recipe.aligned_share = args.aligned_share
    recipe.init_from = args.init_from
    recipe.augment = args.augment
    relabeled = args.relabeled if args.relabeled is not None else load_settings().relabeled_uri
    card = train(args.data, args.out, relabeled_uri=relabeled or None, recipe=recipe, resume=args.resume,
                 loader_workers=args.loader_workers)
    val = card.val
    lite = "" if "error" in (card.sections.get("lite") or {}) else f", {args.out}.tflite"
    print(f"\nWrote {args.out}.keras{lite} and {args.out}.json")
    print(f"val accuracy {val.accuracy:.4f}  macro F1 {val.macro_f1:.4f}  (n={val.n}, "
          f"{card.epochs} epochs, {card.wall_time_s:.0f} s)")
    print_per_class(val.per_class)
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from facexpr.core.config import load_settings
    from facexpr.learn.retrain import RetrainRecipe, retrain
    from facexpr.model.registry import ModelRegistry

    require("train", "Retraining")
    recipe = RetrainRecipe()
    for option in ("epochs", "share", "replay", "seed", "learning_rate", "folds"):
        if getattr(args, option) is not None:
            setattr(recipe, option, getattr(args, option))
    settings = load_settings()
    registry = ModelRegistry(settings)  # read first: a wrong bucket or a taken name fails before training
    if args.out and args.out in registry.names():
        raise FacexprError(f"The model store {registry.uri} already has a version named {args.out!r}.")
    last = [-1]

    def progress(fraction: float, message: str) -> None:
        percent = int(fraction * 100)
        if percent != last[0]:
            last[0] = percent
            print(f"\r[{percent:3d}%] {message:<60}", end="\n" if fraction >= 1 else "", file=sys.stderr,
                  flush=True)

    result = retrain(settings, args.data, args.out, recipe, photos_val=args.photos_val or settings.photos_val,
                     base_path=args.model, progress=progress)
    name = registry.add(result.keras_path)
    card = result.record
    print(f"Wrote {name} to the model store {registry.uri} (base {card['base']['name']}, "
          f"{sum(card['data']['corrections']['counts'].values())} corrections, replay "
          f"{card['data']['replay']['n']}, {card['wall_time_s']:.0f} s)")
    print(before_after(card))
    verdict = card["guardrail"]
    print(("PASSED" if verdict["passed"] else "FAILED") + f" the guardrail: {verdict['reason']}")
    for rule in verdict["rules"]:
        print(f"  [{'x' if rule['passed'] else ' '}] {rule['rule']}: {rule['why']}")
    if args.promote and verdict["passed"]:
        registry.promote(name)
        print(f"Promoted: {name} is now served.")
        return 0
    registry.set_shadow(name)
    print(f"{name} now answers in shadow beside the served model (recorded, never shown); the Learn page "
          "tallies people's answers where the two disagree.")
    if verdict["passed"]:
        print(f"Serve it with `python -m facexpr promote {name}`.")
    return 0


def before_after(card: dict) -> str:
    """The retrain's before/after table as the Learn page shows it (learn.retrain.before_after_rows)."""
    from facexpr.learn.retrain import before_after_rows

    rows = before_after_rows(card)
    if not rows:
        return ""
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in rows[0]}

    def line(cells: dict) -> str:  # the first column (the test set) left-aligned, figures right
        return "  ".join(str(cells[k]).rjust(w) if i else str(cells[k]).ljust(w)
                         for i, (k, w) in enumerate(widths.items()))
    return "\n".join([line({k: k for k in widths}), *map(line, rows)])


def cmd_export(args: argparse.Namespace) -> int:
    """MODEL.keras → MODEL.tflite, checked against it; the card's `lite` section records the check."""
    from facexpr.learn.data import load_layout
    from facexpr.model.classifier import load_network, read_card, write_card
    from facexpr.model.export import export_lite

    require("train", "Exporting a model")
    path = Path(args.model)
    if path.suffix != ".keras" or not path.is_file():
        raise FacexprError(f"{path} is not a .keras model file.")
    card = read_card(path)  # a broken card fails before the slow part
    val = None
    if args.val_data:
        data = load_layout(args.val_data)
        val = (data.images, data.labels)
    section = export_lite(load_network(path), path, None if val is None else val[0][:512], val)
    if args.val_data:
        section["val"]["source"] = args.val_data
    card.sections["lite"] = section
    write_card(path, card)
    probe = section["probe"]
    print(f"Wrote {path.with_suffix('.tflite')} ({section['bytes'] / 1e6:.1f} MB, {section['quantization']})")
    print(f"probe: {probe['n']} crops, max |Δp| {probe['max_abs_diff']:.4f}, "
          f"top-1 agreement {probe['top1_agreement']:.1%}")
    if val is not None:
        print(f"val: n={section['val']['n']}, accuracy Keras {section['val']['keras_accuracy']:.4f}, "
              f"LiteRT {section['val']['lite_accuracy']:.4f}")
    return 0


def cmd_import_corrections(args: argparse.Namespace) -> int:
    from facexpr.core.config import load_settings
    from facexpr.learn.corrections import import_corrections
    from facexpr.model.classifier import load_classifier
    from facexpr.storage.history import SOURCES, open_history

    if args.source not in SOURCES:
        raise FacexprError(f"Unknown source {args.source!r}: use one of {', '.join(SOURCES)}.")
    settings = load_settings()
    classifier = load_classifier(model_path(args))
    report = import_corrections(settings, Path(args.dir), classifier, lambda: open_history(settings),
                                source=args.source, group_pattern=args.group)
    print(f"imported {report.imported} ({report.confirmed} confirmed, {report.corrected} corrected"
          + (f", {report.queued} waiting in the outbox" if report.queued else "")
          + f"); skipped {report.skipped}: no face {len(report.no_face)}, several faces "
          f"{len(report.several_faces)}, unreadable {len(report.unreadable)}")
    print("  " + "  ".join(f"{k} {v}" for k, v in report.per_class.items()))
    for name in report.no_face:
        print(f"  skipped {name}: no face found", file=sys.stderr)
    for name in report.several_faces:
        print(f"  skipped {name}: several faces (which one is labelled is unknown)", file=sys.stderr)
    for name, why in report.unreadable:
        print(f"  skipped {name}: {why}", file=sys.stderr)
    for warning in report.history_warnings:
        print(f"  warning: {warning}", file=sys.stderr)
    return 0 if not report.unreadable else 2


def cmd_pack(args: argparse.Namespace) -> int:
    from facexpr.learn.data import pack_dataset

    counts = pack_dataset(args.data, args.out, args.ferplus)
    size = Path(args.out).stat().st_size / 2**20
    print(f"Wrote {args.out} ({size:.1f} MiB): " + "  ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def cmd_import_fer2013(args: argparse.Namespace) -> int:
    from facexpr.learn.data import import_fer2013

    counts = import_fer2013(args.csv, args.out)
    for split, per_class in counts.items():
        listing = "  ".join(f"{k} {v}" for k, v in per_class.items())
        print(f"{split}: {sum(per_class.values())} images  {listing}")
    return 0


def cmd_upload_dataset(args: argparse.Namespace) -> int:
    from facexpr.learn.data import upload_dataset

    counts = upload_dataset(args.dir, args.to)
    print(f"uploaded {sum(counts.values())} images to {args.to}  "
          + "  ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from facexpr.core.config import load_settings
    from facexpr.storage.relabel import flush_outbox, outbox_for

    settings = load_settings()
    outbox = outbox_for(settings)
    waiting = len(outbox)
    if not waiting:
        print(f"Outbox {outbox.root} is empty: nothing to sync.")
        return 0
    print(f"Outbox {outbox.root}: {waiting} item(s) for {settings.relabeled_uri} (and its originals)")
    report = flush_outbox(settings)
    print(f"sent {report.sent}, failed {report.failed}, remaining {report.remaining}")
    for where, error in report.errors.items():
        print(f"  {where}: {error}", file=sys.stderr)
    return 0 if report.ok else 2
