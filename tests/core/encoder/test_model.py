"""Clay encoder: parity with the reference fixture, preset shapes, checkpoint loading."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from clay_core.encoder import (
    PRESETS,
    ClayEncoder,
    build_encoder,
    count_parameters,
    encode_latlon,
    encode_time,
    file_sha256,
    forward_flops,
    load_encoder,
    model_id,
    normalize,
    resolve_config,
    waves_for,
)
from clay_core.errors import CheckpointError, ConfigError

DATA = Path(__file__).resolve().parents[2] / "data"
PARITY = DATA / "clay_parity"
CKPT = PARITY / "encoder.ckpt"


@pytest.fixture(scope="module")
def case() -> dict:
    return json.loads((PARITY / "case.json").read_text())


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    with np.load(PARITY / "case.npz") as z:
        return {k: z[k] for k in z.files}


def _run(encoder: ClayEncoder, arrays: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        out = encoder(
            torch.from_numpy(arrays["pixels"]),
            torch.from_numpy(arrays["time"]),
            torch.from_numpy(arrays["latlon"]),
            torch.from_numpy(arrays["gsd"]),
            torch.from_numpy(arrays["waves"]),
        )
    return out.numpy()


# --------------------------------------------------------------------------- parity


def test_parity_with_reference_output(case, arrays):
    encoder = load_encoder(CKPT, case["encoder_config"])
    assert not encoder.training
    out = _run(encoder, arrays)
    assert out.shape == tuple(case["output_shape"])
    assert np.abs(out - arrays["expected_output"]).max() <= 1e-5


def test_parity_gsd_as_python_float(case, arrays):
    encoder = load_encoder(CKPT, case["encoder_config"])
    with torch.no_grad():
        out = encoder(
            torch.from_numpy(arrays["pixels"]),
            torch.from_numpy(arrays["time"]),
            torch.from_numpy(arrays["latlon"]),
            float(arrays["gsd"]),
            torch.from_numpy(arrays["waves"]),
        ).numpy()
    assert np.abs(out - arrays["expected_output"]).max() <= 1e-5


def test_input_helpers_reproduce_fixture_inputs(case, arrays):
    norm = normalize(arrays["raw_pixels"], "sentinel-2-l2a", case["bands"])
    assert norm.dtype == np.float32
    np.testing.assert_allclose(norm, arrays["pixels"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(encode_time(case["dates_utc"]), arrays["time"], rtol=0, atol=1e-6)
    lat, lon = np.array(case["latlon_deg"]).T
    np.testing.assert_allclose(encode_latlon(lat, lon), arrays["latlon"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(waves_for("sentinel-2-l2a", case["bands"]), arrays["waves"])


def test_time_and_location_change_the_output(case, arrays):
    """The metadata rows really reach the patches (a dropped term would go unnoticed otherwise)."""
    encoder = load_encoder(CKPT, case["encoder_config"])
    base = _run(encoder, arrays)
    shifted = dict(arrays, time=np.zeros_like(arrays["time"]), latlon=np.zeros_like(arrays["latlon"]))
    assert np.abs(_run(encoder, shifted) - base).max() > 1e-3


# --------------------------------------------------------------------------- presets


@pytest.mark.parametrize(
    ("preset", "keys_file", "n_params"),
    [
        ("large", "clay_v1.5_large_encoder_keys.json", 311_442_944),
        ("base", "clay_v1_base_encoder_keys.json", 92_102_144),
    ],
)
def test_preset_state_dict_matches_published_keys(preset, keys_file, n_params):
    spec = json.loads((DATA / keys_file).read_text())
    assert PRESETS[preset] == spec["config"]
    with torch.device("meta"):  # no allocation: shapes only
        encoder = ClayEncoder(preset)
    shapes = {k: list(v.shape) for k, v in encoder.state_dict().items()}
    assert shapes == spec["encoder_state_dict_shapes"]
    assert count_parameters(encoder) == n_params


def test_presets_table():
    assert set(PRESETS) == {"large", "base", "small", "tiny"}
    assert PRESETS["small"] == {"patch_size": 8, "dim": 384, "depth": 6, "heads": 6, "dim_head": 64, "mlp_ratio": 2}
    assert PRESETS["tiny"] == {"patch_size": 8, "dim": 192, "depth": 6, "heads": 4, "dim_head": 48, "mlp_ratio": 2}


def test_config_errors():
    with pytest.raises(ConfigError, match="huge"):
        resolve_config("huge")
    with pytest.raises(ConfigError, match="depth"):
        resolve_config({"patch_size": 8, "dim": 128, "heads": 4, "dim_head": 32, "mlp_ratio": 2})
    assert resolve_config({"preset": "tiny", "depth": 2})["depth"] == 2


# --------------------------------------------------------------------------- random init


def test_build_encoder_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = build_encoder("tiny", seed=0)
    assert torch.equal(torch.rand(3), expected_next)
    b = build_encoder("tiny", seed=0)
    c = build_encoder("tiny", seed=1)
    assert not a.training
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["cls_token"], sc["cls_token"])


def test_random_encoder_runs_any_band_count_and_rectangular_chips():
    encoder = build_encoder({"preset": "tiny", "depth": 1})
    x = torch.randn(2, 3, 16, 32)
    meta = torch.zeros(2, 4)
    with torch.no_grad():
        out = encoder(x, meta, meta, 10.0, torch.tensor([0.49, 0.56, 0.66]))
    assert out.shape == (2, 1 + 2 * 4, 192)
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="patch size"):
        encoder(torch.randn(1, 3, 12, 16), meta[:1], meta[:1], 10.0, torch.tensor([0.4, 0.5, 0.6]))


def test_import_keeps_torch_globals_and_skips_dask_cuda():
    code = (
        "import sys, torch; before = torch.get_float32_matmul_precision();"
        "import clay_core.encoder.model, clay_core.encoder.engine;"
        "assert torch.get_float32_matmul_precision() == before, torch.get_float32_matmul_precision();"
        "bad = [m for m in ('dask_cuda', 'distributed', 'clay_core.encoder.dask_engine', 'clay_core.dask_cluster')"
        " if m in sys.modules];"
        "assert not bad, bad; print('ok')"
    )
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


# --------------------------------------------------------------------------- checkpoints


def _lightning() -> dict:
    return torch.load(CKPT, map_location="cpu", weights_only=True)


def test_lightning_checkpoint_with_extra_keys_loads(tmp_path, case, arrays):
    ckpt = _lightning()
    assert any(k.startswith("model.decoder.") for k in ckpt["state_dict"])
    ckpt["state_dict"]["model.teacher.head.weight"] = torch.zeros(3, 3)
    ckpt["state_dict"]["model.mrl.layers.0.weight"] = torch.zeros(2)
    ckpt["state_dict"]["model.decoder.transformer.layers.0.0.to_qkv.weight"] = torch.zeros(4, 4)
    path = tmp_path / "extra.ckpt"
    torch.save(ckpt, path)
    out = _run(load_encoder(path, case["encoder_config"]), arrays)
    assert np.abs(out - arrays["expected_output"]).max() <= 1e-5


def test_plain_state_dict_loads(tmp_path, case, arrays):
    prefix = "model.encoder."
    plain = {k[len(prefix) :]: v for k, v in _lightning()["state_dict"].items() if k.startswith(prefix)}
    path = tmp_path / "plain.pt"
    torch.save(plain, path)
    out = _run(load_encoder(path, case["encoder_config"]), arrays)
    assert np.abs(out - arrays["expected_output"]).max() <= 1e-5

    plain["decoder.extra"] = torch.zeros(1)
    torch.save(plain, path)
    with pytest.raises(CheckpointError, match=r"unexpected.*decoder\.extra"):
        load_encoder(path, case["encoder_config"])


def test_misshaped_tensor_is_named(tmp_path, case):
    ckpt = _lightning()
    key = "model.encoder.transformer.layers.1.0.to_qkv.weight"
    ckpt["state_dict"][key] = torch.zeros(383, 128)
    path = tmp_path / "bad_shape.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as err:
        load_encoder(path, case["encoder_config"])
    msg = str(err.value)
    assert "transformer.layers.1.0.to_qkv.weight" in msg
    assert "(383, 128)" in msg and "(384, 128)" in msg


def test_missing_tensor_is_named(tmp_path, case):
    ckpt = _lightning()
    del ckpt["state_dict"]["model.encoder.transformer.norm.weight"]
    path = tmp_path / "missing.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"missing.*transformer\.norm\.weight"):
        load_encoder(path, case["encoder_config"])


def test_wrong_preset_names_the_preset():
    with pytest.raises(CheckpointError, match="'tiny'") as err:
        load_encoder(CKPT, "tiny")
    assert "mis-shaped" in str(err.value) or "missing" in str(err.value)


class Payload:
    """Any non-tensor class: unpickling it would mean running code from the file."""

    def __init__(self) -> None:
        self.command = "echo owned"


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_arbitrary_pickle_is_refused(tmp_path, case, zip_format):
    ckpt = _lightning()
    ckpt["hyper_parameters"] = {"callback": Payload()}
    path = tmp_path / "evil.ckpt"
    torch.save(ckpt, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(CheckpointError, match="arbitrary code") as err:
        load_encoder(path, case["encoder_config"])
    assert str(path) in str(err.value)


def test_missing_and_corrupt_files(tmp_path, case):
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(CheckpointError, match="not found.*nope.ckpt"):
        load_encoder(missing, case["encoder_config"])
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.ckpt"):
        load_encoder(junk, case["encoder_config"])


# --------------------------------------------------------------------------- ids, counting


def test_file_sha256_and_model_id(case):
    digest = hashlib.sha256(CKPT.read_bytes()).hexdigest()
    assert file_sha256(CKPT) == digest
    assert file_sha256(CKPT, chunk_size=4096) == digest
    assert model_id("tiny", None, 0) == "tiny:random-seed0"
    assert model_id("small", None, 7) == "small:random-seed7"
    assert model_id(dict(PRESETS["large"]), CKPT, 0) == f"large:sha256-{digest[:12]}"
    custom = model_id(case["encoder_config"], CKPT, 0)
    assert custom.startswith("custom-") and custom.endswith(f":sha256-{digest[:12]}")
    assert custom == model_id(case["encoder_config"], CKPT, 0)


def _attention_flops(cfg: dict, chip: int, bands: int, batch: int) -> float:
    """QK^T and AV, which FlopCounterMode does not see in the CPU attention kernels."""
    n = (chip // cfg["patch_size"]) ** 2 + 1
    seq = 128 + bands + 1
    main = cfg["depth"] * 4 * n * n * cfg["heads"] * cfg["dim_head"]
    return main + 4 * seq * seq * 128 / batch


def test_forward_flops_matches_torch_flop_counter():
    cfg = resolve_config({"preset": "tiny", "depth": 2})
    encoder = build_encoder(cfg)
    batch, bands, chip = 2, 4, 32
    meta = torch.zeros(batch, 4)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        encoder(torch.randn(batch, bands, chip, chip), meta, meta, 10.0, torch.linspace(0.4, 0.9, bands))
    ours = forward_flops(cfg, chip, bands, batch_size=batch)
    assert ours - _attention_flops(cfg, chip, bands, batch) == pytest.approx(counter.get_total_flops() / batch)
    # Large preset on a standard chip: ~0.72 TFLOP per chip.
    assert 0.6e12 < forward_flops("large", 256, 10) < 0.8e12
