"""Accuracy and area estimators (plugin.validation.accuracy) against independent computations:
the numerical example of Olofsson et al. (2014), section 5 / tables 8-10, a small 3-class example
worked out with the paper's formulas in this file, a Monte-Carlo check of unbiasedness and of the
standard errors when strata differ from map classes, edge cases, and the report files."""
import csv
import io
import json
import math

import numpy as np
import pytest

from plugin.validation.accuracy import Z95, assess
from plugin.validation.report import build_csv, build_html, build_json, write_report
from plugin.validation.sample_size import (
    allocate,
    expected_oa_se,
    parse_expected_ua,
    plan,
    sample_size_for_oa,
)

# Olofsson et al. 2014, table 8: rows = map (deforestation, forest gain, stable forest, stable
# non-forest), columns = reference; strata sizes in 30 m pixels.
OLOFSSON_COUNTS = np.array([[66, 0, 5, 4],
                            [0, 55, 8, 12],
                            [1, 0, 153, 11],
                            [2, 1, 9, 313]])
OLOFSSON_PIXELS = {1: 200_000, 2: 150_000, 3: 3_200_000, 4: 6_450_000}
PIXEL_M2 = 900.0


def _points(counts, codes):
    m, r = [], []
    for i, ci in enumerate(codes):
        for j, cj in enumerate(codes):
            m += [ci] * int(counts[i, j])
            r += [cj] * int(counts[i, j])
    return m, r


def olofsson_by_hand(counts, pixels):
    """The paper's equations, written out independently of the plugin."""
    n = counts.astype(float)
    n_i = n.sum(axis=1)
    N_i = np.array(pixels, float)
    W = N_i / N_i.sum()
    p = W[:, None] * n / n_i[:, None]                        # eq. 4
    oa = np.trace(p)                                         # eq. 1
    ua = np.diag(p) / p.sum(axis=1)                          # eq. 2
    pa = np.diag(p) / p.sum(axis=0)                          # eq. 3
    v_oa = (W ** 2 * ua * (1 - ua) / (n_i - 1)).sum()        # eq. 5
    v_ua = ua * (1 - ua) / (n_i - 1)                         # eq. 6
    Nj_hat = (N_i[:, None] * n / n_i[:, None]).sum(axis=0)
    v_pa = []
    for j in range(len(N_i)):                                # eq. 7
        a = N_i[j] ** 2 * (1 - pa[j]) ** 2 * ua[j] * (1 - ua[j]) / (n_i[j] - 1)
        b = sum(N_i[i] ** 2 * n[i, j] / n_i[i] * (1 - n[i, j] / n_i[i]) / (n_i[i] - 1)
                for i in range(len(N_i)) if i != j)
        v_pa.append((a + pa[j] ** 2 * b) / Nj_hat[j] ** 2)
    se_area = np.sqrt([(W ** 2 * (n[:, j] / n_i) * (1 - n[:, j] / n_i) / (n_i - 1)).sum()
                       for j in range(len(N_i))])           # eq. 10
    return dict(p=p, oa=oa, ua=ua, pa=pa, se_oa=math.sqrt(v_oa), se_ua=np.sqrt(v_ua),
                se_pa=np.sqrt(v_pa), area_prop=p.sum(axis=0), se_area_prop=se_area)


@pytest.fixture(scope="module")
def olofsson():
    codes = [1, 2, 3, 4]
    m, r = _points(OLOFSSON_COUNTS, codes)
    return assess(m, r, OLOFSSON_PIXELS, pixel_area_m2=PIXEL_M2,
                  labels={1: "Deforestation", 2: "Forest gain", 3: "Stable forest",
                          4: "Stable non-forest"})


def test_olofsson_example_matches_the_papers_equations(olofsson):
    a = olofsson
    hand = olofsson_by_hand(OLOFSSON_COUNTS, [OLOFSSON_PIXELS[c] for c in (1, 2, 3, 4)])
    assert a.codes == [1, 2, 3, 4]
    np.testing.assert_array_equal(a.counts, OLOFSSON_COUNTS)
    np.testing.assert_allclose(a.proportions, hand["p"], rtol=1e-12, atol=1e-15)
    assert a.overall.value == pytest.approx(hand["oa"], rel=1e-12)
    assert a.overall.se == pytest.approx(hand["se_oa"], rel=1e-10)
    for k, c in enumerate(a.codes):
        assert a.users[c].value == pytest.approx(hand["ua"][k], rel=1e-12)
        assert a.users[c].se == pytest.approx(hand["se_ua"][k], rel=1e-10)
        assert a.producers[c].value == pytest.approx(hand["pa"][k], rel=1e-12)
        assert a.producers[c].se == pytest.approx(hand["se_pa"][k], rel=1e-10)
        assert a.areas[c].proportion.value == pytest.approx(hand["area_prop"][k], rel=1e-12)
        assert a.areas[c].proportion.se == pytest.approx(hand["se_area_prop"][k], rel=1e-10)


