"""`clay-assets export` and `clay-assets import`: embeddings as GeoParquet or Zarr with a STAC
collection, and back into ``clay.chips`` (:mod:`clay_core.exchange`)."""

from __future__ import annotations

import argparse

from clay_assets.cli.common import database_url as _database_url
from clay_assets.cli.common import load_config as _config
from clay_assets.cli.common import query_store as _query_store


def export_info(cfg):
    """The STAC description of this platform's embeddings: model preset, platform, the bands
    the chips hold (from a chips manifest, else the platform's), pixel size, chip size, source."""
    from clay_core.exchange import ExportInfo
    from clay_core.platforms import get_platform

    platform = get_platform(cfg.platform)
    names = _chip_bands(cfg) or platform.band_names
    bands = []
    for b in platform.select(names):
        bands.append({"name": b.name, "eo:center_wavelength": b.wavelength_um, "mean": b.mean, "std": b.std})
    return ExportInfo(preset=cfg.preset, platform=platform.name, bands=bands, gsd=platform.gsd,
                      chip_size=cfg.chip_size, source_href=_source_href(cfg))


def _chip_bands(cfg) -> list[str] | None:
    """The bands of the first chips manifest under $CLAY_HOME/data/chips (None without one)."""
    from clay_core.storage import read_manifest

    root = cfg.home / "data" / "chips"
    for manifest in sorted(root.glob("*/*/manifest.json")) if root.is_dir() else []:
        bands = read_manifest(manifest.parent).get("bands")
        if bands:
            return [str(b) for b in bands]
    return None


def _source_href(cfg) -> str:
    if cfg.source == "stac":
        return f"{cfg.stac_url.rstrip('/')}/collections/{cfg.stac_collection or cfg.platform}"
    if cfg.source == "local" and cfg.source_root:
        return f"file://{cfg.source_root}"
    if cfg.source == "cube":
        return cfg.cube_path
    return f"urn:clay-assets:source:{cfg.source}"


def cmd_export(args: argparse.Namespace) -> int:
    from clay_core.exchange import export_embeddings

    cfg = _config()
    tiles = [t.strip().upper() for t in args.tiles.split(",")] if args.tiles else None
    store = _query_store(_database_url(cfg), cfg)
    try:
        res = export_embeddings(store, args.out, args.format, tiles=tiles, info=export_info(cfg))
    finally:
        store.close()
    exact = "exact" if not res.footprint_fallbacks else f"{res.footprint_fallbacks} as WGS84 envelopes"
    print(f"exported {res.rows} chip observations ({res.tiles} tile(s), {res.dim}-d float32, "
          f"footprints {exact}) in {res.seconds:.1f}s:\n  {res.data}\n  {res.collection}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from clay_core.encoder import resolve_config
    from clay_core.exchange import import_embeddings

    from clay_assets.resources.build import vector_db

    cfg = _config()
    # unlike the query commands, import may start from nothing: a new CLAY_HOME gets its
    # embedded server, as `clay-assets run` would make it
    url = vector_db(cfg, cfg.home).url()
    res = import_embeddings(url, args.path, expect_dim=resolve_config(cfg.preset)["dim"])
    print(f"imported {res.rows} chip observations into {res.partitions} partition(s) of clay.chips "
          f"({res.dim}-d) in {res.seconds:.1f}s")
    return 0


def add_parsers(sub) -> None:
    e = sub.add_parser("export", help="write clay.chips as GeoParquet or Zarr, with a STAC collection")
    e.add_argument("--format", choices=["geoparquet", "zarr"], default="geoparquet")
    e.add_argument("--out", required=True, help="a new folder for the data file and the STAC collection")
    e.add_argument("--tiles", help="only these tiles, comma-separated")
    e.set_defaults(fn=cmd_export)
    i = sub.add_parser("import", help="load an export (folder, .parquet or .zarr) into clay.chips")
    i.add_argument("path", help="an export folder (with collection.json), a .parquet file or a .zarr store")
    i.set_defaults(fn=cmd_import)
