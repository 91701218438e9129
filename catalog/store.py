"""Where tiles are read from and products written to: a local directory or ``s3://bucket/prefix``.

Both stores offer the same keys (``{collection}/{year}/{grid}/embeddings.tif`` ...) and the same
guarantees:

* writes are atomic: a local file is moved into place with ``os.replace``; an S3 object is
  uploaded (multipart above ``multipart_threshold_mb``) only once the local file was verified,
  and S3 never shows a partial object;
* every written object records its sha256 (S3: object metadata ``sha256``) so a re-run can tell
  whether an output already matches without downloading it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tessera_stac.catalog.errors import ConfigurationError, InputError
from tessera_stac.catalog.store_settings import StorageSettings

MULTIHASH_SHA256 = "1220"
CHUNK = 8 * 1024 * 1024


def sha256_file(path: Path) -> str:
    """Hex sha256 of a local file (streamed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def multihash(sha256_hex: str) -> str:
    """``file:checksum`` form of a sha256: multihash hex (``1220`` + digest)."""
    return MULTIHASH_SHA256 + sha256_hex


def is_s3(uri: str) -> bool:
    """True for ``s3://`` URIs."""
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ConfigurationError(f"not an S3 URI with a bucket: {uri!r}")
    return bucket, key


class Store(Protocol):
    """A root (local directory or S3 prefix) holding objects by relative key."""

    @property
    def uri(self) -> str:
        """Where the store is (a local path or an ``s3://`` URI)."""
        ...

    def join(self, key: str) -> str:
        """Absolute URI (local path or ``s3://``) of ``key``."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys (relative to the root) of every object under ``prefix``, recursively."""
        ...

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""
        ...

    def folders(self) -> Sequence[str]:
        """Names of the top-level folders (e.g. collections), sorted, hidden ones left out."""
        ...

    def read_bytes(self, key: str) -> bytes:
        """The object's content (small objects: item JSON)."""
        ...

    def matches(self, key: str, size: int, checksum: str) -> bool:
        """True when ``key`` exists with this size and ``file:checksum`` (multihash hex)."""
        ...

    def put_file(self, local: Path, key: str, content_type: str, sha256_hex: str) -> None:
        """Publish a verified local file at ``key`` atomically (the local file may be moved)."""
        ...

    def put_bytes(self, data: bytes, key: str, content_type: str) -> None:
        """Publish ``data`` at ``key`` atomically."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key`` if it exists."""
        ...

    def stage(self, key: str) -> Path:
        """A fresh local folder to write the objects of ``key`` into."""
        ...

    def put_folder(self, staged: Path, key: str) -> Sequence[str]:
        """Publish a staged folder as ``key`` (replacing what was there); the keys written."""
        ...


@dataclass
class LocalStore:
    """A local directory."""

    root: Path

    @property
    def uri(self) -> str:
        return str(self.root)

    def join(self, key: str) -> str:
        return str(self.root / key)

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix``, sorted; hidden files and folders (staging, scratch) skipped."""
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return
        for dirpath, dirs, files in os.walk(base):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel = Path(dirpath).relative_to(self.root)
            for name in sorted(f for f in files if not f.startswith(".")):
                yield (rel / name).as_posix() if str(rel) != "." else name

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def folders(self) -> Sequence[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name[0] != ".")

    def read_bytes(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def matches(self, key: str, size: int, checksum: str) -> bool:
        path = self.root / key
        try:
            if path.stat().st_size != size:
                return False
        except FileNotFoundError:
            return False
        return multihash(sha256_file(path)) == checksum

    def put_file(self, local: Path, key: str, content_type: str, sha256_hex: str) -> None:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(local, target)
        except OSError:  # another file system: copy next to the target, then rename
            tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
            shutil.copyfile(local, tmp)
            os.replace(tmp, target)

    def put_bytes(self, data: bytes, key: str, content_type: str) -> None:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    def stage(self, key: str) -> Path:
        """A fresh hidden folder beside ``key`` (same file system: the swap is a rename)."""
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        path = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
        path.mkdir()
        return path

    def put_folder(self, staged: Path, key: str) -> Sequence[str]:
        """Swap a fully written folder in place of ``key`` (the old one removed after).

        Returns:
            The keys now under ``key``.
        """
        target = self.root / key
        old: Path | None = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(target, old)
        os.replace(staged, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return list(self.list(key))


_CLIENTS: dict[str, Any] = {}
_CLIENTS_LOCK = threading.Lock()


def s3_client(settings: StorageSettings) -> Any:
    """A boto3 S3 client for these settings (one per process and settings)."""
    key = settings.model_dump_json()
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            import boto3
            from botocore import UNSIGNED
            from botocore.config import Config

            config = Config(
                signature_version=UNSIGNED if settings.anonymous else None,
                retries={"max_attempts": 5, "mode": "standard"},
                s3={"addressing_style": "path"} if settings.endpoint_url else None,
            )
            client = boto3.client("s3", config=config, **settings.boto3_client_kwargs())  # type: ignore[call-overload]
            _CLIENTS[key] = client
    return client


@dataclass
class S3Store:
    """An ``s3://bucket/prefix`` (any S3-compatible endpoint, see :class:`StorageSettings`)."""

    bucket: str
    prefix: str
    settings: StorageSettings

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def join(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def list(self, prefix: str = "") -> Iterator[str]:
        client = s3_client(self.settings)
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        strip = len(f"{self.prefix}/") if self.prefix else 0
        paginator = client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    yield obj["Key"][strip:]
        except client.exceptions.NoSuchBucket as exc:
            raise InputError(f"{self.uri}: no such bucket") from exc

    def head(self, key: str) -> dict[str, Any] | None:
        """The object's metadata, or None when it does not exist."""
        from botocore.exceptions import ClientError

        try:
            return dict(
                s3_client(self.settings).head_object(Bucket=self.bucket, Key=self._key(key))
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def folders(self) -> Sequence[str]:
        client = s3_client(self.settings)
        base = f"{self.prefix}/" if self.prefix else ""
        names: set[str] = set()
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=base, Delimiter="/"
        ):
            names.update(
                p["Prefix"][len(base) :].rstrip("/") for p in page.get("CommonPrefixes", [])
            )
        return sorted(n for n in names if n and not n.startswith("."))

    def read_bytes(self, key: str) -> bytes:
        obj = s3_client(self.settings).get_object(Bucket=self.bucket, Key=self._key(key))
        return bytes(obj["Body"].read())

    def matches(self, key: str, size: int, checksum: str) -> bool:
        head = self.head(key)
        if head is None or int(head.get("ContentLength", -1)) != size:
            return False
        recorded = head.get("Metadata", {}).get("sha256")
        return recorded is not None and multihash(recorded) == checksum

    def download(self, key: str, local: Path) -> None:
        """Download ``key`` to ``local`` (multipart, parallel ranges)."""
        from boto3.s3.transfer import TransferConfig

        local.parent.mkdir(parents=True, exist_ok=True)
        s3_client(self.settings).download_file(
            self.bucket, self._key(key), str(local), Config=self._transfer_config(TransferConfig)
        )

    def _transfer_config(self, config_cls: Any) -> Any:
        threshold = self.settings.multipart_threshold_mb * 1024 * 1024
        return config_cls(
            multipart_threshold=threshold, multipart_chunksize=max(threshold, 8 * 1024 * 1024)
        )

    def put_file(self, local: Path, key: str, content_type: str, sha256_hex: str) -> None:
        from boto3.s3.transfer import TransferConfig

        s3_client(self.settings).upload_file(
            str(local),
            self.bucket,
            self._key(key),
            ExtraArgs={"ContentType": content_type, "Metadata": {"sha256": sha256_hex}},
            Config=self._transfer_config(TransferConfig),
        )

    def put_bytes(self, data: bytes, key: str, content_type: str) -> None:
        s3_client(self.settings).put_object(
            Bucket=self.bucket,
            Key=self._key(key),
            Body=data,
            ContentType=content_type,
            Metadata={"sha256": hashlib.sha256(data).hexdigest()},
        )

    def delete(self, key: str) -> None:
        s3_client(self.settings).delete_object(Bucket=self.bucket, Key=self._key(key))

    def stage(self, key: str) -> Path:
        """A fresh local folder to write ``key``'s objects into before :meth:`put_folder`."""
        return Path(tempfile.mkdtemp(prefix="tessera-stac-stage-"))

    def put_folder(self, staged: Path, key: str) -> Sequence[str]:
        """Upload a folder's files under ``key`` (data first, JSON documents last, each with
        its sha256), then remove objects under ``key`` the folder no longer has.

        Returns:
            The keys written.
        """
        files = sorted((p for p in staged.rglob("*") if p.is_file()), key=_json_last)
        written = []
        for path in files:
            dest = f"{key}/{path.relative_to(staged).as_posix()}"
            self.put_file(path, dest, _content_type(path), sha256_file(path))
            written.append(dest)
        for stale in set(self.list(f"{key}/")) - set(written):
            self.delete(stale)
        shutil.rmtree(staged, ignore_errors=True)
        return written


def _json_last(path: Path) -> tuple[bool, str]:
    return path.suffix == ".json", path.as_posix()


_CONTENT_TYPES = {
    ".json": "application/json",
    ".parquet": "application/vnd.apache.parquet",
    ".geojson": "application/geo+json",
    ".csv": "text/csv",
    ".png": "image/png",
    ".tif": "image/tiff; application=geotiff; profile=cloud-optimized",
}


def _content_type(path: Path) -> str:
    return _CONTENT_TYPES.get(path.suffix, "application/octet-stream")


def open_store(uri: str, settings: StorageSettings | None = None) -> LocalStore | S3Store:
    """A store for a local directory or ``s3://bucket/prefix``."""
    if is_s3(uri):
        bucket, prefix = split_s3(uri)
        return S3Store(bucket, prefix.strip("/"), settings or StorageSettings())
    return LocalStore(Path(uri).expanduser().resolve())


def fetch(uri: str, scratch: Path, settings: StorageSettings | None = None) -> Path:
    """A local path to read ``uri`` from: local files as they are, S3 objects downloaded.

    Raises:
        InputError: the file or object does not exist.
    """
    if not is_s3(uri):
        path = Path(uri)
        if not path.is_file():
            raise InputError(f"{uri}: file not found")
        return path
    from botocore.exceptions import ClientError

    bucket, key = split_s3(uri)
    store = S3Store(bucket, "", settings or StorageSettings())
    local = scratch / "src" / key.replace("/", "__")
    try:
        store.download(key, local)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code in ("404", "NoSuchKey", "NotFound"):
            raise InputError(f"{uri}: object not found") from exc
        raise InputError(f"{uri}: cannot download: {exc}") from exc
    return local


def uri_exists(uri: str, settings: StorageSettings | None = None) -> bool:
    """Whether a local file or S3 object exists."""
    if not is_s3(uri):
        return Path(uri).is_file()
    bucket, key = split_s3(uri)
    return S3Store(bucket, "", settings or StorageSettings()).exists(key)
