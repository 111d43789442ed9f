"""Embedding engine on the CPU: parity, determinism, batching, lazy inputs (the Dask cluster path: test_dask_cluster.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xarray as xr

from clay_core.encoder import (
    EmbeddingResult,
    build_encoder,
    embed_chips,
    encode_latlon,
    encode_time,
    load_encoder,
    normalize,
    resolve_device,
    waves_for,
)
from clay_core.errors import ConfigError
from clay_core.platforms import get_platform

PARITY = Path(__file__).resolve().parents[2] / "data" / "clay_parity"
S2 = "sentinel-2-l2a"
BANDS = ["blue", "green", "red", "nir"]
CHIP = 32  # 4 x 4 patches keeps every test fast


@pytest.fixture(scope="module")
def encoder():
    return build_encoder("tiny", seed=0)


@pytest.fixture(scope="module")
def chips() -> np.ndarray:
    rng = np.random.default_rng(42)
    return rng.integers(0, 8000, size=(9, len(BANDS), CHIP, CHIP), dtype=np.uint16)


@pytest.fixture(scope="module")
def meta() -> dict[str, Any]:
    dates = [np.datetime64("2024-01-01T10:00") + np.timedelta64(7 * i, "D") for i in range(9)]
    return {"datetimes": np.array(dates), "lat": np.linspace(-10, 10, 9), "lon": np.linspace(100, 120, 9)}


def _embed(encoder, pixels, meta, **kw) -> EmbeddingResult:
    return embed_chips(encoder, pixels, platform=S2, bands=BANDS, **meta, **kw)


class RecordingArray:
    """Array-like that logs every read and refuses reads larger than ``max_rows``."""

    def __init__(self, data: np.ndarray, max_rows: int) -> None:
        self._data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.max_rows = max_rows
        self.reads: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, item: slice) -> np.ndarray:
        start, stop, _ = item.indices(self.shape[0])
        if stop - start > self.max_rows:
            raise AssertionError(f"read {stop - start} chips at once")
        self.reads.append((start, stop))
        return self._data[item]


def test_engine_reproduces_reference_embeddings():
    case = json.loads((PARITY / "case.json").read_text())
    with np.load(PARITY / "case.npz") as z:
        raw, expected = z["raw_pixels"], z["expected_output"]
    enc = load_encoder(PARITY / "encoder.ckpt", case["encoder_config"])
    lat, lon = np.array(case["latlon_deg"]).T
    res = embed_chips(
        enc, raw, platform=S2, bands=case["bands"], datetimes=case["dates_utc"], lat=lat, lon=lon,
        batch_size=2, patch_tokens=True,
    )  # fmt: skip
    assert res.device == "cpu" and res.dtype == "float32"
    assert np.abs(res.cls - expected[:, 0]).max() <= 1e-5
    assert res.patches is not None and res.patches.dtype == np.float16
    np.testing.assert_allclose(res.patches.astype(np.float32), expected[:, 1:], rtol=2e-3, atol=2e-3)


def test_cpu_runs_are_bit_identical(encoder, chips, meta):
    a = _embed(encoder, chips, meta, batch_size=4, patch_tokens=True)
    b = _embed(encoder, chips, meta, batch_size=4, patch_tokens=True)
    assert a.cls.dtype == np.float32 and a.cls.shape == (9, 192)
    assert np.array_equal(a.cls, b.cls)
    assert np.array_equal(a.patches, b.patches)
    assert a.seconds > 0 and a.chips_per_s > 0


def test_batch_size_invariance(encoder, chips, meta):
    one = _embed(encoder, chips, meta, batch_size=1)
    seven = _embed(encoder, chips, meta, batch_size=7)
    assert np.abs(one.cls - seven.cls).max() <= 1e-5


def test_matches_direct_forward(encoder, chips, meta):
    """The engine's cached kernel/position path equals the module's plain forward."""
    res = _embed(encoder, chips[:3], {k: v[:3] for k, v in meta.items()}, batch_size=3, patch_tokens=True)
    with torch.no_grad():
        out = encoder(
            torch.from_numpy(normalize(chips[:3], S2, BANDS)),
            torch.from_numpy(encode_time(meta["datetimes"][:3])),
            torch.from_numpy(encode_latlon(meta["lat"][:3], meta["lon"][:3])),
            get_platform(S2).gsd,
            torch.from_numpy(waves_for(S2, BANDS)),
        ).numpy()
    assert np.abs(res.cls - out[:, 0]).max() <= 1e-5
    np.testing.assert_allclose(res.patches.astype(np.float32), out[:, 1:], rtol=2e-3, atol=2e-3)


def test_zero_chips(encoder):
    empty = np.zeros((0, len(BANDS), CHIP, CHIP), dtype=np.uint16)
    calls: list[tuple[int, int]] = []
    res = embed_chips(
        encoder, empty, platform=S2, bands=BANDS, datetimes=[], lat=[], lon=[], patch_tokens=True,
        progress=lambda d, t: calls.append((d, t)),
    )  # fmt: skip
    assert res.cls.shape == (0, 192) and res.cls.dtype == np.float32
    assert res.patches is not None and res.patches.shape == (0, 16, 192) and res.patches.dtype == np.float16
    no_patches = embed_chips(encoder, empty, platform=S2, bands=BANDS, datetimes=None, lat=None, lon=None)
    assert no_patches.cls.shape == (0, 192) and no_patches.patches is None


def test_patch_tokens_and_progress(encoder, chips, meta):
    calls: list[tuple[int, int]] = []
    res = _embed(encoder, chips, meta, batch_size=4, patch_tokens=True, progress=lambda d, t: calls.append((d, t)))
    assert res.patches is not None
    assert res.patches.shape == (9, (CHIP // 8) ** 2, 192) and res.patches.dtype == np.float16
    assert calls == [(4, 9), (8, 9), (9, 9)]
    assert _embed(encoder, chips, meta, batch_size=4).patches is None


def test_reads_lazily_batch_by_batch(encoder, chips, meta):
    lazy = RecordingArray(chips, max_rows=4)
    res = _embed(encoder, lazy, meta, batch_size=4)
    assert lazy.reads == [(0, 4), (4, 8), (8, 9)]
    assert np.array_equal(res.cls, _embed(encoder, chips, meta, batch_size=4).cls)


def test_zarr_backed_xarray_input(tmp_path, encoder, chips, meta):
    ds = xr.Dataset({"pixels": (("chip", "band", "y", "x"), chips)})
    ds.to_zarr(tmp_path / "cube.zarr", encoding={"pixels": {"chunks": (2, 4, CHIP, CHIP)}}, consolidated=False)
    lazy = xr.open_zarr(tmp_path / "cube.zarr", chunks=None, consolidated=False)["pixels"]
    assert not isinstance(lazy.variable._data, np.ndarray)  # really not loaded
    res = _embed(encoder, lazy, meta, batch_size=4)
    assert np.array_equal(res.cls, _embed(encoder, chips, meta, batch_size=4).cls)


def test_metadata_changes_embeddings(encoder, chips, meta):
    known = _embed(encoder, chips, meta)
    unknown = embed_chips(encoder, chips, platform=S2, bands=BANDS, datetimes=None, lat=None, lon=None)
    assert np.abs(known.cls - unknown.cls).max() > 1e-4


def test_sentinel1_linear_backscatter(encoder):
    rng = np.random.default_rng(1)
    linear = rng.gamma(1.0, 0.05, size=(3, 2, CHIP, CHIP)).astype(np.float32)
    linear[0, :, :4, :4] = 0.0  # nodata must not turn into -inf
    res = embed_chips(
        encoder, linear, platform="sentinel-1-rtc", bands=["vv", "vh"], datetimes=None, lat=None, lon=None
    )
    assert res.cls.shape == (3, 192) and np.isfinite(res.cls).all()


def test_input_errors_before_any_read(encoder, chips, meta):
    never = RecordingArray(chips, max_rows=0)
    with pytest.raises(ConfigError, match="B08"):
        embed_chips(encoder, never, platform=S2, bands=["blue", "green", "red", "B08"], **meta)
    with pytest.raises(ConfigError, match="4 bands"):
        embed_chips(encoder, never, platform=S2, bands=["blue", "green", "red"], **meta)
    with pytest.raises(ConfigError, match="patch size"):
        _embed(encoder, np.zeros((1, 4, 30, 30), np.uint16), {"datetimes": None, "lat": None, "lon": None})
    with pytest.raises(ConfigError, match="expected 9"):
        embed_chips(encoder, never, platform=S2, bands=BANDS, datetimes=meta["datetimes"][:3], lat=None, lon=None)
    assert never.reads == []


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda") == "cuda"
    else:
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_embed_module_does_not_import_dask_cuda():
    import clay_core.encoder.engine  # noqa: F401

    assert "dask_cuda" not in sys.modules
    import clay_core.encoder.dask_engine  # noqa: F401  (importable on CPU: dask_cuda is imported only when used)

    assert "dask_cuda" not in sys.modules
