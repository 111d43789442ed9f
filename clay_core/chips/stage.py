"""The ``chip_cubes`` stage: a partition's scenes cut into chips and stored as one cube.

Per partition directory: ``cube.zarr`` (or a cube published on S3), a GeoParquet chip index
with lineage hrefs, PNG thumbnails and a mosaic, and the manifest, all swapped in at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clay_core.chips.chipper import chip_source_scene
from clay_core.chips.chipset import ChipParams, ChipSet
from clay_core.chips.cube import to_dataset, write_cube
from clay_core.chips.index import thumb_name, write_index
from clay_core.dask_cluster import client_for, fan_out_ordered, wait_for_workers, waiter
from clay_core.render import mosaic, png_bytes, rgb_image, stretch_limits
from clay_core.sources.base import SceneSource
from clay_core.sources.stage import read_partition_scenes
from clay_core.storage import CHIPS, Layout, atomic_dir, write_manifest
from clay_core.types import PartitionId, SceneRef

__all__ = ["ChipCubeResult", "make_chip_cube", "chip_scenes"]


@dataclass(frozen=True)
class ChipCubeResult:
    """What :func:`make_chip_cube` wrote for one partition."""

    pid: PartitionId
    directory: Path  # the partition directory
    cube_uri: str | None  # where the cube is now (manifest and index store it relative); None without chips
    chips: int
    chip_size: int
    bands: list[str]
    scene_ids: list[str]  # the scenes read, in manifest order
    dropped: dict[str, int]  # chips the filters removed, by reason
    cloud_fraction: np.ndarray  # [chips] of the kept chips
    nodata_fraction: np.ndarray  # [chips]
    thumbnails: list[np.ndarray]  # uint8 RGB [h, w, 3] per kept chip
    chip_ids: tuple[str, ...] = ()  # per kept chip, aligned with ``thumbnails``
    cloud_screening: str = "scl"  # what screened clouds: a QA format, "off" (nodata only) or "partial"

    @property
    def empty(self) -> bool:
        return self.chips == 0

    def fractions_in_range(self, params: ChipParams) -> bool:
        """Whether every kept chip's cloud and nodata fractions are in [0, the threshold]."""
        c, n = self.cloud_fraction, self.nodata_fraction
        return bool(np.all((c >= 0) & (c <= params.max_cloud)) and np.all((n >= 0) & (n <= params.max_nodata)))


def make_chip_cube(
    layout: Layout,
    pid: PartitionId,
    source: SceneSource,
    params: ChipParams,
    bands: Sequence[str],
    cube_location: str | None = None,
    storage_options: dict | None = None,
    log: Callable[[str], None] | None = None,
    scheduler_address: str | None = None,
) -> ChipCubeResult:
    """Chip the scenes of ``pid``'s raw manifest and write the partition's chip directory.

    Local rasters are streamed chip row by chip row straight from the files; other sources
    load each scene. ``cube_location`` None puts ``cube.zarr`` inside the partition
    directory; an ``s3://`` URI writes the cube there (``storage_options``: see
    :func:`clay_core.chips.cube.write_cube`) and records that URI. ``log`` gets one line per
    scene. The directory replaces the previous one only when everything was written.
    ``scheduler_address``: each scene is chipped as one task on that Dask cluster (the source
    travels to the workers, which read the scenes themselves); the cube is the same.
    """
    refs = read_partition_scenes(layout, pid)
    sets = chip_scenes(source, refs, list(bands), params, scheduler_address=scheduler_address, log=log)
    chips = ChipSet.concat(sets, list(bands), params.chip_size)
    screening = _cloud_screening(source, refs)
    final = layout.partition_dir(CHIPS, pid)
    images: list[np.ndarray] = []
    cube_uri = None
    with atomic_dir(final) as tmp:
        if len(chips):
            names, images = _write_thumbnails(chips, tmp, final)
            ds = to_dataset(chips, params.chip_size)
            if cube_location is not None:
                cube_uri = write_cube(ds, cube_location, storage_options=storage_options)
            else:
                write_cube(ds, tmp / "cube.zarr")
                cube_uri = str(final / "cube.zarr")
            # Stored relative to the layout root (s3:// URIs as they are): a copied root reads its own cube.
            write_index(chips, tmp / "index.parquet", [layout.relative(n) for n in names], layout.relative(cube_uri))
            (tmp / "mosaic.png").write_bytes(png_bytes(mosaic(images, labels=_labels(chips))))
        write_manifest(tmp, {"tile": pid.tile, "window": pid.window, "chips": len(chips), "chip_size": params.chip_size,
                             "cube_uri": cube_uri and layout.relative(cube_uri), "bands": chips.bands,
                             "dropped": chips.dropped, "scenes": len(refs),
                             "cloud_screening": screening})  # fmt: skip
    meta = chips.meta
    return ChipCubeResult(
        chip_ids=tuple(str(c) for c in meta["chip_id"]) if len(chips) else (), cloud_screening=screening,
        pid=pid, directory=final, cube_uri=cube_uri, chips=len(chips), chip_size=params.chip_size,
        bands=list(chips.bands), scene_ids=[r.scene_id for r in refs], dropped=dict(chips.dropped),
        cloud_fraction=meta["cloud_fraction"].to_numpy() if len(chips) else np.zeros(0),
        nodata_fraction=meta["nodata_fraction"].to_numpy() if len(chips) else np.zeros(0),
        thumbnails=images,
    )  # fmt: skip


