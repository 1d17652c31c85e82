"""A real S3 HTTP endpoint on loopback for the store tests: moto's ThreadedMotoServer, never a
patched boto3. Requests go through botocore's whole stack (signing, HTTP, error parsing).

Import the fixtures into a test module: `from tests.s3server import s3, s3_endpoint  # noqa: F401`.
Each module gets its own server; moto keeps its buckets in process memory, so a server stopped
and started again on the same port (an outage and a recovery) still has them.
"""

from __future__ import annotations

import socket
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1"}


def closed_port_url() -> str:
    """An http URL on loopback where nothing listens (connection refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@dataclass
class S3Endpoint:
    port: int = 0
    server: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Endpoint:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.port = self.server.get_host_and_port()[1]
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def _moto_api(self, path: str, body: bytes) -> None:
        request = urllib.request.Request(self.url + path, data=body, method="POST",
                                         headers={"Content-Type": "application/octet-stream"})
        urllib.request.urlopen(request, timeout=5).read()

    def check_credentials(self, on: bool) -> None:
        """With checking on, moto answers like AWS: keys it has never issued get InvalidAccessKeyId."""
        self._moto_api("/moto-api/reset-auth", b"0" if on else b"inf")

    def client(self) -> Any:
        import boto3

        return boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                     region_name="us-east-1").client("s3", endpoint_url=self.url)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[S3Endpoint]:
    endpoint = S3Endpoint().start()
    yield endpoint
    endpoint.stop()


@dataclass
class S3Setup:
    endpoint: S3Endpoint
    bucket: str
    client: Any

    def keys(self, prefix: str = "") -> list[str]:
        listing = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for o in listing.get("Contents", []))


@pytest.fixture
def s3(s3_endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Setup]:
    """A fresh bucket, configured as facexpr's store through the environment."""
    if s3_endpoint.server is None:  # a test stopped it: bring it back on the same port
        s3_endpoint.start()
    for key, value in DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint.url)
    bucket = f"fx-{uuid.uuid4().hex[:12]}"
    client = s3_endpoint.client()
    client.create_bucket(Bucket=bucket)
    monkeypatch.setenv("FACEXPR_S3_BUCKET", bucket)
    yield S3Setup(s3_endpoint, bucket, client)
    if s3_endpoint.server is None:
        s3_endpoint.start()
    s3_endpoint.check_credentials(False)
