"""Image store: one small interface, two backends with the same layout (S3 and a local folder).

Keys are relative to the store's root, e.g. `happy/<sha256>.png`; the root is a local
directory or `s3://bucket/prefix`. Errors come in two kinds so callers can decide what to do:
`StoreError` (a setting must change: bucket, credentials, a folder's permissions) and its kind
`StoreUnavailable` (an outage; retrying later may work); both are in `facexpr.core.errors`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from facexpr.core.errors import FacexprError, StoreError, StoreUnavailable


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: datetime  # UTC; when the object arrived in the store


class ImageStore(Protocol):
    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> str:
        """Store DATA under KEY (overwriting is harmless: keys are content hashes); return its location."""

    def get(self, key: str) -> bytes: ...

    def metadata(self, key: str) -> dict[str, str]:
        """KEY's metadata; {} when KEY is not there (another writer may remove it at any moment)."""

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove KEY; a key that is not there is not an error."""

    def list_keys(self, prefix: str = "") -> list[str]: ...

    def list_objects(self, prefix: str = "") -> list[StoredObject]: ...

    def location(self, key: str) -> str: ...


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"Invalid storage key {key!r}.")
    return key


def clean_metadata(metadata: dict[str, Any] | None) -> dict[str, str]:
    """S3 user metadata travels as HTTP headers: lower-case names, ASCII values."""
    out: dict[str, str] = {}
    for name, value in (metadata or {}).items():
        text = str(value).encode("ascii", "backslashreplace").decode("ascii")
        out[str(name).lower()] = " ".join(text.split())  # no newlines in a header
    return out


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a unique temporary name and rename: a crash or a concurrent writer never leaves
    half a file under PATH (Streamlit runs sessions as threads of one process)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class LocalStore:
    """A folder on disk; metadata sits beside each file as `<name>.meta.json`."""

    META_SUFFIX = ".meta.json"

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def _meta_path(self, key: str) -> Path:
        path = self._path(key)
        return path.with_name(path.name + self.META_SUFFIX)

    def _fail(self, exc: OSError, key: str = "") -> StoreError:
        return StoreError(f"Cannot write or read {self.root / key if key else self.root}: "
                          f"{exc.strerror or exc}. Check that FACEXPR_DATA_DIR points at a writable folder.")

    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> str:
        path = self._path(key)
        try:
            # Metadata first, data last: a file under KEY always has its metadata beside it.
            if metadata is not None:
                atomic_write(self._meta_path(key), json.dumps(clean_metadata(metadata), sort_keys=True)
                              .encode())
            atomic_write(path, data)
        except OSError as exc:
            raise self._fail(exc, key) from exc
        return str(path)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise StoreError(f"No object {key!r} in {self.root}.") from exc
        except OSError as exc:
            raise self._fail(exc, key) from exc

    def metadata(self, key: str) -> dict[str, str]:
        try:  # no exists() check first: another writer may delete it between the two
            return json.loads(self._meta_path(key).read_text())
        except FileNotFoundError:
            return {}

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
            self._meta_path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise self._fail(exc, key) from exc

    def list_objects(self, prefix: str = "") -> list[StoredObject]:
        # Same semantics as S3: PREFIX is a string prefix of the key, not necessarily a folder.
        base = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        if not base.is_dir():
            return []
        found = []
        for p in base.rglob("*"):
            if p.name.endswith(self.META_SUFFIX) or p.name.startswith(".") or not p.is_file():
                continue
            key = p.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                st = p.stat()
                found.append(StoredObject(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
        return sorted(found, key=lambda o: o.key)

    def list_keys(self, prefix: str = "") -> list[str]:
        return [o.key for o in self.list_objects(prefix)]

    def location(self, key: str) -> str:
        return str(self._path(key))


class S3Store:
    """A bucket and key prefix, through boto3 (endpoint and credentials from boto3's own chain)."""

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.client = client or self._make_client()

    @staticmethod
    def _make_client() -> Any:
        import boto3
        from botocore.config import Config

        # Short timeouts and few retries: a person is waiting, and the outbox catches failures.
        # A fresh Session per client: boto3's default session is not thread-safe.
        return boto3.session.Session().client(
            "s3", config=Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2}))

    def _endpoint(self) -> str:
        return str(getattr(getattr(self.client, "meta", None), "endpoint_url", "") or "AWS")

    def _translate(self, exc: Exception, key: str = "") -> StoreError:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        where = f"s3://{self.bucket}/{self.prefix}{key}"
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return StoreError(f"No AWS credentials found for {where}: set AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY (or an AWS profile).")
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code == "NoSuchBucket":
                return StoreError(f"Bucket {self.bucket!r} does not exist at {self._endpoint()}: "
                                  "check FACEXPR_S3_BUCKET (and AWS_ENDPOINT_URL).")
            if code in ("NoSuchKey", "404", "NotFound"):
                return StoreError(f"No object at {where}.")
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                        "TokenRefreshRequired"):
                return StoreError(f"S3 rejected the AWS credentials for {where} ({code}): check "
                                  "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the AWS profile).")
            if code in ("AccessDenied", "403", "AllAccessDisabled") or status == 403:
                # A HEAD answers a bare 403: it may be the keys or a bucket they may not use.
                return StoreError(f"S3 refused access to {where} ({code}): check the AWS credentials "
                                  "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the AWS profile) and that "
                                  "FACEXPR_S3_BUCKET names a bucket they may write to.")
            if code in ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout") or status >= 500:
                return StoreUnavailable(f"S3 is unavailable ({code or status}) for {where}.")
            return StoreError(f"S3 error {code} for {where}: {exc}")
        if isinstance(exc, BotoCoreError):
            return StoreUnavailable(f"S3 could not be reached at {self._endpoint()} for {where}: {exc} "
                                    "(if this persists, check AWS_ENDPOINT_URL).")
        return StoreUnavailable(f"S3 request failed for {where}: {exc}")

    @contextmanager
    def _errors(self, key: str = "") -> Iterator[None]:
        """Any boto3 failure inside becomes a StoreError or StoreUnavailable naming what to fix."""
        try:
            yield
        except FacexprError:
            raise
        except Exception as exc:
            raise self._translate(exc, key) from exc

    def _key(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> str:
        content_type = "image/png" if key.endswith(".png") else "application/octet-stream"
        with self._errors(key):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                                   ContentType=content_type, Metadata=clean_metadata(metadata))
        return self.location(key)

    def get(self, key: str) -> bytes:
        with self._errors(key):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def metadata(self, key: str) -> dict[str, str]:
        from botocore.exceptions import ClientError

        with self._errors(key):
            try:
                return self.client.head_object(Bucket=self.bucket, Key=self._key(key))["Metadata"]
            except ClientError as exc:
                # Gone between a caller's exists() and this: no answer there, not a failure (the
                # relabel save would otherwise queue a put it had made, and redeliver it later).
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return {}
                raise

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        with self._errors(key):
            try:
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                # HEAD has no body: a missing key and a missing bucket both answer a bare 404, and
                # the following put tells them apart (NoSuchBucket).
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
            return True

    def delete(self, key: str) -> None:
        with self._errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list_objects(self, prefix: str = "") -> list[StoredObject]:
        found: list[StoredObject] = []
        with self._errors():
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix)
            for page in pages:
                found.extend(StoredObject(obj["Key"][len(self.prefix):], int(obj.get("Size", 0)),
                                          obj["LastModified"].astimezone(UTC))
                             for obj in page.get("Contents", []))
        return sorted(found, key=lambda o: o.key)

    def list_keys(self, prefix: str = "") -> list[str]:
        return [o.key for o in self.list_objects(prefix)]

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise StoreError(f"{uri!r} names no bucket: use s3://BUCKET/PREFIX.")
    return bucket, prefix


def open_store(uri: str | os.PathLike) -> ImageStore:
    """`s3://bucket/prefix` → S3Store; anything else is a local folder."""
    text = str(uri)
    if text.startswith("s3://"):
        return S3Store(*parse_s3_uri(text))
    return LocalStore(text)
