"""`facexpr …` (or `python -m facexpr …`): predict, evaluate, train, pack, retrain, models, promote,
rollback, sync, import-corrections, import-fer2013, upload-dataset, serve."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from facexpr.core.errors import FacexprError
from facexpr.learn.augment import AUGMENTATIONS
from facexpr.model.classifier import PRECISIONS
from facexpr.photo.imaging import PHOTO_SUFFIXES

IMAGE_SUFFIXES = set(PHOTO_SUFFIXES)  # what `predict DIR` takes from a folder


@contextmanager
def native_logs_held() -> Iterator[None]:
    """Hold what TensorFlow's C++ side writes to stderr while it starts (absl, oneDNN, XNNPACK
    notices a user has no use for); shown only if starting fails, where it may say why."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))


def _load(args: argparse.Namespace, precision: str = "float32"):
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)  # a deprecation notice from the TFLite converter
    with native_logs_held():
        from facexpr.model.classifier import load_classifier

        return load_classifier(_model_path(args), precision)


def _expand_images(paths: list[str]) -> list[str]:
    """PATHS with each folder replaced by the images directly in it (by name, sorted); a folder
    without any stays, to be answered with an error."""
    out = []
    for path in paths:
        p = Path(path)
        found = sorted(str(f) for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                       and not f.name.startswith(".")) if p.is_dir() else []
        out.extend(found or [path])
    return out


def _read_image(path: str) -> bytes:
    from facexpr.core.errors import ImageError
    from facexpr.photo.imaging import read_image_file

    if Path(path).is_dir():  # _expand_images left it: nothing to classify in it
        raise ImageError(f"is a folder with no images in it ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    return read_image_file(path)


def _model_path(args: argparse.Namespace) -> str | None:
    """--model, else what the app serves: FACEXPR_MODEL, the registry's version, the shipped model."""
    from facexpr.core.config import load_settings
    from facexpr.model.registry import served_model_path

    return args.model or served_model_path(load_settings())


def _cmd_predict(args: argparse.Namespace) -> int:
    from facexpr.model.predict import predict_image

    images = _expand_images(args.images)
    classifier = _load(args)
    any_bad = False
    answered = []
    for path in images:
        try:
            prediction = predict_image(_read_image(path), classifier, args.faces)
            answered.append(prediction)
            result = {"path": path, **prediction.to_dict()}
        except FacexprError as exc:
            any_bad = True
            result = {"path": path, "error": str(exc)}
        if args.json:
            print(json.dumps(result), flush=True)
        elif "error" in result:
            print(f"{path}: error: {result['error']}", flush=True)
        elif not result["faces"]:
            print(f"{path}: no face found ({result['latency_ms']['total']:.0f} ms)", flush=True)
        else:
            answers = ", ".join(f"{f['expression']} {f['confidence']:.0%} at {f['box']}"
                                for f in result["faces"])
            print(f"{path}: {answers} ({result['latency_ms']['total']:.0f} ms)", flush=True)
    if args.record:
        from facexpr.core.config import load_settings
        from facexpr.storage.history import open_history, record_batch_safely

        warning = record_batch_safely(lambda: open_history(load_settings()), answered, "cli")
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    return 2 if any_bad else 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from facexpr.learn.evaluate import evaluate_dir
    from facexpr.model.classifier import add_to_card

    classifier = _load(args, args.precision)
    result = evaluate_dir(Path(args.dir), classifier, args.faces)
    if args.card_section:
        command = " ".join(["python -m facexpr evaluate", args.dir, "--faces", args.faces]
                           + (["--precision", args.precision] if args.precision != "float32" else []))
        add_to_card(classifier.path, args.card_section, {"source": args.dir, "command": command, **result})
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['n']} images, accuracy {result['accuracy']:.4f}, macro F1 {result['macro_f1']:.4f}, "
              f"faces found {result['faces_found']}/{result['n']}")
        _print_per_class(result["per_class"])
        _print_confusion(result["confusion"])
    return 0


def _print_confusion(matrix: list[list[int]]) -> None:
    from facexpr.core.labels import EXPRESSIONS

    names = [e[:8] for e in EXPRESSIONS]
    print("confusion (rows: true expression, columns: predicted)")
    print(" " * 11 + "".join(f"{n:>9s}" for n in names))
    for name, row in zip(EXPRESSIONS, matrix, strict=True):
        print(f"  {name:9s}" + "".join(f"{v:9d}" for v in row))


def _print_per_class(per_class: dict[str, dict[str, float]]) -> None:
    for name, c in per_class.items():
        if not c.get("support", 1):
            continue  # not in the folder: no recall or F1 (answers of it show in the confusion)
        print(f"  {name:9s} precision {c['precision']:.3f}  recall {c['recall']:.3f}  "
              f"f1 {c['f1']:.3f}  support {c['support']}")