def test_olofsson_example_reproduces_the_published_numbers(olofsson):
    a = olofsson
    # section 5: areas in ha with 95 % CI half widths (total 9,000,000 ha... of 30 m pixels)
    published_area = {1: (21_158, 6_158), 2: (11_686, 3_756), 3: (285_770, 15_510),
                      4: (581_386, 16_282)}
    for c, (area, hw) in published_area.items():
        est = a.areas[c].area_m2()
        assert est.value / 1e4 == pytest.approx(area, abs=1.0)
        assert est.half_width / 1e4 == pytest.approx(hw, abs=1.0)
    # accuracies (rounded to two decimals in the paper)
    assert round(a.overall.value, 2) == 0.95
    assert round(a.overall.half_width, 2) == 0.02
    assert [round(a.users[c].value, 2) for c in (1, 2, 3, 4)] == [0.88, 0.73, 0.93, 0.96]
    assert [round(a.users[c].half_width, 2) for c in (1, 2, 3, 4)] == [0.07, 0.10, 0.04, 0.02]
    assert [round(a.producers[c].value, 2) for c in (1, 2)] == [0.75, 0.85]
    assert round(a.producers[1].half_width, 2) == 0.21
    # mapped area of deforestation 200,000 px * 0.09 ha
    assert a.areas[1].to_dict()["mapped_area_ha"] == pytest.approx(18_000)


def test_sample_size_eq13_olofsson_example():
    # U = 0.7, 0.6, 0.9, 0.95 and S(O) = 0.01 give n ~ 641 (section 5.1)
    n = sample_size_for_oa(OLOFSSON_PIXELS, 0.01, {1: 0.7, 2: 0.6, 3: 0.9, 4: 0.95})
    w = np.array([0.02, 0.015, 0.32, 0.645])
    s = np.sqrt(np.array([0.7, 0.6, 0.9, 0.95]) * (1 - np.array([0.7, 0.6, 0.9, 0.95])))
    assert n == math.ceil((w @ s / 0.01) ** 2 / (1 + (w @ (s * s)) / 0.01 ** 2 / 10_000_000))
    assert n == 641
    approx = sample_size_for_oa(OLOFSSON_PIXELS, 0.01, {1: 0.7, 2: 0.6, 3: 0.9, 4: 0.95},
                                finite_population=False)
    assert approx == math.ceil((w @ s / 0.01) ** 2)


def test_expected_se_and_plan():
    alloc = allocate(OLOFSSON_PIXELS, 641, "proportional", min_per_stratum=75)
    ua = {1: 0.7, 2: 0.6, 3: 0.9, 4: 0.95}
    w = np.array([0.02, 0.015, 0.32, 0.645])
    u = np.array([0.7, 0.6, 0.9, 0.95])
    n = np.array([alloc.n[c] for c in (1, 2, 3, 4)])
    assert expected_oa_se(OLOFSSON_PIXELS, alloc, ua) == pytest.approx(
        math.sqrt((w ** 2 * u * (1 - u) / (n - 1)).sum()))
    p = plan(OLOFSSON_PIXELS, target_se=0.01, method="neyman", expected_ua=ua,
             min_per_stratum=50)
    assert p["requested_n"] == 641, "eq. 13 reproduces Olofsson et al.'s n"
    # minimums of 50 pull points from the Neyman split: n grows until the target is met
    assert p["n"] >= 641 and p["expected_oa_se"] <= 0.01
    assert min(p["allocation"].values()) >= 50
    assert p["expected_ua_se"][1] == pytest.approx(math.sqrt(0.21 / (p["allocation"][1] - 1)))


def test_parse_expected_ua():
    assert parse_expected_ua("0.8") == 0.8
    assert parse_expected_ua("") is None
    d = parse_expected_ua("1=0.9; 2:0.7, 0.85")
    assert d[1] == 0.9 and d[2] == 0.7 and d.get(5) == 0.85
    with pytest.raises(ValueError):
        parse_expected_ua("1=1.5")
    with pytest.raises(ValueError):
        parse_expected_ua("abc")


