"""Local servers for source tests: nothing here reaches the internet (127.0.0.1 only).

- :func:`http_server`: a threaded HTTP/1.1 server on a free port that serves a directory
  WITH byte-range requests (``Range: bytes=a-b`` -> 206; Python's http.server ignores
  Range, GDAL needs it), optional JSON routes (e.g. a :class:`StacApi`), optional
  per-prefix delays (to make a client time out), and a log of every request.
- :class:`StacApi`: a tiny STAC API (landing page, /conformance, /collections,
  /search over GET and POST with datetime / ids / collections / ``query`` extension
  filtering and ``next``-link paging) over item dicts held in memory.
- :func:`write_static_catalog`: a pystac static catalogue (catalog -> collection -> items).
- :func:`moto_s3`: a moto S3 server in a thread, with boto3 client and created bucket.
- :func:`write_cog`: a tiled, compressed Cloud-Optimized GeoTIFF with overviews.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

Route = Callable[["_Handler", str, str, dict[str, list[str]], bytes], tuple[int, dict[str, str], bytes]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- HTTP


@dataclass
class RequestLog:
    method: str
    path: str
    range: str | None
    status: int
    nbytes: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ServerInfo:
    url: str  # http://127.0.0.1:PORT (no trailing slash)
    root: Path | None
    requests: list[RequestLog] = field(default_factory=list)
    routes: dict[str, Route] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)

    def bytes_served(self, path_suffix: str = "") -> int:
        return sum(r.nbytes for r in self.requests if r.path.endswith(path_suffix))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a sleeping handler must not block shutdown
    info: ServerInfo


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError):  # GDAL closes early on purpose
            pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def _send(self, method: str, status: int, headers: dict[str, str], body: bytes, rng: str | None) -> None:
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.server.info.requests.append(
            RequestLog(method, self.path, rng, status, 0 if method == "HEAD" else len(body),
                       {k.lower(): v for k, v in self.headers.items()})  # fmt: skip
        )

    def _handle(self, method: str) -> None:
        info = self.server.info
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = parse_qs(parts.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        rng = self.headers.get("Range")
        for prefix, seconds in info.delays.items():
            if path.startswith(prefix):
                time.sleep(seconds)
        for prefix, route in sorted(info.routes.items(), key=lambda kv: -len(kv[0])):
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                status, headers, payload = route(self, method, path[len(prefix.rstrip("/")):] or "/", query, body)
                return self._send(method, status, headers, payload, rng)
        if info.root is None:
            return self._send(method, 404, {}, b"not found", rng)
        fpath = (info.root / path.lstrip("/")).resolve()
        if not str(fpath).startswith(str(info.root.resolve())) or not fpath.is_file():
            return self._send(method, 404, {"Content-Type": "text/plain"}, b"not found", rng)
        data = fpath.read_bytes()
        ctype = "application/json" if fpath.suffix == ".json" else "image/tiff"
        headers = {"Accept-Ranges": "bytes", "Content-Type": ctype}
        if rng and rng.startswith("bytes=") and "," not in rng:
            a, _, b = rng[6:].partition("-")
            size = len(data)
            if a == "":
                start, end = max(0, size - int(b)), size - 1
            else:
                start, end = int(a), min(size - 1, int(b) if b else size - 1)
            if start >= size or start > end:
                return self._send(method, 416, {"Content-Range": f"bytes */{size}"}, b"", rng)
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            return self._send(method, 206, headers, data[start : end + 1], rng)
        return self._send(method, 200, headers, data, rng)  # no or multi range: whole file


@contextmanager
def http_server(
    root: str | Path | None = None,
    routes: dict[str, Route] | None = None,
    delays: dict[str, float] | None = None,
) -> Iterator[ServerInfo]:
    """Serve ``root`` (with Range support) and ``routes`` on 127.0.0.1:<free port>."""
    server = _Server(("127.0.0.1", 0), _Handler)
    info = ServerInfo(
        url=f"http://127.0.0.1:{server.server_address[1]}",
        root=Path(root) if root is not None else None,
        routes=dict(routes or {}),
        delays=dict(delays or {}),
    )
    server.info = info
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield info
    finally:
        server.shutdown()
        server.server_close()


def json_response(obj: Any, status: int = 200) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(obj).encode()


# --------------------------------------------------------------------------- STAC API

CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
]


def _parse_dt(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(timezone.utc)


class StacApi:
    """A minimal STAC API over ``items`` (dicts); mount it as a route, e.g. ``{"/api": api}``."""

    def __init__(self, items: list[dict] | None = None, collections: list[str] | None = None) -> None:
        self.items: list[dict] = list(items or [])
        self.collections = list(collections or sorted({i.get("collection", "") for i in self.items}))
        self.searches: list[dict] = []  # every search request, normalised to a dict

    def _base(self, handler: _Handler, sub: str) -> str:
        host = handler.headers.get("Host")
        full = urlsplit(handler.path).path
        prefix = full[: len(full) - len(sub)] if sub != "/" else full.rstrip("/")
        return f"http://{host}{prefix.rstrip('/')}"

    def __call__(self, handler: _Handler, method: str, sub: str, query: dict, body: bytes):
        base = self._base(handler, sub)
        if sub in ("/", ""):
            return json_response({
                "type": "Catalog", "id": "test-api", "stac_version": "1.0.0",
                "description": "local test STAC API", "conformsTo": CONFORMANCE,
                "links": [
                    {"rel": "self", "href": f"{base}/", "type": "application/json"},
                    {"rel": "root", "href": f"{base}/", "type": "application/json"},
                    {"rel": "conformance", "href": f"{base}/conformance"},
                    {"rel": "data", "href": f"{base}/collections"},
                    {"rel": "search", "href": f"{base}/search", "method": "GET", "type": "application/geo+json"},
                    {"rel": "search", "href": f"{base}/search", "method": "POST", "type": "application/geo+json"},
                ],
            })  # fmt: skip
        if sub == "/conformance":
            return json_response({"conformsTo": CONFORMANCE})
        if sub == "/collections":
            return json_response({"collections": [self._collection(c, base) for c in self.collections], "links": []})
        if sub.startswith("/collections/"):
            cid = sub.split("/")[2]
            if cid in self.collections:
                return json_response(self._collection(cid, base))
            return json_response({"code": "NotFound"}, 404)
        if sub == "/search":
            if method == "POST":
                params = json.loads(body or b"{}")
            else:
                params = {k: v[0] for k, v in query.items()}
                for k in ("collections", "ids"):
                    if k in params:
                        params[k] = params[k].split(",")
                for k in ("query",):
                    if k in params:
                        params[k] = json.loads(params[k])
            self.searches.append(dict(params))
            return self._search(params, base, method)
        return json_response({"code": "NotFound"}, 404)

    def _collection(self, cid: str, base: str) -> dict:
        return {
            "type": "Collection", "id": cid, "stac_version": "1.0.0", "description": cid,
            "license": "proprietary",
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
            "links": [{"rel": "self", "href": f"{base}/collections/{cid}"}, {"rel": "root", "href": f"{base}/"}],
        }  # fmt: skip

    @staticmethod
    def _match_query(props: dict, q: dict) -> bool:
        for key, ops in (q or {}).items():
            v = props.get(key)
            for op, ref in ops.items():
                ok = {
                    "eq": lambda: v == ref, "neq": lambda: v != ref,
                    "lt": lambda: v is not None and v < ref, "lte": lambda: v is not None and v <= ref,
                    "gt": lambda: v is not None and v > ref, "gte": lambda: v is not None and v >= ref,
                    "in": lambda: v in ref, "startsWith": lambda: isinstance(v, str) and v.startswith(ref),
                }.get(op)  # fmt: skip
                if ok is None:
                    raise ValueError(f"unsupported query op {op}")
                if not ok():
                    return False
        return True

    def _search(self, params: dict, base: str, method: str):
        out = []
        lo = hi = None
        if params.get("datetime"):
            dtp = params["datetime"]
            a, sep, b = dtp.partition("/")
            lo = _parse_dt(a) if a not in ("", "..") else None
            hi = _parse_dt(b) if sep and b not in ("", "..") else (lo if not sep else None)
        for it in self.items:
            if params.get("collections") and it.get("collection") not in params["collections"]:
                continue
            if params.get("ids") and it["id"] not in params["ids"]:
                continue
            dt = _parse_dt(it["properties"]["datetime"])
            if (lo and dt < lo) or (hi and dt > hi):
                continue
            if not self._match_query(it["properties"], params.get("query") or {}):
                continue
            out.append(it)
        limit = int(params.get("limit") or 10)
        token = int(params.get("token") or 0)
        page = out[token : token + limit]
        links = []
        if token + limit < len(out):
            if method == "POST":
                links.append({"rel": "next", "href": f"{base}/search", "method": "POST",
                              "body": {**params, "token": str(token + limit)}, "merge": False})  # fmt: skip
            else:
                links.append({"rel": "next", "href": f"{base}/search?token={token + limit}&limit={limit}"
                              + "".join(f"&{k}={v if isinstance(v, str) else (','.join(v) if isinstance(v, list) else json.dumps(v))}"
                                        for k, v in params.items() if k not in ("token", "limit"))})  # fmt: skip
        return json_response({"type": "FeatureCollection", "features": page, "links": links,
                              "numberReturned": len(page), "numberMatched": len(out)})  # fmt: skip


# --------------------------------------------------------------------------- STAC items


def stac_item(
    item_id: str,
    dt: datetime,
    assets: dict[str, dict],
    properties: dict | None = None,
    collection: str = "sentinel-2-l2a",
    bbox: list[float] | None = None,
) -> dict:
    """A STAC item dict (geometry is a dummy box; sources do not use it)."""
    bbox = bbox or [2.0, 51.0, 3.0, 52.0]
    w, s, e, n = bbox
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": collection,
        "stac_extensions": [
            "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
        ],
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        "bbox": bbox,
        "properties": {"datetime": dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), **(properties or {})},
        "links": [],
        "assets": assets,
    }  # fmt: skip


def write_static_catalog(directory: str | Path, items: list[dict], collection: str = "sentinel-2-l2a") -> Path:
    """Write catalog.json -> <collection>/collection.json -> items with pystac; returns catalog.json."""
    import pystac

    directory = Path(directory)
    cat = pystac.Catalog(id="test-catalog", description="local static catalogue")
    coll = pystac.Collection(
        id=collection,
        description=collection,
        extent=pystac.Extent(
            pystac.SpatialExtent([[-180.0, -90.0, 180.0, 90.0]]),
            pystac.TemporalExtent([[None, None]]),
        ),
    )
    cat.add_child(coll)
    for d in items:
        coll.add_item(pystac.Item.from_dict(dict(d), preserve_dict=True))
    cat.normalize_hrefs(str(directory))
    cat.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return directory / "catalog.json"


# --------------------------------------------------------------------------- S3


@dataclass
class MotoS3:
    endpoint: str
    client: Any
    bucket: str

    def upload(self, path: str | Path, key: str, public: bool = True) -> str:
        """Put a file; ``public`` -> ACL public-read (moto refuses unsigned reads otherwise)."""
        extra = {"ACL": "public-read"} if public else {}
        self.client.upload_file(str(path), self.bucket, key, ExtraArgs=extra)
        return f"s3://{self.bucket}/{key}"


@contextmanager
def moto_s3(bucket: str | None = None) -> Iterator[MotoS3]:
    """A moto S3 server on 127.0.0.1 with a fresh bucket (unique name: moto state is global)."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip
        name = bucket or f"test-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=name)
        yield MotoS3(endpoint, client, name)
    finally:
        server.stop()


