"""Task heads on the frozen Clay encoder: shapes, frozen encoder, feature cache, metrics, labels,
checkpoints, and training on the synthetic world (the numbers quoted in docs/finetune.md)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, jaccard_score

from clay_core.errors import CheckpointError, ConfigError
from clay_core.encoder import build_encoder, model_id
from clay_core.heads import (
    IGNORE,
    ClassificationHead,
    ClassMetrics,
    FeatureCache,
    FrozenEncoderWithHead,
    HeadSpec,
    RasterLabels,
    RegressionHead,
    SegmentationHead,
    SyntheticLabels,
    TableLabels,
    TrainConfig,
    build_head,
    chip_inputs,
    class_weights_from_counts,
    encode_tokens,
    encoder_identity,
    load_head,
    majority_class,
    make_targets,
    predict,
    preview_image,
    save_head,
    source_chips,
    split_by_tile,
    train_head,
)
from clay_core.sources.synthetic import CLASS_NAMES, SyntheticSceneSource, SyntheticWorld

TILES = ("31UFU", "32UNB", "31TCJ")  # the CLI defaults (python -m clay_core.heads.cli)
VAL = ["31TCJ"]
START = datetime(2024, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def world():
    source = SyntheticSceneSource(SyntheticWorld(tiles=TILES, size=256, seed=0))
    chips = source_chips(source, TILES, START, START + timedelta(weeks=8), 64)
    return source, chips, SyntheticLabels(source)


@pytest.fixture(scope="module")
def encoder():
    return build_encoder("tiny", seed=0)


def _small(world, n_weeks=(1, 4)):
    """A few chips of two tiles (fast): weeks n_weeks[0]..n_weeks[1]."""
    source, chips, labels = world
    days = pd.to_datetime(chips.meta["datetime"], utc=True)
    sel = np.flatnonzero(chips.meta["tile"].isin(["31UFU", "31TCJ"]).to_numpy()
                         & (days >= START + timedelta(weeks=n_weeks[0])).to_numpy()
                         & (days < START + timedelta(weeks=n_weeks[1])).to_numpy())
    return chips.subset(sel[::2])


# --------------------------------------------------------------------------- shapes


def test_head_output_shapes():
    tokens = torch.randn(3, 1 + 64, 192)
    seg = build_head(HeadSpec("segmentation", 192, 5, n_tokens=65))
    assert isinstance(seg, SegmentationHead)
    assert seg(tokens).shape == (3, 5, 64, 64)  # 8 x 8 patches, PixelShuffle(8) -> 64 x 64 logits
    reg = build_head(HeadSpec("regression", 192, 1, n_tokens=65))
    assert isinstance(reg, RegressionHead) and reg(tokens).shape == (3, 64, 64)
    cls = build_head(HeadSpec("classification", 192, 5))
    assert isinstance(cls, ClassificationHead) and cls(tokens).shape == (3, 5)
    assert cls(tokens[:, :1]).shape == (3, 5)  # class token alone (the cached form)
    # Clay's decoder: conv + BatchNorm blocks on the patch grid, PixelShuffle by the patch size
    assert seg.pixel_shuffle.upscale_factor == 8
    assert isinstance(seg.bn1, torch.nn.BatchNorm2d) and isinstance(seg.bn2, torch.nn.BatchNorm2d)
    # non-rectangular grids and wrong token counts are refused
    rect = build_head(HeadSpec("segmentation", 192, 5, n_tokens=1 + 32))
    assert rect(torch.randn(2, 33, 192), grid=(4, 8)).shape == (2, 5, 32, 64)
    with pytest.raises(ConfigError, match="not a square grid"):
        rect(torch.randn(2, 33, 192))
    with pytest.raises(ConfigError, match="trained on another chip size"):
        seg(torch.randn(2, 1 + 16, 192))
    with pytest.raises(ConfigError, match="regression head has one output"):
        HeadSpec("regression", 192, 3, n_tokens=65)
    with pytest.raises(ConfigError, match="unknown head type"):
        HeadSpec("detection", 192, 3)


def test_same_seed_same_head_and_rng_untouched():
    spec = HeadSpec("segmentation", 192, 5, n_tokens=65)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = build_head(spec, seed=7), build_head(spec, seed=7)
    assert torch.equal(torch.rand(1), before)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


# --------------------------------------------------------------------------- frozen encoder


def test_frozen_encoder_gets_no_gradients(encoder):
    enc = build_encoder("tiny", seed=0)
    model = FrozenEncoderWithHead(enc, build_head(HeadSpec("segmentation", enc.dim, 5, n_tokens=1 + 16)))
    model.train()
    assert model.head.training and not model.encoder.training
    assert all(not p.requires_grad for p in model.encoder.parameters())
    pixels = torch.randn(2, 4, 32, 32)
    waves = torch.tensor([0.493, 0.56, 0.665, 0.842])
    out = model(pixels, torch.zeros(2, 4), torch.zeros(2, 4), 10.0, waves)
    assert out.shape == (2, 5, 32, 32)
    torch.nn.functional.cross_entropy(out, torch.randint(0, 5, (2, 32, 32))).backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head.parameters())


# --------------------------------------------------------------------------- feature cache


def test_feature_cache_equals_uncached(world, encoder):
    _, _, labels = world
    chips = _small(world, (1, 3))
    inputs = chip_inputs(chips)
    cache = FeatureCache(encoder, inputs, batch_size=16)
    # the same tokens whatever the batching
    perm = np.random.default_rng(0).permutation(len(chips))[:10]
    torch.testing.assert_close(encode_tokens(encoder, inputs, perm, batch_size=3), cache[torch.as_tensor(perm)],
                               rtol=1e-5, atol=1e-5)
    targets = make_targets("segmentation", labels, chips)
    cfg = dict(epochs=2, val_tiles=VAL, batch_size=8)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    cached = train_head(encoder, chips, targets, labels.class_names, TrainConfig(cache_features=True, **cfg))
    uncached = train_head(encoder, chips, targets, labels.class_names, TrainConfig(cache_features=False, **cfg))
    # the encoder ran in every step of the uncached run and is still exactly what it was
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    assert all(not p.requires_grad for p in encoder.parameters()) and not encoder.training
    assert cached.cache_seconds > 0 and uncached.cache_seconds == 0
    for a, b in zip(cached.history, uncached.history):
        assert a.val.mean_iou == pytest.approx(b.val.mean_iou, abs=1e-3)
        assert a.val.loss == pytest.approx(b.val.loss, rel=1e-3)
    sa, sb = cached.head.state_dict(), uncached.head.state_dict()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-3, atol=1e-4, msg=k)
    # and it did train: the weights moved away from their initialisation
    init = build_head(cached.spec, seed=0).state_dict()
    assert not torch.allclose(sa["conv1.weight"], init["conv1.weight"])


# --------------------------------------------------------------------------- metrics


def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    k = 5
    target = rng.integers(0, 4, size=(6, 32, 32))  # class 4 never in the labels...
    pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 4, size=target.shape))
    pred[0, :2, :2] = 4  # ...but predicted a few times (false positives only)
    target[1, :5] = IGNORE  # unlabelled pixels are skipped
    names = [f"c{i}" for i in range(k)]
    m = ClassMetrics(names)
    m.update(pred[:3], target[:3])  # accumulated over two updates
    m.update(torch.from_numpy(pred[3:]), torch.from_numpy(target[3:]))
    r = m.compute()

    keep = target.ravel() != IGNORE
    y, p = target.ravel()[keep], pred.ravel()[keep]
    labels = list(range(k))
    np.testing.assert_array_equal(r.confusion, confusion_matrix(y, p, labels=labels))
    np.testing.assert_allclose(r.per_class_iou, jaccard_score(y, p, labels=labels, average=None, zero_division=0),
                               rtol=1e-5)
    np.testing.assert_allclose(r.per_class_f1, f1_score(y, p, labels=labels, average=None, zero_division=0), rtol=1e-5)
    present = sorted(set(y) | set(p))
    assert r.mean_iou == pytest.approx(jaccard_score(y, p, labels=present, average="macro"), rel=1e-5)
    assert r.macro_f1 == pytest.approx(f1_score(y, p, labels=present, average="macro"), rel=1e-5)
    assert r.accuracy == pytest.approx(accuracy_score(y, p), rel=1e-6)
    assert r.per_class_iou[4] == 0.0  # predicted but never labelled: present, IoU 0

    # a class absent from labels and predictions is NaN and left out of the means
    m2 = ClassMetrics(names)
    m2.update(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]))
    r2 = m2.compute()
    assert np.isnan(r2.per_class_iou[3]) and np.isnan(r2.per_class_iou[4])
    assert r2.mean_iou == pytest.approx(jaccard_score([0, 1, 2, 2], [0, 1, 1, 2], average="macro"))
    assert "| c0 |" in r2.table_md() and "| **c2** | 0 | 1 | 1 |" in r2.confusion_md()


def test_class_weights_from_counts():
    w = class_weights_from_counts([100, 25, 0, 400], "sqrt-inverse")
    assert w[2] == 1.0  # absent class
    present = np.array([w[0], w[1], w[3]])
    assert present.mean() == pytest.approx(1.0)
    assert w[1] / w[0] == pytest.approx(2.0) and w[0] / w[3] == pytest.approx(2.0)
    assert class_weights_from_counts([10, 20], "none") == [1.0, 1.0]
    inv = class_weights_from_counts([10, 40], "inverse")
    assert inv[0] / inv[1] == pytest.approx(4.0)
    with pytest.raises(ConfigError):
        class_weights_from_counts([1], "log")


# --------------------------------------------------------------------------- labels & split


def test_split_by_tile_is_spatial():
    tiles = ["A", "A", "B", "C", "C", "B"]
    tr, va, trt, vat = split_by_tile(tiles, val_tiles=["C"])
    assert vat == ["C"] and trt == ["A", "B"]
    assert set(np.asarray(tiles)[tr]) == {"A", "B"} and set(np.asarray(tiles)[va]) == {"C"}
    tr, va, trt, vat = split_by_tile(tiles, val_fraction=0.34, seed=3)
    assert len(vat) == 1 and not set(trt) & set(vat) and len(tr) + len(va) == 6
    with pytest.raises(ConfigError, match="at least 2 tiles"):
        split_by_tile(["A", "A"])
    with pytest.raises(ConfigError, match="no chips"):
        split_by_tile(tiles, val_tiles=["Z"])


def test_synthetic_labels_match_the_world(world):
    source, chips, labels = world
    y = labels.pixel_labels(chips.meta, 64)
    assert y.shape == (len(chips), 64, 64) and y.dtype == np.uint8
    i = len(chips) - 1
    r = chips.meta.iloc[i]
    lc = source.labels(r["tile"], pd.Timestamp(r["datetime"]).to_pydatetime())
    np.testing.assert_array_equal(y[i], lc[r["row"] * 64 : (r["row"] + 1) * 64, r["col"] * 64 : (r["col"] + 1) * 64])
    # clearings appear on the date they are drawn
    assert (y == CLASS_NAMES.index("cleared")).any()
    cls = labels.chip_classes(chips.meta, 64)
    np.testing.assert_array_equal(cls, majority_class(y, 5))
    ndvi = labels.pixel_values(chips.meta.iloc[:2], 64)
    assert ndvi.dtype == np.float32 and np.isfinite(ndvi).all() and (np.abs(ndvi) <= 1).all()


def test_raster_labels_read_chip_windows(world, tmp_path):
    import rasterio
    from affine import Affine

    source, chips, labels = world
    tile = "32UNB"
    grid = source.grid(tile)
    sub = chips.subset(np.flatnonzero(chips.meta["tile"].to_numpy() == tile)[:20])
    lc = source.world.landcover(tile)  # static map: compare on dates before any clearing
    sub = sub.subset(np.flatnonzero(pd.to_datetime(sub.meta["datetime"], utc=True) < START + timedelta(weeks=4)))
    assert len(sub) >= 8
    # a raster larger than the chip grid, offset by 3 px up/left, nodata border: windows come from bounds
    pad = 3
    big = np.full((lc.shape[0] + 2 * pad, lc.shape[1] + 2 * pad), 254, np.uint8)
    big[pad:-pad, pad:-pad] = lc
    t = grid.transform
    transform = Affine(t.a, 0, t.c - pad * t.a, 0, t.e, t.f - pad * t.e)
    path = tmp_path / "labels_{tile}.tif"
    with rasterio.open(str(path).format(tile=tile), "w", driver="GTiff", height=big.shape[0], width=big.shape[1],
                       count=1, dtype="uint8", crs=grid.crs, transform=transform, nodata=254, tiled=True,
                       blockxsize=64, blockysize=64) as dst:
        dst.write(big, 1)
    raster = RasterLabels(path, CLASS_NAMES)
    np.testing.assert_array_equal(raster.pixel_labels(sub.meta, 64), labels.pixel_labels(sub.meta, 64))
    np.testing.assert_array_equal(raster.chip_classes(sub.meta, 64), labels.chip_classes(sub.meta, 64))
    # a chip of column 0 moved 10 px west: 7 px outside the raster + 3 px of its nodata border -> IGNORE
    edge = sub.meta[sub.meta["col"] == 0].iloc[:1].copy()
    edge[["x_min", "x_max"]] -= 10 * t.a
    got = raster.pixel_labels(edge, 64)[0]
    assert (got[:, :10] == IGNORE).all() and (got[:, 10:] != IGNORE).all()
    r0 = int(edge["row"].iloc[0]) * 64
    np.testing.assert_array_equal(got[:, 10:], lc[r0 : r0 + 64, :54])
    with pytest.raises(ConfigError, match="not found"):
        RasterLabels(tmp_path / "missing_{tile}.tif", CLASS_NAMES).pixel_labels(sub.meta, 64)
    with pytest.raises(ConfigError, match="reproject"):
        wrong = sub.meta.iloc[:1].assign(crs="EPSG:4326")
        raster.pixel_labels(wrong, 64)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_table_labels(world, tmp_path, suffix):
    _, chips, labels = world
    refs = chips.meta.iloc[:12]
    truth = labels.chip_classes(refs, 64)
    table = pd.DataFrame({"chip_id": refs["chip_id"], "class": [CLASS_NAMES[c] for c in truth],
                          "acquired": pd.to_datetime(refs["datetime"], utc=True).dt.date.astype(str)})
    path = tmp_path / f"labels.{suffix}"
    table.to_csv(path, index=False) if suffix == "csv" else table.to_parquet(path)
    src = TableLabels(path, CLASS_NAMES)
    np.testing.assert_array_equal(src.chip_classes(refs, 64), truth)
    other_day = refs.assign(datetime=refs["datetime"] + pd.Timedelta(days=7))
    assert (src.chip_classes(other_day, 64) == IGNORE).all()  # labels are per acquisition date
    with pytest.raises(ConfigError, match="no per-pixel labels"):
        make_targets("segmentation", src, chips.subset(range(12)))
    with pytest.raises(ConfigError, match="unknown class names"):
        pd.DataFrame({"chip_id": ["x"], "class": ["lava"]}).to_csv(tmp_path / "bad.csv", index=False)
        TableLabels(tmp_path / "bad.csv", CLASS_NAMES)


# --------------------------------------------------------------------------- checkpoints


def _tiny_head(world, encoder, kind="segmentation"):
    _, _, labels = world
    chips = _small(world, (1, 2))
    return chips, train_head(encoder, chips, make_targets(kind, labels, chips), labels.class_names,
                             TrainConfig(head=kind, epochs=1, val_tiles=VAL))


def test_checkpoint_roundtrip_weights_only(world, encoder, tmp_path):
    chips, res = _tiny_head(world, encoder)
    ident = encoder_identity(encoder, "tiny", model_id("tiny", None, 0), None)
    path = save_head(tmp_path / "head.pt", res, encoder=ident, chip_size=64, bands=chips.bands,
                     platform=chips.platform)
    raw = torch.load(path, weights_only=True)  # plain dict of tensors and metadata
    assert raw["encoder"] == ident and raw["head"]["kind"] == "segmentation" and raw["class_names"] == CLASS_NAMES
    assert all(isinstance(v, torch.Tensor) for v in raw["state_dict"].values())
    loaded = load_head(path, encoder=ident)
    assert not loaded.head.training
    a = predict(encoder, res.head, res.spec, chips.subset(range(4)))
    b = predict(encoder, loaded.head, loaded.spec, chips.subset(range(4)))
    assert a.shape == (4, 64, 64) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    img = preview_image(chips.subset(range(3)), make_targets("segmentation", world[2], chips.subset(range(3))), a[:3],
                        CLASS_NAMES, "segmentation")
    assert img.shape == (3 * 66 + 2, 3 * 66 + 2, 3)


def test_head_from_another_encoder_is_refused(world, encoder, tmp_path):
    chips, res = _tiny_head(world, encoder, "classification")
    tiny = encoder_identity(encoder, "tiny", model_id("tiny", None, 0), None)
    path = save_head(tmp_path / "head.pt", res, encoder=tiny, chip_size=64, bands=chips.bands,
                     platform=chips.platform)
    small_enc = build_encoder("small", seed=0)
    small = encoder_identity(small_enc, "small", model_id("small", None, 0), None)
    with pytest.raises(CheckpointError) as err:
        load_head(path, encoder=small)
    msg = str(err.value)
    assert "'tiny:random-seed0'" in msg and "'small:random-seed0'" in msg and "preset 'tiny'" in msg
    assert "preset 'small'" in msg and "re-materialize head_model" in msg
    # same preset, other weights (a checkpoint file): refused too, naming both hashes
    other = dict(tiny, model_id="tiny:sha256-0123456789ab", checkpoint_sha256="0123456789ab" + "0" * 52)
    with pytest.raises(CheckpointError, match=r"tiny:random-seed0.*seeded random weights.*tiny:sha256-0123456789ab"):
        load_head(path, encoder=other)
    # other seed of random weights
    with pytest.raises(CheckpointError, match="tiny:random-seed1"):
        load_head(path, encoder=dict(tiny, model_id="tiny:random-seed1"))
    assert load_head(path, encoder=tiny).spec.kind == "classification"
    # not a head checkpoint at all
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a Clay head checkpoint"):
        load_head(tmp_path / "other.pt", encoder=tiny)


# --------------------------------------------------------------------------- training (must-show numbers)


@pytest.fixture(scope="module")
def features(world, encoder):
    """The encoder run once over all chips, shared by the two heads below."""
    return FeatureCache(encoder, chip_inputs(world[1]))


def test_segmentation_training_beats_untrained_and_reaches_miou(world, encoder, features):
    """Default TrainConfig (12 epochs): same data and numbers as `python -m clay_core.heads.cli`."""
    _, chips, labels = world
    res = train_head(encoder, chips, make_targets("segmentation", labels, chips), labels.class_names,
                     TrainConfig(val_tiles=VAL), log=print, features=features)
    assert res.val_tiles == VAL and "31TCJ" not in res.train_tiles
    assert res.untrained.mean_iou < 0.2
    assert res.final.mean_iou >= 0.8, res.final.table_md()
    assert res.final.mean_iou > res.untrained.mean_iou + 0.5
    assert not np.isnan(res.final.per_class_iou).any()  # all five classes are in the held-out tile
    print(res.history_md(), res.final.table_md(), sep="\n\n")


def test_classification_accuracy_well_above_chance(world, encoder, features):
    _, chips, labels = world
    targets = make_targets("classification", labels, chips)
    res = train_head(encoder, chips, targets, labels.class_names, TrainConfig(head="classification", val_tiles=VAL),
                     features=features.class_tokens())
    val = targets[res.val_index]
    majority = np.bincount(val).max() / len(val)  # always predicting the commonest class
    assert res.final.accuracy >= 0.85 and res.final.accuracy > majority + 0.3, (res.final.accuracy, majority)
    assert res.final.accuracy > res.untrained.accuracy + 0.3
    assert res.val_predictions.shape == (res.n_val,)


def test_regression_head_learns_ndvi(world, encoder):
    _, _, labels = world
    chips = _small(world)
    y = make_targets("regression", labels, chips)
    res = train_head(encoder, chips, y, [], TrainConfig(head="regression", val_tiles=VAL))
    assert res.spec.n_out == 1 and res.val_predictions.shape == (res.n_val, 64, 64)
    # ~20 training chips: far from converged, but clearly learning (R^2 ~0.5 vs ~0 untrained)
    assert res.final.loss < 0.6 * res.untrained.loss and res.final.r2 > 0.4, (res.untrained, res.final)
