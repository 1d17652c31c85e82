"""The commands that answer: `predict`, `evaluate` and `serve` (the HTTP API)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facexpr.cli.common import expand_images, load_model_for, print_confusion, print_per_class, read_image
from facexpr.core.errors import FacexprError


def cmd_predict(args: argparse.Namespace) -> int:
    from facexpr.model.predict import predict_image

    images = expand_images(args.images)
    classifier = load_model_for(args)
    any_bad = False
    answered = []
    for path in images:
        try:
            prediction = predict_image(read_image(path), classifier, args.faces)
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
            answers = ", ".join(f"{f['expression']} {f['confidence']:.0%}"
                                + (f" (unsure: or {f['runner_up']}?)" if f["unsure"] else "")
                                + f" at {f['box']}" for f in result["faces"])
            print(f"{path}: {answers} ({result['latency_ms']['total']:.0f} ms)", flush=True)
    if args.record:
        from facexpr.core.config import load_settings
        from facexpr.storage.history import open_history, record_batch_safely

        _, warning = record_batch_safely(lambda: open_history(load_settings()), answered, "cli")
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    return 2 if any_bad else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from facexpr.learn.evaluate import evaluate_dir
    from facexpr.model.classifier import add_to_card

    classifier = load_model_for(args, args.precision)
    result = {**evaluate_dir(Path(args.dir), classifier, args.faces), "backend": classifier.backend}
    if args.card_section:
        command = " ".join(["python -m facexpr evaluate", args.dir, "--faces", args.faces]
                           + (["--precision", args.precision] if args.precision else []))
        add_to_card(classifier.path, args.card_section, {"source": args.dir, "command": command, **result})
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['n']} images, accuracy {result['accuracy']:.4f}, macro F1 {result['macro_f1']:.4f}, "
              f"faces found {result['faces_found']}/{result['n']}"
              + (f", ready crops {result['ready_crops']}" if result["ready_crops"] else "")
              + f" (model: {classifier.version}, {classifier.backend})")
        fallback = result["whole_image_fallback"]
        if fallback["images"]:
            print(f"with the whole image read where no face was found ({fallback['images']} images): "
                  f"accuracy {fallback['accuracy']:.4f}")
        print_per_class(result["per_class"])
        print_confusion(result["confusion"])
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    if args.print_openapi:
        from facexpr.serve.api import openapi_json

        print(openapi_json())
        return 0
    from facexpr.serve.api.run import serve

    serve(args.host, args.port, args.workers, args.log_level)
    return 0
