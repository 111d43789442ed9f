"""Sensor registry and input encodings."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from clay_core.encoder.inputs import encode_latlon, encode_time, normalize, waves_for
from clay_core.errors import ConfigError, UnknownPlatformError
from clay_core.platforms import (
    Band,
    Platform,
    configure_platforms,
    get_platform,
    known_platforms,
    load_platforms,
    register_platforms_from_yaml,
    reset_platforms,
)

EXPECTED_BANDS = {
    "sentinel-2-l2a": ["blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir16", "swir22"],
    "landsat-c2l2-sr": ["red", "green", "blue", "nir08", "swir16", "swir22"],
    "landsat-c2l1": ["red", "green", "blue", "nir08", "swir16", "swir22"],
    "naip": ["red", "green", "blue", "nir"],
    "linz": ["red", "green", "blue"],
    "planetscope-sr": ["coastal_blue", "blue", "green_i", "green", "yellow", "red", "rededge", "nir"],
    "sentinel-1-rtc": ["vv", "vh"],
    "modis": [f"sur_refl_b0{i}" for i in range(1, 8)],
}
EXPECTED_GSD = {
    "sentinel-2-l2a": 10, "landsat-c2l2-sr": 30, "landsat-c2l1": 30, "naip": 1.0,
    "linz": 0.5, "planetscope-sr": 5, "sentinel-1-rtc": 10, "modis": 500,
}  # fmt: skip

USER_YAML = """
platforms:
  worldview-3:
    gsd: 1.24
    rgb: [red, green, blue]
    bands:
      - {name: blue, wavelength_um: 0.48, mean: 300, std: 120}
      - {name: green, wavelength_um: 0.545, mean: 400, std: 150}
      - {name: red, wavelength_um: 0.66, mean: 350, std: 160}
