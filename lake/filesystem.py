"""Where the lake's bytes live: local disk (a `Path`, the default) or an S3-compatible object store.

An object-store lake is named by a URL, `s3://bucket/prefix`, and becomes an `ObjectPath`: a
small path type with just what the lake needs of `pathlib` (`/`, `name`, `parent`, `exists`,
`unlink`), backed by pyarrow's built-in S3 filesystem. Credentials come from the usual AWS
variables through the AWS SDK (pyarrow) and object_store (polars); the endpoint of a non-AWS store
(MinIO, moto, Ceph) is passed in by the caller, never read here.

S3 has no rename. A write therefore serializes the whole object in memory, uploads it beside its
final key as `.<name>.<uuid>.tmp` (the local store's temp name: the lake's readers take only
`<period>/part.parquet`, dataset readers skip names starting with `.`, and a `*.parquet` glob does
not match it), then copies it to the final key server-side (one CopyObject: readers see the old
object or the new one) and deletes the temp. Deleting an object makes pyarrow write an empty
folder marker (`.../date=D/`, zero bytes) for its folder: no reader takes that for data.
An upload straight to the final key would not do: pyarrow's S3 output stream completes its
multipart upload when closed, also when an exception closes it, leaving half an object there.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from lake.errors import LakeError

SCHEME = "s3://"


@dataclass(frozen=True, order=True)
class ObjectStore:
    """How to reach the store: `endpoint` (e.g. http://127.0.0.1:9000) for a non-AWS store, else AWS."""

    endpoint: str | None = None
    region: str | None = None

    def __post_init__(self) -> None:
        if self.endpoint is not None:
            parts = urlsplit(self.endpoint)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
                raise LakeError(f"object store endpoint {self.endpoint!r} is not an http(s)://host[:port] URL")

    def filesystem(self) -> pafs.S3FileSystem:
        return _filesystem(self)

    def storage_options(self) -> dict[str, str]:
        """The same store for polars' reader (object_store); credentials it takes from AWS_* itself."""
        options = {"aws_region": self.filesystem().region}
        if self.endpoint:
            options["aws_endpoint_url"] = self.endpoint
            options["aws_allow_http"] = str(self.endpoint.startswith("http://")).lower()
        return options


@functools.cache
def _filesystem(store: ObjectStore) -> pafs.S3FileSystem:
    """One client per store. No region given: the AWS SDK's (AWS_DEFAULT_REGION, the config file)."""
    region = {"region": store.region} if store.region else {}
    if store.endpoint is None:
        return pafs.S3FileSystem(**region)
    parts = urlsplit(store.endpoint)
    return pafs.S3FileSystem(endpoint_override=parts.netloc, scheme=parts.scheme, **region)


@dataclass(frozen=True, order=True)
class ObjectPath:
    """An object (or a folder of them) in an S3-compatible store: `key` is `bucket/prefix/...`."""

    key: str
    store: ObjectStore = field(default_factory=ObjectStore)

    def __truediv__(self, part: str | PurePosixPath | Path) -> ObjectPath:
        return ObjectPath(f"{self.key}/{PurePosixPath(part).as_posix()}", self.store)

    def __str__(self) -> str:
        return f"{SCHEME}{self.key}"

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name

    @property
    def parent(self) -> ObjectPath:
        return ObjectPath(str(PurePosixPath(self.key).parent), self.store)

    @property
    def bucket(self) -> str:
        return self.key.partition("/")[0]

    def _info(self) -> pafs.FileInfo:
        return self.store.filesystem().get_file_info(self.key)

    def exists(self) -> bool:
        return self._info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._info().type == pafs.FileType.Directory

    def size(self) -> int:
        """The object's size in bytes; FileNotFoundError if there is no object at this key."""
        info = self._info()
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(str(self))
        return int(info.size)

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.store.filesystem().delete_file(self.key)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def files(self) -> list[ObjectPath]:
        """Every object under this folder, at any depth (one listing), sorted; [] if there is none."""
        selector = pafs.FileSelector(self.key, recursive=True, allow_not_found=True)
        infos = self.store.filesystem().get_file_info(selector)
        return sorted(ObjectPath(i.path, self.store) for i in infos if i.type == pafs.FileType.File)

    def read_bytes(self) -> bytes:
        with self.store.filesystem().open_input_stream(self.key) as stream:
            return bytes(stream.read())

    def write_bytes_atomic(self, data: bytes) -> None:
        """Stages `data` beside this key, copies it into place in one server-side copy, drops the temp."""
        fs = self.store.filesystem()
        tmp = self.parent / f".{self.name}.{uuid.uuid4().hex}.tmp"
        try:
            with fs.open_output_stream(tmp.key) as out:
                out.write(data)
            fs.copy_file(tmp.key, self.key)
        finally:
            tmp.unlink(missing_ok=True)

    def sweep_orphans(self, older_than_s: float) -> list[ObjectPath]:
        """Removes this object's staged temps older than `older_than_s` (left by killed writes)."""
        infos = self.store.filesystem().get_file_info(pafs.FileSelector(self.parent.key, allow_not_found=True))
        cutoff = datetime.now(UTC).timestamp() - older_than_s  # object ages only: nothing written depends on it
        swept: list[ObjectPath] = []
        for info in infos:
            orphan = ObjectPath(info.path, self.store)
            if orphan.name.startswith(f".{self.name}.") and orphan.name.endswith(".tmp") and info.mtime is not None and info.mtime.timestamp() < cutoff:
                orphan.unlink(missing_ok=True)  # another sweep may have taken it
                swept.append(orphan)
        return swept


def is_object_store_url(value: str | Path) -> bool:
    return isinstance(value, str) and value.startswith(SCHEME)


def lake_location(value: str | Path, *, endpoint: str | None = None, region: str | None = None) -> Path | ObjectPath:
    """A lake root from its setting: `s3://bucket[/prefix]` -> ObjectPath on the store at `endpoint`
    (None: AWS), anything else -> a local Path (unchanged)."""
    if not is_object_store_url(value):
        return Path(value)
    key = str(value)[len(SCHEME) :].rstrip("/")
    if not key or key.startswith("/") or "?" in key or "#" in key:
        raise LakeError(f"lake URL {value!r} is not s3://bucket[/prefix]")
    return ObjectPath(key, ObjectStore(endpoint=endpoint or None, region=region or None))


def object_uris(paths: Iterable[ObjectPath]) -> list[str]:
    return [str(p) for p in paths]