def test_three_class_example_by_hand():
    # strata (map classes) A=1, B=2, C=3 with 6000, 3000, 1000 pixels of 10 m x 10 m
    counts = np.array([[18, 1, 1],
                       [2, 12, 1],
                       [0, 3, 7]])
    pixels = {1: 6000, 2: 3000, 3: 1000}
    m, r = _points(counts, [1, 2, 3])
    a = assess(m, r, pixels, pixel_area_m2=100.0)
    W = [0.6, 0.3, 0.1]
    n_i = [20, 15, 10]
    # p_ij = W_i n_ij / n_i
    p = [[0.6 * 18 / 20, 0.6 * 1 / 20, 0.6 * 1 / 20],
         [0.3 * 2 / 15, 0.3 * 12 / 15, 0.3 * 1 / 15],
         [0.0, 0.1 * 3 / 10, 0.1 * 7 / 10]]
    np.testing.assert_allclose(a.proportions, p, rtol=1e-12)
    oa = 0.54 + 0.24 + 0.07
    assert a.overall.value == pytest.approx(oa)
    se_oa = math.sqrt(0.36 * 0.9 * 0.1 / 19 + 0.09 * 0.8 * 0.2 / 14 + 0.01 * 0.7 * 0.3 / 9)
    assert a.overall.se == pytest.approx(se_oa)
    assert a.overall.ci[0] == pytest.approx(oa - Z95 * se_oa)
    assert a.users[1].value == pytest.approx(0.9)
    assert a.users[1].se == pytest.approx(math.sqrt(0.9 * 0.1 / 19))
    col2 = 0.03 + 0.24 + 0.03
    assert a.producers[2].value == pytest.approx(0.24 / col2)
    # eq. 7 for class 2
    N = [6000, 3000, 1000]
    P, U = 0.24 / col2, 0.8
    v = (N[1] ** 2 * (1 - P) ** 2 * U * (1 - U) / 14
         + P ** 2 * (N[0] ** 2 * (1 / 20) * (19 / 20) / 19 + N[2] ** 2 * 0.3 * 0.7 / 9)) \
        / (10000 * col2) ** 2
    assert a.producers[2].se == pytest.approx(math.sqrt(v))
    # area of class 2: 1 km2 total -> 100 ha
    assert a.areas[2].area_m2().value == pytest.approx(col2 * 1e6)
    se_p2 = math.sqrt(0.36 * (1 / 20) * (19 / 20) / 19 + 0.09 * 0.8 * 0.2 / 14
                      + 0.01 * 0.3 * 0.7 / 9)
    assert a.areas[2].proportion.se == pytest.approx(se_p2)
    d = a.areas[2].to_dict()
    assert d["estimated_area_ha"]["estimate"] == pytest.approx(col2 * 100)
    assert d["estimated_area_km2"]["ci_half_width"] == pytest.approx(Z95 * se_p2)
    # sample-count scores (not design-based)
    tot = 45
    po = 37 / tot
    pe = (20 * 20 + 15 * 16 + 10 * 9) / tot ** 2
    assert a.kappa == pytest.approx((po - pe) / (1 - pe))
    assert a.f1[2] == pytest.approx(2 * 12 / (15 + 16))
    assert a.iou[3] == pytest.approx(7 / (10 + 9 - 7))


def test_finite_population_correction_option():
    counts = np.array([[8, 2], [1, 9]])
    m, r = _points(counts, [1, 2])
    pix = {1: 40, 2: 60}
    a = assess(m, r, pix)
    b = assess(m, r, pix, fpc=True)
    assert b.overall.value == pytest.approx(a.overall.value)
    w = np.array([0.4, 0.6])
    u = np.array([0.8, 0.9])
    f = np.array([10 / 40, 10 / 60])
    assert b.overall.se == pytest.approx(math.sqrt((w ** 2 * (1 - f) * u * (1 - u) / 9).sum()))


def test_strata_different_from_map_classes_unbiased_monte_carlo():
    """Stehman 2014 estimators: strata are an older map; simulate many stratified samples."""
    rng = np.random.default_rng(5)
    n_pop = 20_000
    ref = rng.choice([1, 2, 3], n_pop, p=[0.6, 0.3, 0.1])
    mp = np.where(rng.random(n_pop) < 0.8, ref, rng.choice([1, 2, 3], n_pop))
    strata = np.where(rng.random(n_pop) < 0.9, mp, rng.choice([1, 2, 3], n_pop))
    sizes = {h: int((strata == h).sum()) for h in (1, 2, 3)}
    truth_oa = (mp == ref).mean()
    truth_ua2 = ((mp == 2) & (ref == 2)).sum() / (mp == 2).sum()
    truth_pa3 = ((mp == 3) & (ref == 3)).sum() / (ref == 3).sum()
    truth_area3 = (ref == 3).mean()
    idx = {h: np.flatnonzero(strata == h) for h in (1, 2, 3)}
    n_h = {1: 60, 2: 50, 3: 40}
    est = {"oa": [], "ua2": [], "pa3": [], "area3": []}
    ses = {k: [] for k in est}
    for _ in range(600):
        pick = np.concatenate([rng.choice(idx[h], n_h[h], replace=False) for h in (1, 2, 3)])
        a = assess(mp[pick], ref[pick], sizes, strata=strata[pick], mapped_sizes={
            c: int((mp == c).sum()) for c in (1, 2, 3)}, fpc=True)
        for k, e in (("oa", a.overall), ("ua2", a.users[2]), ("pa3", a.producers[3]),
                     ("area3", a.areas[3].proportion)):
            est[k].append(e.value)
            ses[k].append(e.se)
    for k, truth in (("oa", truth_oa), ("ua2", truth_ua2), ("pa3", truth_pa3),
                     ("area3", truth_area3)):
        vals = np.array(est[k])
        sd = vals.std()
        assert abs(vals.mean() - truth) < 4 * sd / math.sqrt(len(vals)) + 0.01, k
        # the mean estimated SE is close to the empirical spread (ratio estimators: loosely)
        assert np.mean(ses[k]) == pytest.approx(sd, rel=0.25), k


