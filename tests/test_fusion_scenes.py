"""Training scenes for the fusion network (plugin/learning/fusion/scenes.py): shapes and units,
determinism, the train / val split of the real VHR scene images, the zone images' classes (down
to the pixel), NTL class ordering and mis-registration, built-up fraction, temporal and S2
seasonality, and the time one scene takes.

The scene images are third-party data read from ``<repo>/../shared/data/vhr_scenes`` (never
committed); every test here needs them and is skipped with a reason when they are absent.
"""
import csv
import os
import time

import numpy as np
import pytest

from conftest import ROOT

SCENES = os.path.join(ROOT, "..", "shared", "data", "vhr_scenes")
SPLIT = os.path.join(ROOT, "plugin", "learning", "vhr_split.csv")

needs_scenes = pytest.mark.skipif(
    not os.path.isfile(os.path.join(SCENES, "manifest.csv")),
    reason="../shared/data/vhr_scenes (AID / UC Merced / RSSCN7 scene images, third-party data "
           "that is never committed) is not available in this checkout")
pytestmark = [pytest.mark.shared, needs_scenes]

RES, COM, IND, TRA, PUB, GRE, WAT, AGR = range(8)   # label indices (class code - 1)
ARRAYS = ("vhr", "ntl", "s2_spring", "s2_summer", "s2_autumn", "s2_winter", "temporal", "valid",
          "labels", "built_up")


@pytest.fixture(scope="module")
def S():
    from plugin.learning.fusion import scenes
    return scenes


@pytest.fixture(scope="module")
def made(S):
    """Scenes made once for the module: (seed, split) -> scene (with the debug arrays)."""
    out = {}
    for split in ("train", "val"):
        for seed in (0, 1):
            out[seed, split] = S.make_scene(seed, split, debug=True)
    return out


@pytest.fixture(scope="module")
def manifest():
    with open(os.path.join(SCENES, "manifest.csv"), newline="", encoding="utf-8") as f:
        return {r["path"]: int(r["function_code"]) for r in csv.DictReader(f)}


def _class_means(values_10m, labels):
    return {c: float(values_10m[labels == c].mean()) for c in range(8) if (labels == c).any()}


def _up(a, k):
    return np.repeat(np.repeat(a, k, axis=-2), k, axis=-1)


