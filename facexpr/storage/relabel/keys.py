"""Where a person's answer goes: the two store roles, their roots, and the keys inside them.

The crop goes to the relabeled root (`<label>/<sha256 of the PNG>.png`, the training layout);
the upload it came from goes once to a sibling `originals/` root (`<sha256>.<ext>`). Keys are
content hashes, so a retry never duplicates.
"""

from __future__ import annotations

from pathlib import Path

from facexpr.core.config import Settings
from facexpr.photo.imaging import image_extension

RELABELED = "relabeled"  # role: the training layout
ORIGINALS = "originals"  # role: the uploads the crops came from
ROLES = (RELABELED, ORIGINALS)


def originals_uri(settings: Settings) -> str:
    """The originals root: a sibling of the relabeled prefix in S3 (so training, which reads the
    relabeled root, never sees them), else `data_dir/originals`."""
    if settings.s3_bucket:
        parent = settings.s3_prefix.strip("/").rpartition("/")[0]
        return f"s3://{settings.s3_bucket}/{parent + '/' if parent else ''}{ORIGINALS}/"
    return str(Path(settings.data_dir) / ORIGINALS)


def role_uri(settings: Settings, role: str) -> str:
    return settings.relabeled_uri if role == RELABELED else originals_uri(settings)



def planned_location(settings: Settings, role: str, key: str) -> str:
    """The full address KEY has (or will have, once queued items are delivered) under ROLE."""
    uri = role_uri(settings, role)
    return f"{uri.rstrip('/')}/{key}" if uri.startswith("s3://") else str(Path(uri) / key)


def crop_key(label: str, png_sha256: str) -> str:
    return f"{label}/{png_sha256}.png"


def original_key(data: bytes, sha256: str) -> str:
    return f"{sha256}.{image_extension(data)}"