def chip_scenes(source: SceneSource, refs: Sequence[SceneRef], bands: list[str], params: ChipParams, *,
                scheduler_address: str | None = None, log: Callable[[str], None] | None = None) -> list[ChipSet]:
    """:func:`chip_source_scene` of every scene, in order: here, or one task per scene on the
    Dask cluster at ``scheduler_address`` (at most two scenes per worker in flight; a scene
    whose worker dies is chipped again on another)."""

    def logged(ref: SceneRef, cs: ChipSet) -> ChipSet:
        if log is not None:
            log(f"{ref.scene_id}: kept {len(cs)} chips, dropped {cs.dropped}")
        return cs

    if not scheduler_address or not refs:
        return [logged(ref, chip_source_scene(source, ref, bands, params)) for ref in refs]
    client = client_for(scheduler_address)
    window = 2 * wait_for_workers(client)
    # The (small) source travels inside each task, not as scattered data: a task must be
    # able to rerun on another worker when its worker dies. pure=False: a rerun re-reads.
    def submit(i: int):
        return client.submit(chip_source_scene, source, refs[i], bands, params, pure=False)

    sets: list[ChipSet | None] = [None] * len(refs)
    for i, cs in fan_out_ordered(submit, len(refs), waiter(client), window=window):
        sets[i] = logged(refs[i], cs)
    return sets  # type: ignore[return-value]


def _cloud_screening(source: SceneSource, refs: list) -> str:
    """What screened clouds in this partition: one QA format, "off" (no QA band: nodata only),
    or "partial" when its scenes differ; the source's own answer when there are no scenes."""
    kinds = {source.cloud_screening_of(r) for r in refs} if refs else {source.cloud_screening}
    return kinds.pop() if len(kinds) == 1 else "partial"


def _labels(chips: ChipSet) -> list[str]:
    """Mosaic captions: chip id, acquisition day and cloud fraction."""
    m = chips.meta
    return [f"{c}\n{str(d)[:10]} cloud {f:.2f}" for c, d, f in zip(m["chip_id"], m["datetime"], m["cloud_fraction"])]


def _write_thumbnails(chips: ChipSet, tmp: Path, final: Path) -> tuple[list[str], list[np.ndarray]]:
    """One RGB PNG per chip under ``tmp/thumbs``; returns their final paths and the images."""
    (tmp / "thumbs").mkdir()
    names, images = [], []
    limits = stretch_limits(chips.pixels, chips.bands)  # one stretch per partition: chips stay comparable
    for i, row in chips.meta.iterrows():
        img = rgb_image(chips.pixels[i], chips.bands, limits=limits)
        name = thumb_name(row["chip_id"], row["datetime"])
        (tmp / "thumbs" / name).write_bytes(png_bytes(img))
        names.append(str(final / "thumbs" / name))
        images.append(img)
    return names, images
