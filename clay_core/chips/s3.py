"""Chip cubes on S3: a zarr v3 store on one S3 prefix (:class:`S3Store`) and atomic
publication through a pointer object.

A cube is written under a fresh prefix ``key.v-<time>-<uuid>/`` and published by writing
``key/pointer.json`` last (one PUT: readers see the old cube or the new one, never a
half-written one); the cube the previous pointer named is then deleted. A failed write
waits for zarr's PUTs still in flight before deleting its own prefix, so no shard lands
after the cleanup.
"""

from __future__ import annotations

import contextlib
import json

import pandas as pd
import xarray as xr

try:
    from zarr.abc.store import OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest
except ImportError:  # pragma: no cover - zarr 2
    Store = object  # type: ignore[assignment,misc]

from clay_core.errors import ConfigError

__all__ = ["POINTER_NAME", "POINTER_FORMAT", "S3Store", "write_published", "open_published"]

#: The object that publishes an S3 cube.
POINTER_NAME = "pointer.json"
POINTER_FORMAT = "clay-cube-pointer/1"


def _split_s3(url: str) -> tuple[str, str]:
    rest = url[len("s3://") :]
    bucket, _, key = rest.partition("/")
    key = key.strip("/")
    if not bucket or not key:
        raise ConfigError(f"{url!r} is not an s3://bucket/key URI for a chip cube")
    return bucket, key


def _s3_client(options: dict):
    if options.get("client") is not None:
        return options["client"]
    import boto3

    return boto3.client("s3", **{k: v for k, v in options.items() if k != "client"})


def _read_pointer(client, bucket: str, key: str) -> dict | None:
    try:
        body = client.get_object(Bucket=bucket, Key=f"{key}/{POINTER_NAME}")["Body"].read()
    except client.exceptions.NoSuchKey:
        return None
    except Exception as exc:  # noqa: BLE001 - a 404 on some S3-compatible stores
        if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    ptr = json.loads(body)
    if ptr.get("format") != POINTER_FORMAT or not str(ptr.get("prefix", "")).startswith(f"{key}.v-"):
        raise ValueError(f"s3://{bucket}/{key}/{POINTER_NAME} is not a chip cube pointer: {ptr!r}")
    return ptr


def _delete_prefix(client, bucket: str, prefix: str) -> None:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        for i in range(0, len(keys), 1000):
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys[i : i + 1000], "Quiet": True})



def write_published(ds: xr.Dataset, url: str, encoding: dict, options: dict) -> str:
    """Write ``ds`` under a fresh version prefix of ``url`` and publish it (see the module docstring)."""
    import uuid

    client = _s3_client(options)
    bucket, key = _split_s3(url)
    version = f"{key}.v-{pd.Timestamp.now('UTC'):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    store = S3Store(client, bucket, version)
    try:
        ds.to_zarr(store, mode="w", zarr_format=3, consolidated=False, encoding=encoding)
    except BaseException:
        store.abort_writes()  # zarr's other write tasks may still be running
        with contextlib.suppress(Exception):  # best effort: nothing points at it anyway
            _delete_prefix(client, bucket, version + "/")
        raise
    old = _read_pointer(client, bucket, key)
    pointer = {"format": POINTER_FORMAT, "prefix": version, "chips": int(ds.sizes.get("chip", 0)),
               "written": pd.Timestamp.now("UTC").isoformat()}  # fmt: skip
    client.put_object(Bucket=bucket, Key=f"{key}/{POINTER_NAME}", Body=json.dumps(pointer).encode(),
                      ContentType="application/json")  # fmt: skip
    if old is not None and old["prefix"] != version:
        _delete_prefix(client, bucket, old["prefix"] + "/")
    return url


def open_published(url: str, options: dict) -> "S3Store":
    """A read-only store on the cube ``url``'s pointer names; FileNotFoundError when unpublished."""
    client = _s3_client(options)
    bucket, key = _split_s3(url)
    target = _read_pointer(client, bucket, key)
    if target is None:
        raise FileNotFoundError(f"no chip cube at {url}: {key}/{POINTER_NAME} does not exist (not published)")
    return S3Store(client, bucket, target["prefix"], read_only=True)


class _WriteGate:
    """Counts writes in flight; once aborted, refuses new ones."""

    def __init__(self) -> None:
        import threading

        self._cond = threading.Condition()
        self._pending = 0
        self._aborted = False

    def run(self, where: str, fn, *args, **kwargs):
        with self._cond:
            if self._aborted:
                raise OSError(f"writes to {where} were aborted after an earlier failure")
            self._pending += 1
        try:
            return fn(*args, **kwargs)
        finally:
            with self._cond:
                self._pending -= 1
                self._cond.notify_all()

    def abort(self, timeout: float) -> bool:
        with self._cond:
            self._aborted = True
            return self._cond.wait_for(lambda: self._pending == 0, timeout)


