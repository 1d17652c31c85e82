"""The commands over the model registry: `models`, `promote`, `rollback`, `shadow`."""

from __future__ import annotations

import argparse


def cmd_models(args: argparse.Namespace) -> int:
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
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else "—"  # noqa: E731
    shadow = registry.state().shadow
    print(f"{'name':32s} {'base':20s} {'created':26s} {'val':>7s} {'corrections':>11s} guardrail served")
    for v in versions:
        verdict = {True: "passed", False: "failed", None: "-"}[v.guardrail]
        print(f"{v.name:32s} {v.base or '-':20s} {v.created or '-':26s} {fmt(v.val_accuracy):>7s} "
              f"{fmt(v.corrections_accuracy):>11s} {verdict:9s} "
              f"{'yes' if v.served else 'shadow' if v.name == shadow else ''}")
    if registry.served() is None:
        print("None is served: the shipped model in models/ answers.")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from facexpr.core.config import load_settings
    from facexpr.model.registry import ModelRegistry

    state = ModelRegistry(load_settings()).promote(args.name, force=args.force)
    print(f"{state.served} is now served.")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from facexpr.core.config import load_settings
    from facexpr.model.registry import ModelRegistry

    state = ModelRegistry(load_settings()).rollback()
    print(f"{state.served} is now served." if state.served else "The shipped model in models/ is now served.")
    return 0


def cmd_shadow(args: argparse.Namespace) -> int:
    from facexpr.core.config import load_settings
    from facexpr.model.registry import ModelRegistry

    registry = ModelRegistry(load_settings())
    # No name and no --off: say which version is in shadow, change nothing.
    state = registry.state()
    if args.off or args.name:
        state = registry.set_shadow(None if args.off else args.name)
    print(f"{state.shadow} answers in shadow beside the served model (recorded, never shown)."
          if state.shadow else "No candidate answers in shadow.")
    return 0