"""


@pytest.fixture(autouse=True)
def _clean_registry():
    configure_platforms(None)
    reset_platforms()
    yield
    configure_platforms(None)
    reset_platforms()


def test_all_builtin_platforms_with_band_order_and_gsd():
    assert set(known_platforms()) == set(EXPECTED_BANDS)
    for name, bands in EXPECTED_BANDS.items():
        plat = get_platform(name)
        assert plat.band_names == bands, name
        assert plat.gsd == EXPECTED_GSD[name], name
        assert len(plat.rgb) == 3 and set(plat.rgb) <= set(bands), name
        assert all(b.std > 0 and 0.3 < b.wavelength_um < 5 for b in plat.bands.values()), name
    assert get_platform("sentinel-1-rtc").units == "db"
    assert {get_platform(n).units for n in EXPECTED_BANDS if n != "sentinel-1-rtc"} == {"reflectance"}


def test_band_statistics_spot_checks():
    assert get_platform("sentinel-2-l2a").bands["swir22"] == Band("swir22", 2.19, 1835, 1379)
    assert get_platform("landsat-c2l2-sr").bands["blue"] == Band("blue", 0.48, 12474, 10144)
    assert get_platform("landsat-c2l1").bands["nir08"] == Band("nir08", 0.86, 14792, 6746)
    assert get_platform("naip").bands["nir"] == Band("nir", 0.842, 139.04, 49.86)
    assert get_platform("linz").bands["red"] == Band("red", 0.635, 89.96, 41.83)
    assert get_platform("planetscope-sr").bands["green_i"] == Band("green_i", 0.531, 1913, 739)
    assert get_platform("sentinel-1-rtc").bands["vh"] == Band("vh", 4.0, -18.673, 8.017)
    assert get_platform("modis").bands["sur_refl_b05"] == Band("sur_refl_b05", 1.24, 1599, 1763)
    assert get_platform("sentinel-2-l2a").rgb == ("red", "green", "blue")


def test_unknown_platform_lists_known_names():
    with pytest.raises(UnknownPlatformError) as err:
        get_platform("sentinel-3-olci")
    msg = str(err.value)
    assert "sentinel-3-olci" in msg
    assert all(name in msg for name in EXPECTED_BANDS)


def test_select_orders_and_rejects_unknown_bands():
    plat = get_platform("sentinel-2-l2a")
    assert [b.name for b in plat.select(["nir", "red"])] == ["nir", "red"]
    with pytest.raises(ConfigError) as err:
        plat.select(["red", "B04"])
    msg = str(err.value)
    assert "B04" in msg and "sentinel-2-l2a" in msg and "rededge1" in msg
    with pytest.raises(ConfigError, match="duplicate"):
        plat.select(["red", "red"])


def test_user_yaml_adds_and_overrides_platforms(tmp_path):
    path = tmp_path / "extra.yaml"
    naip = "\n  naip:\n    gsd: 0.6\n    bands:\n      - {name: red, wavelength_um: 0.65, mean: 1, std: 2}\n"
    path.write_text(USER_YAML + naip)
    with pytest.raises(UnknownPlatformError):
        get_platform("worldview-3")

    loaded = load_platforms(path)  # a new dict; the process registry is untouched
    assert loaded["worldview-3"].band_names == ["blue", "green", "red"]
    with pytest.raises(UnknownPlatformError):
        get_platform("worldview-3")

    assert register_platforms_from_yaml(path) == ["naip", "worldview-3"]
    wv3 = get_platform("WorldView-3")
    assert isinstance(wv3, Platform) and wv3.gsd == 1.24 and wv3.units == "reflectance"
    assert get_platform("naip").gsd == 0.6 and get_platform("naip").band_names == ["red"]
    np.testing.assert_allclose(waves_for("worldview-3", ["red", "blue"]), [0.66, 0.48], rtol=1e-6)
    raw = np.full((1, 3, 8, 8), 420.0, dtype=np.float32)
    norm = normalize(raw, "worldview-3", ["blue", "green", "red"])
    np.testing.assert_allclose(norm[0, :, 0, 0], [1.0, 0.13333334, 0.4375])


def test_configured_platform_file(tmp_path):
    # the app passes CLAY_PLATFORMS_FILE here (clay_assets.config); clay_core reads no env var
    path = tmp_path / "env.yaml"
    path.write_text(USER_YAML)
    configure_platforms(path)
    assert get_platform("worldview-3").band_names == ["blue", "green", "red"]
    assert "sentinel-2-l2a" in known_platforms()
    configure_platforms(None)
    with pytest.raises(UnknownPlatformError):
        get_platform("worldview-3")
    with pytest.raises(ConfigError, match="not found"):
        configure_platforms(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("platforms:\n  x:\n    bands: [{name: a, wavelength_um: 0.5, mean: 1, std: 1}]\n", "gsd"),
        ("platforms:\n  x:\n    gsd: 1\n    bands: [{name: a, wavelength_um: 0.5, mean: 1, std: 0}]\n", "std"),
        ("platforms:\n  x:\n    gsd: 1\n    bands: [{name: a, mean: 1, std: 1}]\n", "wavelength_um"),
        (
            "platforms:\n  x:\n    gsd: 1\n    rgb: [a, b, c]\n"
            "    bands: [{name: a, wavelength_um: 0.5, mean: 1, std: 1}]\n",
            "rgb",
        ),
        ("platforms: [oops", "invalid YAML"),
    ],
)
def test_malformed_user_yaml_is_rejected(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        register_platforms_from_yaml(path)
    with pytest.raises(UnknownPlatformError):
        get_platform("x")


def test_missing_user_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        register_platforms_from_yaml(tmp_path / "nope.yaml")


# --------------------------------------------------------------------------- encodings


def test_normalize_reflectance_per_band():
    raw = np.stack([np.full((4, 4), 1105 + 1809), np.full((4, 4), 1355.0)])[None].astype(np.uint16)
    out = normalize(raw, "sentinel-2-l2a", ["blue", "green"])
    assert out.dtype == np.float32 and out.shape == raw.shape
    np.testing.assert_allclose(out[0, :, 0, 0], [1.0, 0.0])
    with pytest.raises(ConfigError, match="3 bands"):
        normalize(raw, "sentinel-2-l2a", ["blue", "green", "red"])


def test_normalize_sentinel1_converts_linear_to_db_and_guards_zeros():
    vv = np.array([[10 ** (-12.113 / 10), 1.0, 0.0, np.nan]], dtype=np.float32)
    vh = np.array([[10 ** ((-18.673 + 8.017) / 10), -1.0, 1e-3, 0.0]], dtype=np.float32)
    raw = np.stack([vv, vh])  # [C, H, W]
    out = normalize(raw, "sentinel-1-rtc", ["vv", "vh"])
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0, 0], [0.0, 12.113 / 8.314, 0.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(out[1, 0], [1.0, 0.0, (-30 + 18.673) / 8.017, 0.0], atol=1e-5)
    db = np.full((2, 1, 1), -12.113, np.float32)
    already_db = normalize(db, "sentinel-1-rtc", ["vv", "vh"], linear_backscatter=False)
    np.testing.assert_allclose(already_db[:, 0, 0], [0.0, (-12.113 + 18.673) / 8.017], atol=1e-5)


def test_encode_time_formula_timezones_and_unknowns():
    dt = datetime(2024, 6, 5, 22, 59, tzinfo=timezone(timedelta(hours=-3)))  # 01:59 UTC, June 6
    week = datetime(2024, 6, 6).isocalendar().week
    w, h = week * 2 * math.pi / 52, 1 * 2 * math.pi / 24
    expected = [math.sin(w), math.cos(w), math.sin(h), math.cos(h)]
    rows = encode_time([dt, None, np.datetime64("NaT"), np.datetime64("2024-06-06T01:59:00"), "2024-06-06T01:59:00Z"])
    assert rows.dtype == np.float32 and rows.shape == (5, 4)
    np.testing.assert_allclose(rows[0], expected, atol=1e-7)
    np.testing.assert_array_equal(rows[1:3], 0)
    np.testing.assert_allclose(rows[3:], [expected, expected], atol=1e-7)
    np.testing.assert_array_equal(encode_time(None, n=2), np.zeros((2, 4), np.float32))
    # Dec 30 2024 is ISO week 1 of 2025, not week 53 of 2024.
    assert encode_time([datetime(2024, 12, 30)])[0, 1] == pytest.approx(math.cos(2 * math.pi / 52))
    with pytest.raises(ConfigError, match="expected 3"):
        encode_time([datetime(2024, 1, 1)], n=3)


def test_encode_latlon_order_and_unknowns():
    rows = encode_latlon([30.0, None, 10.0], [90.0, 5.0, float("nan")])
    np.testing.assert_allclose(rows[0], [0.5, math.sqrt(3) / 2, 1.0, 0.0], atol=1e-7)
    np.testing.assert_array_equal(rows[1:], 0)
    with pytest.raises(ConfigError, match="swapped"):
        encode_latlon([120.0], [10.0])
