"""Where the served model comes from: a local `.keras` file, or `s3://bucket/key.keras`.

A model in S3 (with its `.json` card and, when exported, its `.tflite` beside it) is downloaded once into
`FACEXPR_DATA_DIR/models/<bucket>/<key>` and served from there, so every replica of a deployment
serves the same file without baking it into an image. A copy whose size matches the object is
reused; a changed object (another size) is fetched again at the next start.
"""

from __future__ import annotations

import os
from pathlib import Path

from facexpr.core.config import Settings, load_settings
from facexpr.core.errors import FacexprError, ModelError, StoreError
from facexpr.storage.store import S3Store, atomic_write, parse_s3_uri


def local_model_path(model: str | os.PathLike | None, settings: Settings | None = None) -> Path | None:
    """MODEL as a local path (None stays None: the default model)."""
    if model is None or not str(model).startswith("s3://"):
        return None if model is None else Path(model)
    uri = str(model)
    try:
        bucket, key = parse_s3_uri(uri)
    except StoreError as exc:
        raise ModelError(f"FACEXPR_MODEL {exc}") from None
    if not key.endswith(".keras"):
        raise ModelError(f"FACEXPR_MODEL {uri} must name a .keras file (its .json card beside it).")
    folder, _, name = key.rpartition("/")
    store = S3Store(bucket, folder)
    local_dir = Path((settings or load_settings()).data_dir) / "models" / bucket / folder
    card = name[: -len(".keras")] + ".json"
    lite = name[: -len(".keras")] + ".tflite"
    try:
        sizes = {o.key: o.size for o in store.list_objects(name[: -len(".keras")])}
        if name not in sizes:
            raise ModelError(f"No model at {uri}: check FACEXPR_MODEL.")
        for wanted in (name, lite, card):  # the card last: it vouches for the .tflite
            target = local_dir / wanted
            if wanted in sizes and not (target.is_file() and target.stat().st_size == sizes[wanted]):
                atomic_write(target, store.get(wanted))  # whole or not at all: replicas may start together
    except ModelError:
        raise
    except FacexprError as exc:  # the store's errors, StoreUnavailable included
        raise ModelError(f"The model {uri} could not be fetched: {exc}") from exc
    except OSError as exc:
        raise ModelError(f"The model {uri} could not be kept under {local_dir}: "
                         f"{exc.strerror or exc}") from exc
    return local_dir / name