def test_strata_equal_to_map_classes_given_explicitly_is_the_same():
    counts = np.array([[18, 1, 1], [2, 12, 1], [0, 3, 7]])
    m, r = _points(counts, [1, 2, 3])
    pix = {1: 6000, 2: 3000, 3: 1000}
    a = assess(m, r, pix)
    b = assess(m, r, pix, strata=m)
    assert b.overall.value == pytest.approx(a.overall.value)
    assert b.overall.se == pytest.approx(a.overall.se)
    assert b.producers[1].se == pytest.approx(a.producers[1].se)


def test_edge_cases_do_not_crash():
    pix = {1: 5000, 2: 3000, 3: 1500, 4: 500}
    # class 3 has a single point; class 4 (500 px) has no point; class 2 never in the reference;
    # reference class 5 never mapped; two points unlabelled
    m = [1, 1, 1, 1, 2, 2, 2, 3, 1, 1]
    r = [1, 1, 5, 1, 1, 1, 3, 3, None, 0]
    a = assess(m, r, pix, pixel_area_m2=100)
    assert a.n == 8 and a.n_unlabelled == 2
    assert a.codes == [1, 2, 3, 4, 5]
    text = " ".join(a.warnings)
    assert "single labelled point" in text and "without any labelled point" in text
    assert "5.00%" in text  # 500 / 10000 pixels of the map left out
    assert math.isnan(a.producers[2].value)       # class 2 never referenced
    assert a.areas[2].proportion.value == 0.0 and a.areas[2].proportion.se == 0.0
    assert math.isnan(a.users[5].value)           # class 5 never mapped
    assert math.isnan(a.users[4].value)           # unsampled stratum
    assert a.areas[5].proportion.value > 0
    # weights renormalised over the sampled strata (9500 px)
    w1, w2, w3 = 5000 / 9500, 3000 / 9500, 1500 / 9500
    assert a.overall.value == pytest.approx(w1 * 0.75 + w2 * 0 + w3 * 1.0)
    assert sum(a.areas[c].proportion.value for c in a.codes) == pytest.approx(1.0)
    assert math.isfinite(a.overall.se)
    d = json.loads(build_json(a))                # NaN written as null, valid JSON
    assert d["producers_accuracy"]["2"]["estimate"] is None
    html = build_html(a)
    assert "&ndash;" in html
    build_csv(a)


def test_no_labelled_point_is_an_error_with_a_message():
    with pytest.raises(ValueError, match="No labelled point"):
        assess([1, 2], [None, None], {1: 10, 2: 10})


def test_report_files(olofsson, tmp_path):
    out = write_report(olofsson, tmp_path / "r.html", tmp_path / "r.csv", tmp_path / "r.json",
                       title="Olofsson et al. 2014 example")
    assert set(out) == {"html", "csv", "json"}
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert html.count("<svg") == 2
    low = html.lower()
    assert "<script" not in low and "<link" not in low and "src=" not in low
    assert "http://" not in low.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in low
    assert "Stable non-forest" in html and "94.7" in html
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    oa = [r for r in rows if r["quantity"] == "overall_accuracy"]
    assert float(oa[0]["value"]) == pytest.approx(olofsson.overall.value)
    cell = [r for r in rows if r["section"] == "error_matrix_counts" and r["map_code"] == "4"
            and r["reference_code"] == "3"]
    assert int(cell[0]["value"]) == 9
    area = [r for r in rows
            if r["map_code"] == "1" and r["quantity"] == "estimated_area_ha_estimate"]
    assert float(area[0]["value"]) == pytest.approx(21_157.76, abs=0.01)
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["overall_accuracy"]["estimate"] == pytest.approx(olofsson.overall.value)
    assert d["error_matrix_counts"]["matrix"] == OLOFSSON_COUNTS.tolist()
    assert d["areas"]["2"]["estimated_area_ha"]["ci_half_width"] == pytest.approx(3756, abs=1)
    assert "not design-based" in d["not_design_based"]["note"].lower()
