"""A real S3-compatible server (moto's) on port 0, with the standard AWS variables set for it."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
import pytest

moto_server = pytest.importorskip("moto.server")


@dataclass(frozen=True)
class S3:
    endpoint: str
    bucket: str
    secret: str  # AWS_SECRET_ACCESS_KEY: must never be written anywhere
    env: dict[str, str]  # what a subprocess needs to reach it

    def uri(self, name: str) -> str:
        return f"s3://{self.bucket}/{name}"

    def fs(self) -> pafs.S3FileSystem:
        host = self.endpoint.removeprefix("http://")
        return pafs.S3FileSystem(
            endpoint_override=host,
            scheme="http",
            access_key=self.env["AWS_ACCESS_KEY_ID"],
            secret_key=self.secret,
            region="us-east-1",
            allow_bucket_creation=True,
        )

    def objects(self) -> dict[str, bytes]:
        """Every object in the bucket, by key."""
        fs = self.fs()
        infos = fs.get_file_info(pafs.FileSelector(self.bucket, recursive=True))
        found = {}
        for info in infos:
            if info.type == pafs.FileType.File:
                with fs.open_input_stream(info.path) as stream:
                    found[info.path] = stream.read()
        return found


@contextlib.contextmanager
def s3_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3]:
    """Start the server, create a bucket, point the AWS variables (and a staging root) at it."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        secret = "sEcReT" + secrets.token_hex(12)
        env = {
            "AWS_ACCESS_KEY_ID": "AKIATESTKEYID",
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "LLAMABATCH_STAGING": str(tmp_path / "staging"),
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        # moto keeps its buckets per process, not per server: a bucket of the test's own.
        s3 = S3(f"http://{host}:{port}", f"results-{secrets.token_hex(4)}", secret, env)
        s3.fs().create_dir(s3.bucket)
        yield s3
    finally:
        server.stop()
