"""Scenes from a STAC API (e.g. Earth Search) or a static STAC catalogue, read as COGs.

Listing (``list_scenes``) only talks to the catalogue:

- **STAC API** (the landing page conforms to ``item-search``): a pystac-client search on
  ``collection``, the datetime window and, with the query extension, the tile
  (``tile_query``, default ``"grid:code"`` -> ``{"grid:code": {"eq": "MGRS-31UFU"}}``;
  ``"mgrs"`` -> ``mgrs:utm_zone`` / ``mgrs:latitude_band`` / ``mgrs:grid_square``;
  ``"s2:mgrs_tile"``; ``"landsat:wrs"`` -> ``landsat:wrs_path`` / ``landsat:wrs_row``;
  ``"none"``) plus ``eo:cloud_cover <= max_cloud``. An API without the query extension
  gets an ``intersects`` point at the tile centre instead (Sentinel-2).
- **static catalogue** (``url`` is a ``catalog.json`` / ``collection.json``, local path or
  http(s), without ``item-search``): pystac walks it (children, items) and the same
  filters are applied here.

Every item is checked here too (tile from ``grid:code`` / ``mgrs:*`` / ``s2:mgrs_tile`` /
``landsat:wrs_*``, datetime with ``start <= t < end``, cloud cover), duplicates of one
acquisition (same datetime, e.g. Earth Search ``..._0_L2A`` and ``..._1_L2A``
reprocessings) keep the newest processing (``s2:processing_baseline``, then
``updated``, then id), and then ``selection``:

- ``"all"``: every acquisition, oldest first;
- ``"clearest"``: the least-cloudy acquisition per ``clearest_per`` period inside the
  window: by default ``"week"`` (ISO week, Monday start -- the pipeline's weekly
  partitions), so a call for one partition week returns its clearest scene and a sensor
  scanning many weeks gets one scene per week; ``"window"`` keeps ONE scene per
  ``list_scenes(tile, start, end)`` call whatever its length; ``"day"`` / ``"month"``
  one per calendar day / month. Ties and items without ``eo:cloud_cover`` (ranked last)
  go to the earliest.

Loading (``load_scene``) reads the item's assets with rasterio windowed reads, over
``https://`` (GDAL /vsicurl/, range requests) or ``s3://`` (/vsis3/, with ``s3_endpoint``
for a local / S3-compatible endpoint, ``aws_anonymous`` -> ``AWS_NO_SIGN_REQUEST``,
``requester_pays`` -> ``AWS_REQUEST_PAYER=requester``; signed requests take credentials
from the standard ``AWS_*`` environment / ``~/.aws`` -- nothing is stored here). Bands are
brought to the tile grid (bilinear for reflectance, nearest for QA); an item in another
CRS than the tile grid is refused.

The tile grid is ``grids[tile]`` when given, else from the first item found for the
tile: its finest data asset's ``proj:code`` / ``proj:epsg`` + ``proj:transform`` +
``proj:shape`` (asset level, else item level), or, when the item has no projection
info, the raster header of that asset.

Sentinel-2 DN harmonisation (``harmonize=True``, default): from processing baseline 04.00
(25 Jan 2022) ESA stores reflectance with a +1000 DN offset. Items at baseline >= 04.00
that do not say ``earthsearch:boa_offset_applied: true`` get 1000 subtracted from every
reflectance band on load (valid pixels clipped at 1, nodata kept), so a time series has
one DN scale across the 2022 switch (Earth Search ``sentinel-2-l2a`` already removes it
and says so; Planetary Computer does not). QA is never touched.

Platforms: ``sentinel-2-l2a`` (assets blue, green, red, nir, rededge1-3, nir08, swir16,
swir22, scl; QA = SCL) and ``landsat-c2l2-sr`` (Landsat Collection 2 Level-2 surface
reflectance, collection ``landsat-c2-l2`` on Earth Search; tiles are WRS-2 path/row
``"PPPRRR"``; assets red, green, blue, nir08, swir16, swir22, qa_pixel; QA_PIXEL bits are
converted by :func:`landsat_qa_to_scl`). ``Scene.qa`` is always SCL-like uint8.

Every catalogue or raster failure (timeout, unreachable endpoint, HTTP error, corrupt
COG) is a :class:`SceneError` naming the URL with user info and signatures redacted.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import cached_property
from typing import Any

import numpy as np
from affine import Affine
from rasterio.enums import Resampling

from clay_core.errors import ConfigError, SceneError, UnknownTileError
from clay_core.sources.bands import canonical_band, resampling_for
from clay_core.sources.base import SceneSource, as_utc
from clay_core.sources.crs import crs_string
from clay_core.sources.gdal import gdal_env, gdal_env_options
from clay_core.sources.grid_read import open_raster, read_to_grid
from clay_core.sources.grids import grid_from_dict, grid_of
from clay_core.sources.qa import QA_FORMATS, landsat_qa_to_scl, qa_fill, to_scl
from clay_core.sources.urls import redact
from clay_core.types import Scene, SceneRef, TileGrid

__all__ = ["EARTH_SEARCH", "PLATFORMS", "StacSource", "item_tile", "landsat_qa_to_scl"]

EARTH_SEARCH = "https://earth-search.aws.element84.com/v1"

#: Per-platform defaults (the constructor's None arguments fall back to these).
PLATFORMS: dict[str, dict[str, Any]] = {
    "sentinel-2-l2a": {
        "collection": "sentinel-2-l2a",
        "qa_asset": "scl",
        "qa_format": "scl",
        "tile_query": "grid:code",
        "grid_prefix": "MGRS-",
    },
    "landsat-c2l2-sr": {
        "collection": "landsat-c2-l2",
        "qa_asset": "qa_pixel",
        "qa_format": "landsat_qa_pixel",
        "tile_query": "landsat:wrs",
        "grid_prefix": "WRS2-",
    },
}
TILE_QUERIES = ("grid:code", "mgrs", "s2:mgrs_tile", "landsat:wrs", "none")
SELECTIONS = ("clearest", "all")
CLEAREST_PER = ("window", "day", "week", "month")
_WRS_RE = re.compile(r"^(\d{1,3})[/_-]?(\d{3})$")
_RASTER_TYPES = ("image/tiff", "image/vnd.stac.geotiff", "application/x-geotiff")


def _tile_key(tile: str, platform: str) -> str:
    """Normalised tile id; raises UnknownTileError for an id the platform cannot have."""
    t = str(tile).strip().upper()
    if platform == "landsat-c2l2-sr":
        m = _WRS_RE.match(t)
        if not m:
            raise UnknownTileError(
                f"unknown tile {tile!r}: Landsat tiles are WRS-2 path/row like '044034' (PPPRRR)"
            )
        return f"{int(m[1]):03d}{m[2]}"
    from clay_core.tiles import parse_tile

    zone, band, square = parse_tile(t)
    return f"{zone:02d}{band}{square}"  # Sentinel-2 spells zones with two digits


def item_tile(props: dict[str, Any]) -> str | None:
    """The tile id an item's properties name (MGRS ``31UFU`` or WRS-2 ``044034``), or None."""
    code = props.get("grid:code")
    if isinstance(code, str) and "-" in code:
        return code.split("-", 1)[1].upper()
    if "mgrs:utm_zone" in props and "mgrs:latitude_band" in props and "mgrs:grid_square" in props:
        return f"{int(props['mgrs:utm_zone']):02d}{props['mgrs:latitude_band']}{props['mgrs:grid_square']}".upper()
    if isinstance(props.get("s2:mgrs_tile"), str):
        return props["s2:mgrs_tile"].upper()
    if "sentinel:utm_zone" in props:  # Earth Search v0
        return f"{int(props['sentinel:utm_zone']):02d}{props['sentinel:latitude_band']}{props['sentinel:grid_square']}".upper()
    if "landsat:wrs_path" in props and "landsat:wrs_row" in props:
        return f"{int(props['landsat:wrs_path']):03d}{int(props['landsat:wrs_row']):03d}"
    return None