def _cmd_import_fer2013(args: argparse.Namespace) -> int:
    from facexpr.learn.data import import_fer2013

    counts = import_fer2013(args.csv, args.out)
    for split, per_class in counts.items():
        listing = "  ".join(f"{k} {v}" for k, v in per_class.items())
        print(f"{split}: {sum(per_class.values())} images  {listing}")
    return 0


def _cmd_upload_dataset(args: argparse.Namespace) -> int:
    from facexpr.learn.data import upload_dataset

    counts = upload_dataset(args.dir, args.to)
    print(f"uploaded {sum(counts.values())} images to {args.to}  "
          + "  ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"expected positive channel counts like 32,64,128, got {text!r}")
    return widths


def _fraction(text: str) -> float:
    """A weight in [0, 0.5): above that the FER+ votes, not the FER2013 label, would decide the target."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 0.5:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to below 0.5, got {text!r}")
    return value


def _cmd_train(args: argparse.Namespace) -> int:
    from facexpr.core.config import load_settings
    from facexpr.learn.train import Recipe, train

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
    if args.precision is not None:
        recipe.precision = args.precision
    recipe.init_from = args.init_from
    recipe.augment = args.augment
    relabeled = args.relabeled if args.relabeled is not None else load_settings().relabeled_uri
    card = train(args.data, args.out, relabeled_uri=relabeled or None, recipe=recipe, resume=args.resume,
                 loader_workers=args.loader_workers)
    val = card.val
    print(f"\nWrote {args.out}.keras and {args.out}.json")
    print(f"val accuracy {val.accuracy:.4f}  macro F1 {val.macro_f1:.4f}  (n={val.n}, "
          f"{card.epochs} epochs, {card.wall_time_s:.0f} s)")
    _print_per_class(val.per_class)
    return 0


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1 (exclusive), got {text!r}")
    return value


def _cmd_retrain(args: argparse.Namespace) -> int:
    from facexpr.core.config import load_settings
    from facexpr.learn.retrain import RetrainRecipe, retrain
    from facexpr.model.registry import ModelRegistry

    recipe = RetrainRecipe()
    for option in ("epochs", "share", "replay", "seed", "learning_rate", "heldout"):
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

    result = retrain(settings, args.data, args.out, recipe, photos_val=args.photos_val, base_path=args.model,
                     progress=progress)
    name = registry.add(result.keras_path)
    card = result.record
    print(f"Wrote {name} to the model store {registry.uri} (base {card['base']['name']}, "
          f"{sum(card['data']['corrections']['counts'].values())} corrections, replay "
          f"{card['data']['replay']['n']}, {card['wall_time_s']:.0f} s)")
    print(_before_after(card))
    verdict = card["guardrail"]
    print(("PASSED" if verdict["passed"] else "FAILED") + f" the guardrail: {verdict['reason']}")
    for rule in verdict["rules"]:
        print(f"  [{'x' if rule['passed'] else ' '}] {rule['rule']}: {rule['why']}")
    if args.promote and verdict["passed"]:
        registry.promote(name)
        print(f"Promoted: {name} is now served.")
    elif verdict["passed"]:
        print(f"Serve it with `python -m facexpr promote {name}`.")
    return 0


def _before_after(card: dict) -> str:
    rows = [("FER2013 val", "val"), ("held-out corrections", "heldout"), ("photos", "photos")]
    lines = [f"{'':24s}{'before':>8s}{'after':>8s}{'n':>7s}"]
    for title, key in rows:
        if key in card["before"]:
            b, a = card["before"][key], card["after"][key]
            fmt = lambda v: f"{v:8.4f}" if v is not None else f"{'-':>8s}"  # noqa: E731
            lines.append(f"{title:24s}{fmt(b['accuracy'] if b['n'] else None)}"
                         f"{fmt(a['accuracy'] if a['n'] else None)}{b['n']:7d}")
    return "\n".join(lines)


def _cmd_models(args: argparse.Namespace) -> int:
    from facexpr.core.config import load_settings
    from facexpr.model.registry import ModelRegistry

    settings = load_settings()
    registry = ModelRegistry(settings)
    versions = registry.versions()
    if settings.model:
        print(f"FACEXPR_MODEL={settings.model} overrides the registry in this environment.")
    if not versions:
        print(f"The model store {registry.uri} is empty: the shipped model in models/ is served.")
        return 0
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else "-"  # noqa: E731
    print(f"{'name':32s} {'base':20s} {'created':26s} {'val':>7s} {'held-out':>8s} guardrail served")
    for v in versions:
        verdict = {True: "passed", False: "failed", None: "-"}[v.guardrail]
        print(f"{v.name:32s} {v.base or '-':20s} {v.created or '-':26s} {fmt(v.val_accuracy):>7s} "
              f"{fmt(v.heldout_accuracy):>8s} {verdict:9s} {'yes' if v.served else ''}")
    if registry.served() is None:
        print("None is served: the shipped model in models/ answers.")
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from facexpr.core.config import load_settings
    from facexpr.model.registry import ModelRegistry

    state = ModelRegistry(load_settings()).promote(args.name, force=args.force)
    print(f"{state.served} is now served.")
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    from facexpr.core.config import load_settings
    from facexpr.model.registry import ModelRegistry

    state = ModelRegistry(load_settings()).rollback()
    print(f"{state.served} is now served." if state.served else "The shipped model in models/ is now served.")
    return 0


def _cmd_import_corrections(args: argparse.Namespace) -> int:
    from facexpr.core.config import load_settings
    from facexpr.learn.corrections import import_corrections
    from facexpr.model.classifier import load_classifier
    from facexpr.storage.history import SOURCES, open_history

    if args.source not in SOURCES:
        raise FacexprError(f"Unknown source {args.source!r}: use one of {', '.join(SOURCES)}.")
    settings = load_settings()
    classifier = load_classifier(_model_path(args))
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


def _cmd_pack(args: argparse.Namespace) -> int:
    from facexpr.learn.data import pack_dataset

    counts = pack_dataset(args.data, args.out, args.ferplus)
    size = Path(args.out).stat().st_size / 2**20
    print(f"Wrote {args.out} ({size:.1f} MiB): " + "  ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def _cmd_sync(args: argparse.Namespace) -> int:
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


def _cmd_serve(args: argparse.Namespace) -> int:
    if args.print_openapi:
        from facexpr.serve.api import openapi_json

        print(openapi_json())
        return 0
    import uvicorn

    # The factory runs in each worker process: every worker loads the model once at start-up.
    uvicorn.run("facexpr.serve.api:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=args.log_level, timeout_graceful_shutdown=10)
    return 0


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    from facexpr import __version__

    parser = argparse.ArgumentParser(prog="facexpr", description=__doc__)
    parser.add_argument("--version", action="version", version=f"facexpr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("predict", help="classify photos or face crops")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, or folders: every image directly in a folder is classified")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--faces", choices=["auto", "detect", "crop"], default="auto",
                   help="auto: images ≤ 64 px are ready crops, larger ones are searched for faces")
    p.add_argument("--model", default=None,
                   help="model file (default: FACEXPR_MODEL, else the newest card in models/)")
    p.add_argument("--no-record", dest="record", action="store_false",
                   help="do not add the answers to the prediction history (recorded with source=cli)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("evaluate", help="score a labelled folder DIR/<expression>/<image>")
    p.add_argument("dir", metavar="DIR",
                   help="folder with one subfolder per expression (e.g. DIR/happy/1.png)")
    p.add_argument("--model", default=None,
                   help="model file (default: FACEXPR_MODEL, else the newest card in models/)")
    p.add_argument("--faces", choices=["auto", "detect", "crop"], default="auto",
                   help="auto: images ≤ 64 px are ready crops, larger ones are searched; detect: always "
                        "search; crop: the whole image is the face")
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="bfloat16: ~5x faster on CPUs with AMX, probabilities within ~2e-2 (README)")
    p.add_argument("--add-to-card", dest="card_section", metavar="SECTION", default=None,
                   help="also write the result into the model's card under SECTION (e.g. photos)")
    p.add_argument("--json", action="store_true", help="print the whole report as one JSON object")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("import-fer2013", help="Kaggle fer2013.csv → image layout (train/ val/ test/)")
    p.add_argument("csv", metavar="CSV", help="Kaggle's fer2013.csv (emotion, pixels, Usage)")
    p.add_argument("--out", required=True, help="local folder or s3://bucket/prefix")
    p.set_defaults(func=_cmd_import_fer2013)

    p = sub.add_parser("upload-dataset", help="put a local image layout into S3")
    p.add_argument("dir", metavar="DIR", help="local image layout (<split>/<expression>/<image>)")
    p.add_argument("--to", required=True, help="s3://bucket/prefix (or another local folder)")
    p.set_defaults(func=_cmd_upload_dataset)

    p = sub.add_parser("train", help="train a model from an image layout (+ relabeled images)")
    p.add_argument("--data", required=True, help="local folder or s3://bucket/prefix (with train/ and val/)")
    p.add_argument("--relabeled", default=None,
                   help="relabeled images to join (default: the configured store; '' for none)")
    p.add_argument("--epochs", type=int, default=None, help="epochs to train (default: the recipe's, 40)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed for weights, shuffling and augmentation (default: the recipe's, 1234)")
    p.add_argument("--widths", type=_widths, default=None,
                   help="channels per stage, e.g. 32,64,128,256,384 (default: the recipe's)")
    p.add_argument("--learning-rate", type=float, default=None, help="peak learning rate (default 0.05)")
    p.add_argument("--ferplus", default=None, metavar="CSV",
                   help="FER+ votes (ferplus_labels.csv, local or s3://) to soften the FER2013 targets")
    p.add_argument("--ferplus-weight", type=_fraction, default=0.3,
                   help="share of the FER+ votes in each target, below 0.5 (default 0.3)")
    p.add_argument("--init-from", default=None, metavar="MODEL",
                   help="start from this .keras model's weights (same --widths): a warm restart")
    p.add_argument("--augment", choices=AUGMENTATIONS, default="standard",
                   help="photo: also photo-like framing, resolution, blur, JPEG and lighting (README)")
    p.add_argument("--precision", choices=["mixed_bfloat16", "float32"], default=None,
                   help="training compute (default: mixed_bfloat16 where the CPU has it, else float32)")
    p.add_argument("--loader-workers", type=int, default=1,
                   help="threads making augmented batches in the numpy pipeline (results do not change)")
    p.add_argument("--out", default="models/facexpr", help="models/NAME: writes NAME.keras and NAME.json")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint of this --out")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("retrain", help="fine-tune the served model on the corrections (+ replayed data)")
    p.add_argument("--data", required=True, help="training data with train/ and val/ (local or s3://)")
    p.add_argument("--out", default=None, metavar="NAME",
                   help="the new version's name in the model store (default retrain-<UTC time>)")
    p.add_argument("--epochs", type=int, default=None, help="passes over the replay sample (default 4)")
    p.add_argument("--share", type=_share, default=None,
                   help="corrections' share of every batch (default 0.25)")
    p.add_argument("--replay", type=int, default=None, help="training images replayed (default 2800)")
    p.add_argument("--learning-rate", type=float, default=None, help="peak learning rate (default 0.005)")
    p.add_argument("--heldout", type=float, default=None,
                   help="fraction of correction groups held out to test on (default 0.2)")
    p.add_argument("--seed", type=int, default=None, help="seed of the replay and the fine-tune (1234)")
    p.add_argument("--photos-val", default=None, metavar="DIR",
                   help="labelled photos DIR/<expression>/<image> to score before and after")
    p.add_argument("--model", default=None, help="start from this model instead of the served one")
    p.add_argument("--promote", action="store_true", help="serve the new version if it passes the guardrail")
    p.set_defaults(func=_cmd_retrain)

    p = sub.add_parser("models", help="list the versions in the model store and which one is served")
    p.set_defaults(func=_cmd_models)
    p = sub.add_parser("promote", help="serve a version from the model store")
    p.add_argument("name", metavar="NAME", help="the version's name (see `models`)")
    p.add_argument("--force", action="store_true", help="serve it even though it failed its guardrail")
    p.set_defaults(func=_cmd_promote)
    p = sub.add_parser("rollback", help="serve the version served before the current one")
    p.set_defaults(func=_cmd_rollback)

    p = sub.add_parser("import-corrections",
                       help="labelled photos DIR/<expression>/<image> → corrections, "
                            "as the Classify page stores them")
    p.add_argument("dir", metavar="DIR", help="labelled photos DIR/<expression>/<image>")
    p.add_argument("--source", default="import", help="history source of these answers (default import)")
    p.add_argument("--group", default=None, metavar="REGEX",
                   help="regex whose first group in the file name names the person (kept together "
                        "by retrain's held-out split), e.g. '^[AB](\\w\\d\\d)' for KDEF")
    p.add_argument("--model", default=None, help="model file (default: the served model)")
    p.set_defaults(func=_cmd_import_corrections)

    p = sub.add_parser("pack", help="an image layout's train/ and val/ (+ FER+ votes) as one .npz")
    p.add_argument("--data", required=True, help="local folder or s3://bucket/prefix (with train/ and val/)")
    p.add_argument("--ferplus", default=None, metavar="CSV", help="also pack these FER+ votes")
    p.add_argument("--out", required=True, help="the .npz to write (train --data OUT.npz reads it)")
    p.set_defaults(func=_cmd_pack)

    p = sub.add_parser("sync", help="deliver relabeled images waiting in the local outbox to the store")
    p.set_defaults(func=_cmd_sync)

    p = sub.add_parser("serve", help="the HTTP API (FastAPI + uvicorn); schema at /openapi.json")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=_port, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--workers", type=_positive, default=1,
                   help="worker processes, each with its own copy of the model (about one per 2 cores)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default info)")
    p.add_argument("--print-openapi", action="store_true", help="print the OpenAPI schema and exit")
    p.set_defaults(func=_cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FacexprError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