# --------------------------------------------------------------------------- COGs


def write_cog(
    path: str | Path,
    data: np.ndarray,
    crs: str,
    transform: Any,
    nodata: float | None = 0,
    blocksize: int = 256,
    descriptions: list[str] | None = None,
) -> Path:
    """Write ``data`` ([y, x] or [band, y, x]) as a deflate-compressed COG with overviews."""
    import rasterio
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy

    arr = data[None] if data.ndim == 2 else data
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", height=arr.shape[1], width=arr.shape[2], count=arr.shape[0],
                   dtype=arr.dtype, crs=crs, transform=transform, nodata=nodata)  # fmt: skip
    with MemoryFile() as mem:
        with mem.open(**profile) as ds:
            ds.write(arr)
            for i, d in enumerate(descriptions or []):
                ds.set_band_description(i + 1, d)
        with mem.open() as src:
            rio_copy(src, str(path), driver="COG", compress="DEFLATE", blocksize=blocksize,
                     overviews="AUTO", overview_resampling="nearest")  # fmt: skip
    with rasterio.open(path) as chk:  # sanity: tiled + overviews
        assert chk.profile.get("tiled") and chk.overviews(1) or min(arr.shape[1:]) <= blocksize
    return path


def new_name(prefix: str = "x") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


__all__ = [
    "MotoS3", "RequestLog", "ServerInfo", "StacApi", "free_port", "http_server", "json_response",
    "moto_s3", "new_name", "stac_item", "write_cog", "write_static_catalog",
]  # fmt: skip