class S3Store(Store):  # type: ignore[misc,valid-type]
    """A zarr v3 store on one S3 prefix through a boto3 client (thread-safe; calls run in
    threads). Whole-object PUTs (zarr writes each shard in one piece), ranged GETs for
    shard indexes and chunks, listing with ``list_objects_v2``."""

    supports_writes = True
    supports_deletes = True
    supports_listing = True
    supports_partial_writes = False

    def __init__(self, client, bucket: str, prefix: str, *, read_only: bool = False,
                 _gate: "_WriteGate | None" = None) -> None:
        super().__init__(read_only=read_only)
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")
        self._gate = _gate or _WriteGate()  # shared with with_read_only() copies

    def with_read_only(self, read_only: bool = False) -> "S3Store":
        return type(self)(self.client, self.bucket, self.prefix, read_only=read_only, _gate=self._gate)

    def abort_writes(self, timeout: float = 120.0) -> bool:
        """Refuse further writes and wait for the PUTs in flight.  After a failed write zarr's
        other write tasks keep running, so cleaning up before they finish would leave debris."""
        return self._gate.abort(timeout)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, S3Store) and (self.bucket, self.prefix, self.read_only)
                == (other.bucket, other.prefix, other.read_only))  # fmt: skip

    def __repr__(self) -> str:
        return f"S3Store('s3://{self.bucket}/{self.prefix}')"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if key else self.prefix

    @staticmethod
    def _range(byte_range) -> str | None:
        if byte_range is None:
            return None
        if isinstance(byte_range, RangeByteRequest):
            return f"bytes={byte_range.start}-{byte_range.end - 1}"
        if isinstance(byte_range, OffsetByteRequest):
            return f"bytes={byte_range.offset}-"
        if isinstance(byte_range, SuffixByteRequest):
            return f"bytes=-{byte_range.suffix}"
        raise TypeError(f"unexpected byte range {byte_range!r}")

    def _get(self, key: str, byte_range) -> bytes | None:
        kw = {"Bucket": self.bucket, "Key": self._key(key)}
        rng = self._range(byte_range)
        if rng is not None:
            if isinstance(byte_range, RangeByteRequest) and byte_range.end <= byte_range.start:
                return b""
            kw["Range"] = rng
        try:
            return self.client.get_object(**kw)["Body"].read()
        except Exception as exc:  # noqa: BLE001
            code = getattr(exc, "response", {}).get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404", "NotFound"):
                return None
            raise

    async def get(self, key: str, prototype=None, byte_range=None):
        import asyncio

        from zarr.core.buffer.core import default_buffer_prototype

        prototype = prototype or default_buffer_prototype()
        data = await asyncio.to_thread(self._get, key, byte_range)
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get_partial_values(self, prototype, key_ranges):
        import asyncio

        return list(await asyncio.gather(*[self.get(k, prototype, r) for k, r in key_ranges]))

    async def exists(self, key: str) -> bool:
        import asyncio

        def head() -> bool:
            try:
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
                return True
            except Exception as exc:  # noqa: BLE001
                if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise

        return await asyncio.to_thread(head)

    async def set(self, key: str, value) -> None:
        import asyncio

        self._check_writable()
        body = value.to_bytes()
        await asyncio.to_thread(self._gate.run, f"s3://{self.bucket}/{self.prefix}",
                                self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=body)

    async def delete(self, key: str) -> None:
        import asyncio

        self._check_writable()
        await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=self._key(key))

    def _list(self, prefix: str, delimiter: bool) -> list[str]:
        base = self.prefix + "/"
        full = base + prefix
        kw = {"Bucket": self.bucket, "Prefix": full}
        if delimiter:
            kw["Delimiter"] = "/"
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(**kw):
            out += [o["Key"][len(base) :] for o in page.get("Contents", [])]
            out += [p["Prefix"][len(base) :] for p in page.get("CommonPrefixes", [])]
        return out

    async def list(self):
        import asyncio

        for k in await asyncio.to_thread(self._list, "", False):
            yield k

    async def list_prefix(self, prefix: str):
        import asyncio

        for k in await asyncio.to_thread(self._list, prefix, False):
            yield k

    async def list_dir(self, prefix: str):
        import asyncio

        prefix = prefix.rstrip("/")
        pre = f"{prefix}/" if prefix else ""
        seen = set()
        for k in await asyncio.to_thread(self._list, pre, True):
            name = k[len(pre) :].rstrip("/").split("/")[0]
            if name and name not in seen:
                seen.add(name)
                yield name
