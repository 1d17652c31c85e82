"""Settings from the environment, or from `.streamlit/secrets.toml` when the app passes them in.

The environment wins over secrets, so a deployment can override a checked-in default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEYS = ("FACEXPR_MODEL", "FACEXPR_DATA_DIR", "FACEXPR_S3_BUCKET", "FACEXPR_S3_PREFIX",
        "FACEXPR_TRAIN_DATA", "FACEXPR_RETRAIN_RECIPE",
        "FACEXPR_PHOTOS_VAL", "FACEXPR_MODEL_ADMINS", "FACEXPR_MONGODB_URI", "FACEXPR_MONGODB_DB",
        "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION")


@dataclass(frozen=True)
class Settings:
    model: str | None = None
    data_dir: Path = Path("data")
    s3_bucket: str | None = None
    s3_prefix: str = "relabeled/"
    mongodb_uri: str | None = None
    mongodb_db: str = "facexpr"
    train_data: str | None = None  # FER2013 layout (train/ + val/) the app's retrain replays and scores on
    retrain_recipe: str | None = None  # JSON overrides of the app's retrain recipe, e.g. {"epochs": 6}
    photos_val: str | None = None  # labelled photos <expression>/<image> (folder, s3://) retrains score
    # Who may retrain, promote, roll back or discard in the app (signed-in emails); empty: anyone
    model_admins: tuple[str, ...] = ()

    @property
    def relabeled_uri(self) -> str:
        """Where relabeled images live: the S3 bucket if configured, else the local folder."""
        if self.s3_bucket:
            return f"s3://{self.s3_bucket}/{self.s3_prefix}"
        return str(self.data_dir / "relabeled")


def load_settings(secrets: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
                  ) -> Settings:
    """Read settings; SECRETS (e.g. st.secrets) fill in what the environment leaves unset.

    AWS keys found only in secrets are exported to the environment so boto3's standard
    credential chain sees them; facexpr never stores or prints them.
    """
    env = os.environ if environ is None else environ
    secrets = secrets or {}

    def get(key: str) -> str | None:
        value = env.get(key)
        if value in (None, "") and key in secrets:
            value = str(secrets[key])
        return value or None

    if environ is None:
        for key in KEYS:
            if key.startswith("AWS_") and not os.environ.get(key) and key in secrets:
                os.environ[key] = str(secrets[key])
    prefix = get("FACEXPR_S3_PREFIX") or "relabeled/"
    return Settings(
        model=get("FACEXPR_MODEL"),
        data_dir=Path(get("FACEXPR_DATA_DIR") or "data"),
        s3_bucket=get("FACEXPR_S3_BUCKET"),
        s3_prefix=prefix if prefix.endswith("/") else prefix + "/",
        mongodb_uri=get("FACEXPR_MONGODB_URI"),
        mongodb_db=get("FACEXPR_MONGODB_DB") or "facexpr",
        train_data=get("FACEXPR_TRAIN_DATA"),
        retrain_recipe=get("FACEXPR_RETRAIN_RECIPE"),
        photos_val=get("FACEXPR_PHOTOS_VAL"),
        model_admins=tuple(sorted({a.strip().lower() for a in (get("FACEXPR_MODEL_ADMINS") or "").split(",")
                                   if a.strip()})),
    )
