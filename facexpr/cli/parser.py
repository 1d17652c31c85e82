"""The command line's parser and entry point: every command, its options and help, in one place."""

from __future__ import annotations

import argparse
import sys

from facexpr.cli.answering import cmd_evaluate, cmd_predict, cmd_serve
from facexpr.cli.common import fraction_arg, port_arg, positive_arg, share_arg, widths_arg
from facexpr.cli.learning import (
    cmd_export,
    cmd_import_corrections,
    cmd_import_fer2013,
    cmd_pack,
    cmd_retrain,
    cmd_sync,
    cmd_train,
    cmd_upload_dataset,
)
from facexpr.cli.versions import cmd_models, cmd_promote, cmd_rollback, cmd_shadow
from facexpr.core.errors import FacexprError
from facexpr.learn.augment import AUGMENTATIONS
from facexpr.model.classifier import PRECISIONS

DESCRIPTION = ("`facexpr …` (or `python -m facexpr …`): predict, evaluate, train, pack, retrain, export, "
               "models, promote, rollback, shadow, sync, import-corrections, import-fer2013, upload-dataset, "
               "serve.")


def build_parser() -> argparse.ArgumentParser:
    from facexpr.core.version import __version__

    parser = argparse.ArgumentParser(prog="facexpr", description=DESCRIPTION)
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
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="score a labelled folder DIR/<expression>/<image>")
    p.add_argument("dir", metavar="DIR",
                   help="folder with one subfolder per expression (e.g. DIR/happy/1.png)")
    p.add_argument("--model", default=None,
                   help="model file (default: FACEXPR_MODEL, else the newest card in models/)")
    p.add_argument("--faces", choices=["auto", "detect", "crop"], default="auto",
                   help="auto: images ≤ 64 px are ready crops, larger ones are searched; detect: always "
                        "search; crop: the whole image is the face")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="run the Keras model through TensorFlow instead of the served LiteRT file: float32 "
                        "reproduces the card's val; bfloat16 is ~5x faster on CPUs with AMX (README)")
    p.add_argument("--add-to-card", dest="card_section", metavar="SECTION", default=None,
                   help="also write the result into the model's card under SECTION (e.g. photos)")
    p.add_argument("--json", action="store_true", help="print the whole report as one JSON object")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("import-fer2013", help="Kaggle fer2013.csv → image layout (train/ val/ test/)")
    p.add_argument("csv", metavar="CSV", help="Kaggle's fer2013.csv (emotion, pixels, Usage)")
    p.add_argument("--out", required=True, help="local folder or s3://bucket/prefix")
    p.set_defaults(func=cmd_import_fer2013)

    p = sub.add_parser("upload-dataset", help="put a local image layout into S3")
    p.add_argument("dir", metavar="DIR", help="local image layout (<split>/<expression>/<image>)")
    p.add_argument("--to", required=True, help="s3://bucket/prefix (or another local folder)")
    p.set_defaults(func=cmd_upload_dataset)

    p = sub.add_parser("train", help="train a model from an image layout (+ relabeled images)")
    p.add_argument("--data", required=True, help="local folder or s3://bucket/prefix (with train/ and val/)")
    p.add_argument("--relabeled", default=None,
                   help="relabeled images to join (default: the configured store; '' for none)")
    p.add_argument("--epochs", type=int, default=None, help="epochs to train (default: the recipe's, 40)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed for weights, shuffling and augmentation (default: the recipe's, 1234)")
    p.add_argument("--widths", type=widths_arg, default=None,
                   help="channels per stage, e.g. 32,64,128,256,384 (default: the recipe's)")
    p.add_argument("--learning-rate", type=float, default=None, help="peak learning rate (default 0.05)")
    p.add_argument("--ferplus", default=None, metavar="CSV",
                   help="FER+ votes (ferplus_labels.csv, local or s3://) to soften the FER2013 targets")
    p.add_argument("--ferplus-weight", type=fraction_arg, default=0.3,
                   help="share of the FER+ votes in each target, below 0.5 (default 0.3)")
    p.add_argument("--teacher", default=None, metavar="MODEL",
                   help="soften the FER2013 targets by this model's answers on each face (distillation, "
                        "e.g. an average made by benchmarks/ensemble.py)")
    p.add_argument("--teacher-weight", type=share_arg, default=0.5,
                   help="the teacher's share of each target, between 0 and 1 (default 0.5)")
    p.add_argument("--init-from", default=None, metavar="MODEL",
                   help="start from this .keras model's weights (same --widths): a warm restart")
    p.add_argument("--logit-adjust", type=float, default=None, metavar="TAU",
                   help="logit-adjusted cross-entropy with the training class mix to the power TAU "
                        "(e.g. 1.0): the rare classes get a margin; default 0, plain cross-entropy")
    p.add_argument("--aligned-share", type=float, default=None, metavar="SHARE",
                   help="this share of each batch reads its faces aligned as photos are (BlazeFace + "
                        "face mesh onto the FER2013 template; found once per run and cached)")
    p.add_argument("--augment", choices=AUGMENTATIONS, default="standard",
                   help="photo: also photo-like framing, resolution, blur, JPEG and lighting (README)")
    p.add_argument("--precision", choices=["mixed_bfloat16", "float32"], default=None,
                   help="training compute (default: mixed_bfloat16 where the CPU has it, else float32)")
    p.add_argument("--loader-workers", type=int, default=1,
                   help="threads making augmented batches in the numpy pipeline (results do not change)")
    p.add_argument("--out", default="models/facexpr",
                   help="models/NAME: writes NAME.keras, NAME.tflite and NAME.json")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint of this --out")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("retrain", help="fine-tune the served model on the corrections (+ replayed data)")
    p.add_argument("--data", required=True, help="training data with train/ and val/ (local or s3://)")
    p.add_argument("--out", default=None, metavar="NAME",
                   help="the new version's name in the model store (default retrain-<UTC time>)")
    p.add_argument("--epochs", type=int, default=None, help="passes over the replay sample (default 4)")
    p.add_argument("--share", type=share_arg, default=None,
                   help="corrections' share of every batch (default 0.25)")
    p.add_argument("--replay", type=int, default=None, help="training images replayed (default 2800)")
    p.add_argument("--learning-rate", type=float, default=None, help="peak learning rate (default 0.005)")
    p.add_argument("--folds", type=int, default=None,
                   help="cross-fitting folds: each correction is scored by a fine-tune that never saw it "
                        "(default 3; costs folds + 1 fine-tunes)")
    p.add_argument("--seed", type=int, default=None, help="seed of the replay and the fine-tune (1234)")
    p.add_argument("--photos-val", default=None, metavar="DIR",
                   help="labelled photos DIR/<expression>/<image> (a folder or s3://) to score before and "
                        "after (default FACEXPR_PHOTOS_VAL)")
    p.add_argument("--model", default=None, help="start from this model instead of the served one")
    p.add_argument("--promote", action="store_true", help="serve the new version if it passes the guardrail")
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("export", help="write a model's LiteRT file MODEL.tflite, checked against it")
    p.add_argument("model", metavar="MODEL.keras", help="the Keras model; its card gets a `lite` section")
    p.add_argument("--val-data", default=None, metavar="DIR",
                   help="labelled crops DIR/<expression>/<image> (e.g. FER2013's val/): probe set and "
                        "accuracy check, recorded in the card")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("models", help="list the versions in the model store and which one is served")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("promote", help="serve a version from the model store")
    p.add_argument("name", metavar="NAME", help="the version's name (see `models`)")
    p.add_argument("--force", action="store_true", help="serve it even though it failed its guardrail")
    p.set_defaults(func=cmd_promote)
    p = sub.add_parser("rollback", help="serve the version served before the current one")
    p.set_defaults(func=cmd_rollback)
    p = sub.add_parser("shadow", help="let a version answer beside the served one, recorded but never shown "
                                      "(retrain sets its new version)")
    p.add_argument("name", metavar="NAME", nargs="?", help="the version (see `models`)")
    p.add_argument("--off", action="store_true", help="no version answers in shadow")
    p.set_defaults(func=cmd_shadow)

    p = sub.add_parser("import-corrections",
                       help="labelled photos DIR/<expression>/<image> → corrections, "
                            "as the Classify page stores them")
    p.add_argument("dir", metavar="DIR", help="labelled photos DIR/<expression>/<image>")
    p.add_argument("--source", default="import", help="history source of these answers (default import)")
    p.add_argument("--group", default=None, metavar="REGEX",
                   help="regex whose first group in the file name names the person (kept in one "
                        "cross-fitting fold by retrain), e.g. '^[AB](\\w\\d\\d)' for KDEF")
    p.add_argument("--model", default=None, help="model file (default: the served model)")
    p.set_defaults(func=cmd_import_corrections)

    p = sub.add_parser("pack", help="an image layout's train/ and val/ (+ FER+ votes) as one .npz")
    p.add_argument("--data", required=True, help="local folder or s3://bucket/prefix (with train/ and val/)")
    p.add_argument("--ferplus", default=None, metavar="CSV", help="also pack these FER+ votes")
    p.add_argument("--out", required=True, help="the .npz to write (train --data OUT.npz reads it)")
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("sync", help="deliver relabeled images waiting in the local outbox to the store")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("serve", help="the HTTP API (FastAPI + uvicorn); schema at /openapi.json")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=port_arg, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--workers", type=positive_arg, default=1,
                   help="worker processes, each with its own copy of the model (about one per 2 cores)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default info)")
    p.add_argument("--print-openapi", action="store_true", help="print the OpenAPI schema and exit")
    p.set_defaults(func=cmd_serve)
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