def _norm_tile(t: str) -> str:
    t = t.strip().upper()
    m = re.match(r"^(\d{1,2})([A-Z]{3})$", t)
    return f"{int(m[1]):02d}{m[2]}" if m else t  # "1ABC" == "01ABC"


def _same_tile(a: str | None, b: str) -> bool:
    return a is not None and _norm_tile(a) == _norm_tile(b)


class StacSource(SceneSource):
    """Scenes of a STAC API or static catalogue, read as COGs over https:// or s3://.

    Args:
        url: STAC API landing page, or a static ``catalog.json`` / ``collection.json``
            (http(s) URL or local path).
        collection: collection id (platform default: ``sentinel-2-l2a`` / ``landsat-c2-l2``).
        max_cloud: keep items with ``eo:cloud_cover <= max_cloud`` (percent), or None.
        selection: ``"clearest"`` (least cloudy per ``clearest_per``) or ``"all"``.
        asset_map: Clay band name -> asset key where they differ (``{"blue": "B02"}``).
        qa_asset: the QA asset key (platform default ``scl`` / ``qa_pixel``).
        s3_endpoint: ``http(s)://host:port`` of an S3-compatible endpoint for ``s3://`` assets.
        aws_anonymous: unsigned S3 requests (public buckets).
        requester_pays: send ``x-amz-request-payer: requester`` (e.g. ``usgs-landsat``).
        timeout: seconds for each catalogue request and each raster request.
        platform: ``sentinel-2-l2a`` or ``landsat-c2l2-sr``.
        clearest_per: ``"window"`` | ``"day"`` | ``"week"`` | ``"month"``.
        tile_query: how the tile is put in the search (see the module docstring).
        grids: explicit tile grids ``{tile: {"crs", "transform", "height", "width"}}``.
        aws_region: region of the S3 bucket (GDAL default us-east-1; redirects are followed).
        nodata: DN value meaning no data (0 for both platforms).
        max_workers: assets read in parallel per scene.
        page_size: items per search page.
        max_retries: retries of a catalogue request (connection errors, 429/5xx; never a
            read timeout) and of a raster request (GDAL: 429/5xx and timeouts), so a dead
            asset server fails after about ``(max_retries + 1) * 2 * timeout`` seconds.
        harmonize: Sentinel-2 only: subtract the +1000 DN offset of processing baseline
            >= 04.00 (see :meth:`boa_offset`) so every date is on the pre-2022 DN scale.
    """

    def __init__(
        self,
        url: str = EARTH_SEARCH,
        collection: str | None = None,
        max_cloud: float | None = None,
        selection: str = "clearest",
        asset_map: dict[str, str] | None = None,
        qa_asset: str | None = None,
        s3_endpoint: str | None = None,
        aws_anonymous: bool = True,
        requester_pays: bool = False,
        timeout: float = 20,
        platform: str = "sentinel-2-l2a",
        clearest_per: str = "week",
        tile_query: str | None = None,
        grids: dict[str, dict[str, Any]] | None = None,
        aws_region: str | None = None,
        nodata: int = 0,
        max_workers: int = 4,
        page_size: int = 100,
        max_retries: int = 2,
        harmonize: bool = True,
    ) -> None:
        if platform not in PLATFORMS:
            raise ConfigError(f"StacSource platform {platform!r} is not supported: use one of {sorted(PLATFORMS)}")
        if selection not in SELECTIONS:
            raise ConfigError(f"selection={selection!r}: expected one of {SELECTIONS}")
        if clearest_per not in CLEAREST_PER:
            raise ConfigError(f"clearest_per={clearest_per!r}: expected one of {CLEAREST_PER}")
        defaults = PLATFORMS[platform]
        tile_query = tile_query or defaults["tile_query"]
        if tile_query not in TILE_QUERIES:
            raise ConfigError(f"tile_query={tile_query!r}: expected one of {TILE_QUERIES}")
        if max_cloud is not None and not 0 <= float(max_cloud) <= 100:
            raise ConfigError(f"max_cloud={max_cloud} must be a percentage in [0, 100]")
        if float(timeout) <= 0:
            raise ConfigError(f"timeout={timeout} must be positive (seconds)")
        self.url = str(url)
        self.collection = collection or defaults["collection"]
        self.max_cloud = None if max_cloud is None else float(max_cloud)
        self.selection = selection
        self.asset_map = dict(asset_map or {})
        self.qa_asset = qa_asset or defaults["qa_asset"]
        self.qa_format = defaults["qa_format"]
        assert self.qa_format in QA_FORMATS
        self.s3_endpoint = s3_endpoint
        self.aws_anonymous = bool(aws_anonymous)
        self.requester_pays = bool(requester_pays)
        self.timeout = float(timeout)
        self.platform = platform
        self.clearest_per = clearest_per
        self.tile_query = tile_query
        self.grids = dict(grids or {})
        self.aws_region = aws_region
        self.nodata = nodata
        self.max_workers = max(1, int(max_workers))
        self.page_size = max(1, int(page_size))
        self.max_retries = max(0, int(max_retries))
        self.harmonize = bool(harmonize)
        self._offsets: dict[str, int] = {}  # scene id -> BOA DN offset (Sentinel-2)
        self._grid_cache: dict[str, TileGrid] = {}
        self._client_obj: Any = None
        gdal_env_options(s3_endpoint=s3_endpoint)  # validate the endpoint now

    def __repr__(self) -> str:
        return f"StacSource(url={redact(self.url)!r}, collection={self.collection!r})"

    # ------------------------------------------------------------------ catalogue

    @property
    def _where(self) -> str:
        return f"STAC {redact(self.url)}"

    def _fail(self, what: str, exc: BaseException) -> SceneError:
        msg = redact(str(exc)) or type(exc).__name__
        timeout = "timed out" in msg.lower() or "timeout" in type(exc).__name__.lower()
        hint = (
            f"no answer within timeout={self.timeout:g} s" if timeout
            else "check the URL, the network and that it is a STAC API or catalogue"
        )  # fmt: skip
        return SceneError(f"{self._where}: {what} failed ({hint}): {msg}")

    def _client(self, fresh: bool = False):
        """The pystac-client Client (kept for an API; ``fresh`` re-reads a static catalogue,
        whose resolved children pystac would otherwise cache forever)."""
        if self._client_obj is not None and not fresh:
            return self._client_obj
        from pystac_client import Client
        from pystac_client.stac_api_io import StacApiIO
        from urllib3 import Retry

        n = self.max_retries
        retry = Retry(total=n, connect=n, read=0, status=n, backoff_factor=0.2,
                      status_forcelist=(429, 502, 503, 504), allowed_methods=None)  # fmt: skip
        io = StacApiIO(timeout=self.timeout, max_retries=retry)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # Client.open re-applies its own timeout to stac_io: pass it again
                self._client_obj = Client.open(self.url, stac_io=io, timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001 - requests, pystac, json and OS errors alike
            raise self._fail("opening the catalogue", exc) from exc
        return self._client_obj

    @cached_property
    def is_api(self) -> bool:
        """True for a STAC API with item search, False for a static catalogue."""
        from pystac_client import ConformanceClasses

        client = self._client()
        return bool(client.conforms_to(ConformanceClasses.ITEM_SEARCH)) or (
            not client.has_conforms_to() and client.get_search_link() is not None
        )

    def _tile_query(self, tile: str) -> dict[str, Any]:
        q: dict[str, Any] = {}
        prefix = PLATFORMS[self.platform]["grid_prefix"]
        if self.tile_query == "grid:code":
            q["grid:code"] = {"eq": f"{prefix}{tile}"}
        elif self.tile_query == "mgrs":
            m = re.match(r"^(\d{1,2})([A-Z])([A-Z]{2})$", tile)
            if not m:
                raise UnknownTileError(f"tile {tile!r} is not an MGRS id: tile_query='mgrs' needs one")
            q["mgrs:utm_zone"] = {"eq": int(m[1])}
            q["mgrs:latitude_band"] = {"eq": m[2]}
            q["mgrs:grid_square"] = {"eq": m[3]}
        elif self.tile_query == "s2:mgrs_tile":
            q["s2:mgrs_tile"] = {"eq": tile}
        elif self.tile_query == "landsat:wrs":
            if not tile.isdigit() or len(tile) != 6:
                raise UnknownTileError(f"tile {tile!r} is not a WRS-2 path/row: tile_query='landsat:wrs' needs one")
            q["landsat:wrs_path"] = {"eq": tile[:3]}
            q["landsat:wrs_row"] = {"eq": tile[3:]}
        return q

    def _items(self, tile: str, start: datetime | None, end: datetime | None, max_items: int | None = None) -> list:
        """Items of ``tile`` (checked here) in [start, end) within max_cloud."""
        client = self._client()
        what = f"searching {self.collection} for tile {tile}"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if self.is_api:
                    raw: Iterable = self._api_search(client, tile, start, end, max_items)
                else:
                    raw = self._client(fresh=True).get_items(recursive=True)
                out = []
                for item in raw:
                    if self._keep(item, tile, start, end):
                        out.append(item)
                        if max_items and len(out) >= max_items:
                            break
        except (SceneError, UnknownTileError):
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._fail(what, exc) from exc
        return out

    def _api_search(self, client, tile, start, end, max_items):
        from pystac_client import ConformanceClasses

        kwargs: dict[str, Any] = {"collections": [self.collection], "limit": self.page_size}
        if start is not None or end is not None:
            fmt = lambda d: "" if d is None else d.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
            kwargs["datetime"] = f"{fmt(start) or '..'}/{fmt(end) or '..'}"
        query = self._tile_query(tile)
        if self.max_cloud is not None:
            query["eo:cloud_cover"] = {"lte": self.max_cloud}
        if client.conforms_to(ConformanceClasses.QUERY):
            if query:
                kwargs["query"] = query
        elif self.platform == "sentinel-2-l2a":  # no query extension: a point inside the tile
            from pyproj import Transformer

            from clay_core.tiles import s2_tile_grid

            g = s2_tile_grid(tile)
            x, y = g.transform @ (g.width / 2, g.height / 2)
            lon, lat = Transformer.from_crs(g.crs, "EPSG:4326", always_xy=True).transform(x, y)
            kwargs["intersects"] = {"type": "Point", "coordinates": [lon, lat]}
        if max_items:
            kwargs["max_items"] = max(max_items, 10)
        return client.search(**kwargs).items()

    def _keep(self, item, tile: str, start: datetime | None, end: datetime | None) -> bool:
        if item.collection_id and item.collection_id != self.collection:
            return False
        if not _same_tile(item_tile(item.properties), tile):
            return False
        t = self._item_time(item)
        if t is None or (start is not None and t < start) or (end is not None and t >= end):
            return False
        cc = item.properties.get("eo:cloud_cover")
        if self.max_cloud is not None and cc is not None and float(cc) > self.max_cloud:
            return False
        return True

    @staticmethod
    def _item_time(item) -> datetime | None:
        t = item.datetime
        if t is None:
            s = item.properties.get("start_datetime")
            if not s:
                return None
            t = datetime.fromisoformat(s.replace("Z", "+00:00"))
        return as_utc(t)

    # ------------------------------------------------------------------ assets

    def _band_of_asset(self, key: str) -> str:
        inverse = {v: k for k, v in self.asset_map.items()}
        return inverse.get(key) or canonical_band(key, self.platform)

    @staticmethod
    def _is_raster(asset) -> bool:
        mt = (asset.media_type or "").lower()
        href = asset.href.lower().split("?")[0]
        return any(t in mt for t in _RASTER_TYPES) or href.endswith((".tif", ".tiff"))

    def _hrefs(self, item) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, asset in item.assets.items():
            if self._is_raster(asset):
                band = self._band_of_asset(key)
                out.setdefault(band, asset.get_absolute_href() or asset.href)
        return out

    @property
    def qa_band(self) -> str:
        """The SceneRef.hrefs key of the QA asset."""
        return self._band_of_asset(self.qa_asset)

    def _ref(self, item, tile: str) -> SceneRef:
        self._remember(item)
        cc = item.properties.get("eo:cloud_cover")
        return SceneRef(
            scene_id=item.id, tile=tile, platform=self.platform, datetime=self._item_time(item),
            hrefs=self._hrefs(item), cloud_cover=None if cc is None else float(cc),
        )  # fmt: skip

    # ------------------------------------------------------------------ selection

    @staticmethod
    def _newest_processing(items: list) -> Any:
        def key(it):
            p = it.properties
            return (str(p.get("s2:processing_baseline", "")), str(p.get("updated", "")), it.id)

        return max(items, key=key)

    def _period(self, t: datetime) -> Any:
        if self.clearest_per == "day":
            return t.date()
        if self.clearest_per == "week":
            return t.isocalendar()[:2]
        if self.clearest_per == "month":
            return (t.year, t.month)
        return None

    def _select(self, items: list) -> list:
        by_time: dict[datetime, list] = {}
        for it in items:
            by_time.setdefault(self._item_time(it), []).append(it)
        unique = [self._newest_processing(v) for _, v in sorted(by_time.items(), key=lambda kv: kv[0])]
        if self.selection == "all":
            return unique
        groups: dict[Any, list] = {}
        for it in unique:
            groups.setdefault(self._period(self._item_time(it)), []).append(it)

        def cloud_rank(it):
            cc = it.properties.get("eo:cloud_cover")
            return (float("inf") if cc is None else float(cc), self._item_time(it))

        chosen = [min(g, key=cloud_rank) for g in groups.values()]
        return sorted(chosen, key=self._item_time)

    # ------------------------------------------------------------------ interface

    def list_scenes(self, tile: str, start: datetime, end: datetime) -> list[SceneRef]:
        key = _tile_key(tile, self.platform)
        items = self._items(key, as_utc(start), as_utc(end))
        return [self._ref(it, tile.strip()) for it in self._select(items)]

    def grid(self, tile: str) -> TileGrid:
        key = _tile_key(tile, self.platform)
        if key in self._grid_cache:
            return self._grid_cache[key]
        spec = self.grids.get(tile) or self.grids.get(key)
        if spec is not None:
            g = grid_from_dict(tile.strip(), spec)
        else:
            items = self._items(key, None, None, max_items=1)
            if not items:
                raise UnknownTileError(
                    f"tile {tile!r} is not served by {self!r}: no {self.collection} item has it "
                    f"({self.tile_query} = {PLATFORMS[self.platform]['grid_prefix']}{key})"
                )
            g = self._item_grid(items[0], tile.strip())
        self._grid_cache[key] = g
        return g

    def _item_grid(self, item, tile: str) -> TileGrid:
        """Grid of the item's finest data asset from proj:* (asset, then item level)."""
        best: tuple[float, TileGrid] | None = None
        qa = self.qa_asset
        for key, asset in item.assets.items():
            if key == qa or not self._is_raster(asset):
                continue
            f = {**item.properties, **asset.extra_fields}
            code = f.get("proj:code") or (f"EPSG:{f['proj:epsg']}" if f.get("proj:epsg") else None)
            tr, shape = f.get("proj:transform"), f.get("proj:shape")
            if not (code and tr and shape):
                continue
            g = TileGrid(tile=tile, crs=crs_string(code), transform=Affine(*map(float, list(tr)[:6])),
                         height=int(shape[0]), width=int(shape[1]))  # fmt: skip
            if best is None or abs(g.transform.a) < best[0] - 1e-9:
                best = (abs(g.transform.a), g)
        if best is not None:
            return best[1]
        hrefs = {k: v for k, v in self._hrefs(item).items() if k != self.qa_band}
        if not hrefs:
            raise SceneError(f"{self._where}: item {item.id} has no GeoTIFF asset to take the grid from")
        href = sorted(hrefs.items())[0][1]
        with self._env(), open_raster(href, f"grid of item {item.id}") as src:
            return grid_of(src, tile)

    def _env(self):
        return gdal_env(
            s3_endpoint=self.s3_endpoint, aws_anonymous=self.aws_anonymous,
            requester_pays=self.requester_pays, timeout=self.timeout, aws_region=self.aws_region,
            max_retry=self.max_retries,
        )  # fmt: skip

    def _fetch_item(self, ref: SceneRef):
        client = self._client()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if self.is_api:
                    items = list(client.search(ids=[ref.scene_id], collections=[self.collection]).items())
                else:
                    items = [i for i in self._client(fresh=True).get_items(recursive=True) if i.id == ref.scene_id]
        except Exception as exc:  # noqa: BLE001
            raise self._fail(f"fetching item {ref.scene_id}", exc) from exc
        if not items:
            raise SceneError(f"{self._where}: item {ref.scene_id} not found in {self.collection}")
        self._remember(items[0])
        return items[0]

    def _hrefs_for(self, ref: SceneRef) -> dict[str, str]:
        if ref.hrefs:
            return dict(ref.hrefs)
        return self._hrefs(self._fetch_item(ref))

    @staticmethod
    def boa_offset(props: dict[str, Any]) -> int:
        """DN offset to ADD to a Sentinel-2 L2A item's reflectance to harmonise it with
        processing baselines before 04.00: -1000 from baseline 04.00 on (ESA's
        ``BOA_ADD_OFFSET``), unless the provider already removed it
        (``earthsearch:boa_offset_applied: true``); else 0."""
        if props.get("earthsearch:boa_offset_applied") is True:
            return 0
        try:
            baseline = float(str(props.get("s2:processing_baseline", "0")).strip() or 0)
        except ValueError:
            return 0
        return -1000 if baseline >= 4.0 else 0

    def _remember(self, item) -> None:
        if self.platform == "sentinel-2-l2a":
            self._offsets[item.id] = self.boa_offset(item.properties)

    def _offset_for(self, ref: SceneRef) -> int:
        if not self.harmonize or self.platform != "sentinel-2-l2a":
            return 0
        if ref.scene_id not in self._offsets:
            self._fetch_item(ref)  # a ref from another process: ask the catalogue once
        return self._offsets.get(ref.scene_id, 0)

    def _read(self, href: str, grid: TileGrid, resampling: Resampling, fill: int, what: str) -> np.ndarray:
        with self._env(), open_raster(href, what) as src:
            return read_to_grid(src, grid, 1, resampling, fill, href)

    def load_scene(self, ref: SceneRef, bands: list[str]) -> Scene:
        grid = self.grid(ref.tile)
        hrefs = self._hrefs_for(ref)
        qa_band = self.qa_band
        for b in list(bands) + [qa_band]:
            if b not in hrefs:
                raise SceneError(
                    f"scene {ref.scene_id}: {'QA ' if b == qa_band else ''}band {b!r} is missing -- the "
                    f"item has GeoTIFF assets {sorted(hrefs)}; map band names to asset keys with "
                    "asset_map (e.g. {'blue': 'B02'}) or set qa_asset"
                )
        jobs = [(hrefs[b], resampling_for(b, qa_band), self.nodata, f"band {b} of scene {ref.scene_id}")
                for b in bands]  # fmt: skip
        jobs.append((hrefs[qa_band], Resampling.nearest, qa_fill(self.qa_format), f"QA band {qa_band} of scene {ref.scene_id}"))
        if self.max_workers > 1 and len(jobs) > 1:
            with ThreadPoolExecutor(max_workers=min(self.max_workers, len(jobs))) as pool:
                arrays = list(pool.map(lambda j: self._read(j[0], grid, *j[1:]), jobs))
        else:
            arrays = [self._read(h, grid, r, f, w) for h, r, f, w in jobs]
        qa = to_scl(arrays.pop(), self.qa_format)
        if arrays:
            dtype = np.result_type(*[a.dtype for a in arrays])
            data = np.stack(arrays).astype(dtype, copy=False)
        else:
            data = np.zeros((0, grid.height, grid.width), np.uint16)
        offset = self._offset_for(ref) if len(bands) else 0
        if offset:  # harmonise: DN - 1000, valid pixels stay >= 1, nodata stays nodata
            valid = data != self.nodata
            data = (np.maximum(data, 1 - offset) - (-offset)).astype(data.dtype)  # no int promotion
            data[~valid] = self.nodata
        return Scene(ref=ref, grid=grid, bands=list(bands), data=data, qa=qa, nodata=self.nodata)

    def describe(self) -> str:
        """One JSON line for logs / Dagster metadata (no credentials)."""
        return json.dumps({
            "url": redact(self.url), "collection": self.collection, "platform": self.platform,
            "selection": self.selection, "clearest_per": self.clearest_per, "max_cloud": self.max_cloud,
            "s3_endpoint": redact(self.s3_endpoint or ""), "aws_anonymous": self.aws_anonymous,
            "requester_pays": self.requester_pays, "harmonize": self.harmonize,
        })  # fmt: skip