def test_shapes_dtypes_and_units(S, made):
    s = made[0, "train"]
    H = W = 128
    expect = {"vhr": (3, 5 * H, 5 * W), "ntl": (1, H // 4, W // 4),
              "temporal": (12, H // 4, W // 4), "valid": (7, H, W), "labels": (H, W),
              "built_up": (H, W)}
    expect.update({f"s2_{x}": (10, H, W) for x in ("spring", "summer", "autumn", "winter")})
    assert set(s) == set(ARRAYS) | {"meta", "debug"}
    for k, shape in expect.items():
        assert s[k].shape == shape, k
        assert s[k].dtype == (np.uint8 if k == "labels" else np.float32), k
        assert np.isfinite(s[k]).all(), k
    assert 0 <= s["vhr"].min() and s["vhr"].max() <= 255 and s["vhr"].std() > 20
    assert s["ntl"].min() >= 0 and s["temporal"].min() >= 0
    for season in ("spring", "summer", "autumn", "winter"):
        refl = s[f"s2_{season}"]
        assert 100 < np.median(refl) < 5000, "reflectance x 10000"
    assert (s["valid"] == 1).all()
    assert set(np.unique(s["labels"])) <= set(range(8)) | {255}
    assert len(np.unique(s["labels"])) == 8, "every class is present in a 1.28 km tile"
    assert 0 <= s["built_up"].min() and s["built_up"].max() <= 1
    m = s["meta"]
    assert m["seed"] == 0 and m["split"] == "train" and m["cells"] == 128
    assert m["ntl"]["psf_fwhm_m"] in S.PSF_FWHM_M
    assert np.hypot(*m["ntl"]["shift_px"]) <= S.MAX_SHIFT_PX
    # a smaller tile, without the debug arrays; cells must be a multiple of 4
    small = S.make_scene(5, "val", cells=64)
    assert set(small) == set(ARRAYS) | {"meta"}
    assert small["vhr"].shape == (3, 320, 320) and small["ntl"].shape == (1, 16, 16)
    assert small["temporal"].shape == (12, 16, 16) and small["labels"].shape == (64, 64)
    with pytest.raises(ValueError):
        S.make_scene(0, cells=66)
    with pytest.raises(ValueError):
        S.make_scene(0, split="test")


def test_grid_factors_match_the_network(S):
    pytest.importorskip("torch")
    from plugin.learning import model
    from plugin.learning.fusion.net import MODALITY_ORDER
    assert (S.VHR_FACTOR, S.NTL_FACTOR, S.S2_SEASONS) == \
        (model.VHR_FACTOR, model.NTL_FACTOR, model.S2_SEASONS)
    assert len(MODALITY_ORDER) == 7 and MODALITY_ORDER[2:6] == S.S2_SEASONS


def test_same_seed_same_scene_other_seed_other_scene(S, made):
    a = made[0, "train"]
    again = S.make_scene(0, "train")
    for k in ARRAYS:
        np.testing.assert_array_equal(a[k], again[k], err_msg=k)
    strip = lambda m: {k: v for k, v in m.items() if k != "seconds"}  # noqa: E731
    assert strip(a["meta"]) == strip(again["meta"])
    for other in (made[1, "train"], made[0, "val"]):
        for k in ("vhr", "ntl", "s2_summer", "temporal", "labels", "built_up"):
            assert not np.array_equal(a[k], other[k]), k
    it = list(S.iter_scenes([0, 1], "train"))
    np.testing.assert_array_equal(it[1]["vhr"], made[1, "train"]["vhr"])


def test_train_and_val_scenes_use_disjoint_images_of_their_split(made):
    with open(SPLIT, newline="", encoding="utf-8") as f:
        split = {r["path"]: r["split"] for r in csv.DictReader(f)}
    used = {"train": set(), "val": set()}
    for (seed, sp), s in made.items():
        paths = s["meta"]["vhr"]["paths"]
        assert paths == sorted({z["path"] for z in s["meta"]["vhr"]["zones"]})
        assert len(paths) > 50
        used[sp] |= set(paths)
    for sp, paths in used.items():
        assert {split[p] for p in paths} == {sp}, f"{sp} scenes must use {sp} images only"
    assert not used["train"] & used["val"]


def test_every_zone_is_painted_with_an_image_of_its_class(S, made, manifest):
    s = made[0, "train"]
    zone, classes = s["debug"]["zone"], s["debug"]["classes_2m"]
    _, alpha = S._feather(zone)
    vhr = s["vhr"]
    zones = s["meta"]["vhr"]["zones"]
    assert {z["zone"] for z in zones} == set(np.unique(zone)) - {0}
    seen = set()
    for z in zones:
        assert manifest[z["path"]] == z["class_code"]
        inside = zone == z["zone"]
        assert (classes[inside] == z["class_code"]).all(), "the zone's pixels carry its class"
        assert 100 <= z["ground_m"] <= 150
        rows, cols = np.nonzero(inside & (alpha == 1.0))
        if len(rows):
            want = S.zone_image_pixels(z, rows=rows, cols=cols)
            np.testing.assert_allclose(vhr[:, rows, cols].T, want, atol=1e-4,
                                       err_msg=f"zone {z['zone']}")
        seen.add(z["class_code"])
    assert seen == set(range(1, 9))
    # the renderer's pixels (streets, major roads, railway) are a minority of the tile
    assert 0.05 < (zone == 0).mean() < 0.4


@pytest.mark.parametrize("fwhm", [40.0, 130.0])
def test_ntl_mean_radiance_ordered_by_class(S, fwhm):
    for seed in (0, 1):
        s = S.make_scene(seed, "train", ntl_fwhm_m=fwhm, ntl_shift_px=(0.0, 0.0))
        m = _class_means(_up(s["ntl"][0], 4), s["labels"])
        print(f"seed {seed} FWHM {fwhm:.0f} m:",
              {k: round(v, 2) for k, v in sorted(m.items())})
        assert m[COM] > m[RES] > max(m[GRE], m[WAT], m[AGR])
        assert m[TRA] > m[RES] and m[IND] > m[RES]


def test_recorded_shift_displaces_the_ntl(S, made):
    def corr(a, b):
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    def estimate(ref, obs, lags=3):
        """Displacement (east, south; pixels) of obs against ref: peak of the normalised cross-
        correlation over integer lags, refined by a parabola along each axis."""
        h, w = ref.shape
        c = np.full((2 * lags + 1, 2 * lags + 1), -np.inf)
        for dy in range(-lags, lags + 1):
            for dx in range(-lags, lags + 1):
                a = ref[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
                b = obs[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)]
                c[dy + lags, dx + lags] = corr(a, b)
        iy, ix = np.unravel_index(np.argmax(c), c.shape)

        def vertex(m, z, p):
            den = m - 2 * z + p
            return 0.0 if den == 0 else 0.5 * (m - p) / den
        fy = vertex(c[iy - 1, ix], c[iy, ix], c[iy + 1, ix]) if 0 < iy < 2 * lags else 0.0
        fx = vertex(c[iy, ix - 1], c[iy, ix], c[iy, ix + 1]) if 0 < ix < 2 * lags else 0.0
        return (ix - lags, iy - lags), np.array([ix - lags + fx, iy - lags + fy])

    cases = [(made[0, "train"], 0.5)]
    for fwhm in (40.0, 130.0):
        cases.append((S.make_scene(2, "train", ntl_fwhm_m=fwhm, ntl_shift_px=(1.5, -1.25),
                                   debug=True), 0.3))
    for s, tol in cases:
        m = s["meta"]["ntl"]
        shift = np.array(m["shift_px"])
        assert np.hypot(*shift) > 1.0
        rad = s["debug"]["radiance_10m"]
        unshifted = S.simulate_ntl(rad, m["psf_fwhm_m"], (0.0, 0.0), None, m["gain"])
        shifted = S.simulate_ntl(rad, m["psf_fwhm_m"], shift, None, m["gain"])
        obs = s["ntl"][0]
        peak, est = estimate(unshifted, obs)
        print(f"FWHM {m['psf_fwhm_m']:.0f} m: recorded shift {shift}, estimated {est.round(2)}, "
              f"r(unshifted) {corr(unshifted, obs):.3f}, r(shifted) {corr(shifted, obs):.3f}")
        assert peak != (0, 0), "the cross-correlation peak moves away from zero lag"
        assert np.abs(est - shift).max() < tol
        assert corr(shifted, obs) > corr(unshifted, obs)
        assert corr(shifted, obs) > 0.9


def test_built_up_fraction_by_class(made):
    for s in (made[0, "train"], made[1, "val"]):
        m = _class_means(s["built_up"], s["labels"])
        print({k: round(v, 3) for k, v in sorted(m.items())})
        assert min(m[RES], m[COM], m[IND]) > max(m[GRE], m[WAT]) + 0.15
        assert m[WAT] < 0.05 and m[COM] > 0.6


def test_temporal_and_s2_seasonality(made):
    s = made[0, "train"]
    t = s["temporal"]
    lab40 = s["labels"].reshape(32, 4, 32, 4).transpose(0, 2, 1, 3).reshape(32, 32, 16)
    pure = {c: (lab40 == c).all(axis=-1) for c in (RES, AGR)}
    res, agr = t[:, pure[RES]].mean(axis=1), t[:, pure[AGR]].mean(axis=1)
    assert res[[0, 11]].mean() > 1.1 * res[[5, 6]].mean(), "residential: winter peak"
    # agricultural light is faint (~0.4 nW/cm2/sr), so the bump is diluted by noise and by light
    # spilling over from neighbours
    assert agr[6:9].mean() > 1.15 * agr[[0, 1, 11]].mean(), "agricultural: harvest-season bump"
    # temporal level follows the NTL level (same radiance table and gain)
    assert np.corrcoef(t.mean(axis=0).ravel(), s["debug"]["radiance_10m"]
                       .reshape(32, 4, 32, 4).mean(axis=(1, 3)).ravel())[0, 1] > 0.8

    def ndvi(x):
        return (x[6] - x[2]) / (x[6] + x[2])
    green = s["labels"] == GRE
    assert ndvi(s["s2_summer"])[green].mean() > ndvi(s["s2_winter"])[green].mean() + 0.1


def test_one_scene_time(S):
    t = time.perf_counter()
    s = S.make_scene(7, "train")
    dt = time.perf_counter() - t
    print(f"one 128-cell scene: {dt:.2f} s")
    assert s["vhr"].shape == (3, 640, 640)
