"""A real S3 HTTP endpoint on loopback for the store tests: moto's ThreadedMotoServer, never a
patched boto3. Requests go through botocore's whole stack (signing, HTTP, error parsing).

The fixtures `s3_endpoint` and `s3` (tests/conftest.py) use it: each module gets its own server;
moto keeps its buckets in process memory, so a server stopped and started again on the same port
(an outage and a recovery) still has them.
"""

from __future__ import annotations

import socket
import urllib.request
from dataclasses import dataclass, field
from typing import Any

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


@dataclass
class S3Setup:
    endpoint: S3Endpoint
    bucket: str
    client: Any

    def keys(self, prefix: str = "") -> list[str]:
        listing = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for o in listing.get("Contents", []))
