"""Design-based accuracy and area estimates from a labelled validation sample.

Estimators
----------
Every estimate is a stratified estimator of a population mean or ratio (Stehman 2014, eqs. 2-3
and 27-28; Cochran 1977): for an indicator y_u of each sample unit,

    mean:   Y^ = sum_h W_h ybar_h,                    V(Y^) = sum_h W_h^2 (1 - f_h) s2_yh / n_h
    ratio:  R^ = sum_h W_h ybar_h / sum_h W_h xbar_h,
            V(R^) = 1/X^2 sum_h W_h^2 (1 - f_h) (s2_yh + R^2 s2_xh - 2 R^ s_xyh) / n_h

with W_h = N_h / N the stratum weights (pixel counts), n_h the points of stratum h, s2 the sample
variances (ddof = 1) and f_h = n_h / N_h (the finite population correction, off by default as in
Olofsson et al. 2014; it is negligible for any real map).

* area proportion of cell (i, j) of the error matrix: y = [map = i and reference = j]
* overall accuracy: y = [map = reference]
* user's accuracy of class i: ratio with y = [map = i and reference = i], x = [map = i]
* producer's accuracy of class j: ratio with y = [map = j and reference = j], x = [reference = j]
* area proportion of class j: y = [reference = j]; area = A_total * p^_.j

When the strata are the map classes (the stratified design of this plugin) these are exactly the
estimators of Olofsson et al. (2014): p^_ij = W_i n_ij / n_i. (eq. 4), O^ = sum_j p^_jj (eq. 1),
U^_i = p^_ii / p^_i. (eq. 2), P^_j = p^_jj / p^_.j (eq. 3), V(O^) = sum_i W_i^2 U^_i (1 - U^_i) /
(n_i. - 1) (eq. 5), V(U^_i) = U^_i (1 - U^_i) / (n_i. - 1) (eq. 6), V(P^_j) of eq. 7 and
SE(p^_.j) = sqrt(sum_i W_i^2 (n_ij/n_i.)(1 - n_ij/n_i.) / (n_i. - 1)) (eq. 10); the area
estimate is A^_j = A p^_.j with CI A^_j +- z A SE(p^_.j) (eqs. 9-11).

Simple random and systematic samples are assessed the same way, post-stratified by map class:
the strata are the map classes, their sizes the mapped pixel counts, n_i. the points that fell
into each class (Olofsson et al. 2014, section 4.2; systematic samples treated as simple random).
If the strata are not the map classes (e.g. points drawn on an older map), Stehman's general
estimators above still apply, with strata and map classes given separately.

Confidence intervals are estimate +- z SE (z = 1.96 for 95 %), not clipped to [0, 1].

Edge cases (documented, never a crash)
--------------------------------------
* A stratum with a single point has no variance estimate: its variance contribution is taken as
  0 (the standard errors are then underestimated) and a warning names it.
* A stratum with pixels but no labelled point cannot be estimated: it is left out, the other
  strata's weights are renormalised (the estimates describe the sampled part of the map only) and
  a warning gives the share of the map left out.
* A class that is never in the reference sample gets an estimated area of 0 (SE 0) and an
  undefined producer's accuracy (NaN, written as null / empty); a class never mapped in the sample
  has an undefined user's accuracy.
* Points without a reference label (None, NaN or a value in ``unlabelled``, default 0) are not
  used; their number is reported. Points whose stratum has no pixels are dropped with a warning.

Cohen's kappa and per-class F1 / IoU are computed on the raw sample counts: they are *not*
design-based (they ignore inclusion probabilities) and are given only for comparison with papers.
"""
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from ..core.classes import CLASS_BY_CODE

Z95 = 1.959963984540054
NOT_DESIGN_BASED = ("Not design-based: computed on the raw sample counts, ignoring inclusion "
                    "probabilities. For comparison with papers only; use the estimates above.")


def _finite(v):
    return v is not None and math.isfinite(v)


@dataclass
class Estimate:
    value: float
    se: float
    z: float = Z95

    @property
    def half_width(self):
        return self.z * self.se if _finite(self.se) else float("nan")

    @property
    def ci(self):
        return (self.value - self.half_width, self.value + self.half_width)

    def to_dict(self):
        lo, hi = self.ci
        return {"estimate": _num(self.value), "se": _num(self.se), "ci_low": _num(lo),
                "ci_high": _num(hi), "ci_half_width": _num(self.half_width)}


@dataclass
class ClassArea:
    code: int
    mapped_pixels: Optional[float]       # None when not known (no map raster given)
    mapped_proportion: float
    proportion: Estimate                 # estimated (reference) area proportion p^_.j
    total_area_m2: Optional[float]

    def area_m2(self):
        if self.total_area_m2 is None:
            return None
        return Estimate(self.proportion.value * self.total_area_m2,
                        self.proportion.se * self.total_area_m2, self.proportion.z)

    def to_dict(self):
        out = {"code": self.code,
               "mapped_pixels": None if self.mapped_pixels is None else int(self.mapped_pixels),
               "mapped_proportion": _num(self.mapped_proportion),
               "estimated_proportion": self.proportion.to_dict()}
        a = self.area_m2()
        if a is not None:
            mapped_m2 = self.mapped_proportion * self.total_area_m2
            out["mapped_area_ha"] = _num(mapped_m2 / 1e4)
            out["mapped_area_km2"] = _num(mapped_m2 / 1e6)
            out["estimated_area_ha"] = _scaled(a, 1e-4)
            out["estimated_area_km2"] = _scaled(a, 1e-6)
        return out


def _scaled(est, k):
    return Estimate(est.value * k, est.se * k, est.z).to_dict()


def _num(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


@dataclass
class Assessment:
    codes: List[int]                     # classes (rows = map, columns = reference)
    labels: Dict[int, str]
    colors: Dict[int, str]
    counts: np.ndarray                   # sample error matrix n_ij (map rows, reference cols)
    proportions: np.ndarray              # estimated area proportions p^_ij
    strata: List[dict]                   # code, pixels N_h, weight W_h, points n_h
    overall: Estimate
    users: Dict[int, Estimate]
    producers: Dict[int, Estimate]
    areas: Dict[int, ClassArea]
    n: int
    n_unlabelled: int
    kappa: float
    f1: Dict[int, float]
    iou: Dict[int, float]
    pixel_area_m2: Optional[float]
    total_area_m2: Optional[float]
    z: float
    fpc: bool
    design: str = ""
    post_stratified: bool = False
    warnings: List[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    def label(self, code):
        return self.labels.get(code) or f"Class {code}"

    def to_dict(self):
        k = len(self.codes)
        return {
            "method": ("Stratified estimators of Olofsson et al. (2014) / Stehman (2014); "
                       + ("simple random or systematic sample post-stratified by map class; "
                          if self.post_stratified else "")
                       + f"confidence intervals: estimate +- {self.z:.2f} SE"
                       + ("; finite population correction applied" if self.fpc else "")),
            "design": self.design,
            "metadata": self.metadata,
            "n_points": self.n,
            "n_unlabelled": self.n_unlabelled,
            "pixel_area_m2": _num(self.pixel_area_m2),
            "total_area_m2": _num(self.total_area_m2),
            "classes": [{"code": c, "label": self.label(c), "color": self.colors.get(c)}
                        for c in self.codes],
            "strata": self.strata,
            "error_matrix_counts": {
                "rows": "map class", "columns": "reference class", "codes": self.codes,
                "matrix": [[int(self.counts[i, j]) for j in range(k)] for i in range(k)]},
            "area_proportions": {
                "rows": "map class", "columns": "reference class", "codes": self.codes,
                "matrix": [[_num(self.proportions[i, j]) for j in range(k)] for i in range(k)]},
            "overall_accuracy": self.overall.to_dict(),
            "users_accuracy": {str(c): self.users[c].to_dict() for c in self.codes},
            "producers_accuracy": {str(c): self.producers[c].to_dict() for c in self.codes},
            "areas": {str(c): self.areas[c].to_dict() for c in self.codes},
            "not_design_based": {
                "note": NOT_DESIGN_BASED,
                "kappa": _num(self.kappa),
                "f1": {str(c): _num(self.f1[c]) for c in self.codes},
                "iou": {str(c): _num(self.iou[c]) for c in self.codes}},
            "warnings": list(self.warnings),
        }


def _is_unlabelled(v, unlabelled):
    if v is None:
        return True
    try:
        f = float(v)
    except (TypeError, ValueError):
        return True
    return not math.isfinite(f) or f in unlabelled


class _Strata:
    """Per-stratum sample statistics of indicators (Stehman 2014)."""

    def __init__(self, strata, codes, weights, sizes, fpc):
        self.index = [np.flatnonzero(strata == h) for h in codes]
        self.w = np.asarray(weights, np.float64)
        self.n = np.array([len(i) for i in self.index], np.float64)
        self.f = (self.n / np.asarray(sizes, np.float64)) if fpc else np.zeros(len(codes))

    def _stats(self, y, x=None):
        means_y, means_x, var_y, var_x, cov = [], [], [], [], []
        for idx in self.index:
            yy = y[idx]
            xx = x[idx] if x is not None else yy
            means_y.append(yy.mean())
            means_x.append(xx.mean())
            if len(idx) > 1:
                var_y.append(yy.var(ddof=1))
                var_x.append(xx.var(ddof=1))
                cov.append(((yy - yy.mean()) * (xx - xx.mean())).sum() / (len(idx) - 1))
            else:
                var_y.append(0.0)
                var_x.append(0.0)
                cov.append(0.0)
        return (np.array(means_y), np.array(means_x), np.array(var_y), np.array(var_x),
                np.array(cov))

    def mean(self, y, z):
        my, _, vy, _, _ = self._stats(y.astype(np.float64))
        est = float((self.w * my).sum())
        var = float((self.w ** 2 * (1 - self.f) * vy / self.n).sum())
        return Estimate(est, math.sqrt(max(var, 0.0)), z)

    def ratio(self, y, x, z):
        my, mx, vy, vx, cxy = self._stats(y.astype(np.float64), x.astype(np.float64))
        ybar = float((self.w * my).sum())
        xbar = float((self.w * mx).sum())
        if xbar <= 0:
            return Estimate(float("nan"), float("nan"), z)
        r = ybar / xbar
        var = float((self.w ** 2 * (1 - self.f) * (vy + r * r * vx - 2 * r * cxy) / self.n).sum())
        return Estimate(r, math.sqrt(max(var, 0.0)) / xbar, z)


def assess(map_classes, reference_classes, stratum_sizes, strata=None, pixel_area_m2=None,
           labels=None, colors=None, mapped_sizes=None, z=Z95, fpc=False, unlabelled=(0,),
           design="", metadata=None) -> Assessment:
    """Accuracy and area estimates from a labelled sample.

    ``map_classes``, ``reference_classes``: one entry per point (reference None / NaN / in
    ``unlabelled`` = not labelled). ``strata``: each point's stratum; None = its map class (the
    stratified design of this plugin, or post-stratification of a simple random / systematic
    sample). ``stratum_sizes``: stratum code -> pixel count N_h. ``mapped_sizes``: map class ->
    pixel count (defaults to ``stratum_sizes`` when the strata are the map classes).
    ``pixel_area_m2``: area of one pixel, for areas in ha / km2 (None: proportions only).
    """
    warnings = []
    map_classes = list(map_classes)
    reference_classes = list(reference_classes)
    if len(map_classes) != len(reference_classes):
        raise ValueError("map_classes and reference_classes differ in length.")
    strata_given = strata is not None
    strata = list(strata) if strata_given else list(map_classes)
    if len(strata) != len(map_classes):
        raise ValueError("strata and map_classes differ in length.")
    unl = {float(u) for u in (unlabelled or ())}
    keep = [i for i, r in enumerate(reference_classes) if not _is_unlabelled(r, unl)]
    n_unlabelled = len(map_classes) - len(keep)
    bad_map = [i for i in keep if _is_unlabelled(map_classes[i], set())]
    if bad_map:
        warnings.append(f"{len(bad_map)} point(s) without a map class were left out.")
        bad = set(bad_map)
        keep = [i for i in keep if i not in bad]
    m = np.array([int(round(float(map_classes[i]))) for i in keep], np.int64)
    r = np.array([int(round(float(reference_classes[i]))) for i in keep], np.int64)
    s = np.array([int(round(float(strata[i]))) for i in keep], np.int64)
    same_as_map = (not strata_given) or bool(np.all(s == m))
    sizes = {int(c): float(v) for c, v in stratum_sizes.items() if v and v > 0}
    if not sizes:
        raise ValueError("No stratum has pixels: give the pixel count of each stratum.")
    outside = ~np.isin(s, list(sizes))
    if outside.any():
        warnings.append(f"{int(outside.sum())} point(s) lie in strata without pixels "
                        f"({sorted(set(s[outside].tolist()))}) and were left out.")
        m, r, s = m[~outside], r[~outside], s[~outside]
    if len(m) == 0:
        raise ValueError("No labelled point to assess: label the reference class of the points "
                         "first.")
    h_codes = sorted(sizes)
    n_h = {h: int((s == h).sum()) for h in h_codes}
    unsampled = [h for h in h_codes if n_h[h] == 0]
    n_total_px = sum(sizes.values())
    if unsampled:
        share = sum(sizes[h] for h in unsampled) / n_total_px
        warnings.append(
            "Strata without any labelled point cannot be estimated and were left out: "
            + ", ".join(_lab(labels, h) for h in unsampled)
            + f" ({share:.2%} of the map). The estimates describe the rest of the map only.")
    single = [h for h in h_codes if n_h[h] == 1]
    if single:
        warnings.append("Strata with a single labelled point have no variance estimate (taken as "
                        "0, so standard errors are underestimated): "
                        + ", ".join(_lab(labels, h) for h in single) + ".")
    used = [h for h in h_codes if n_h[h] > 0]
    used_px = np.array([sizes[h] for h in used])
    weights = used_px / used_px.sum()
    st = _Strata(s, used, weights, used_px, fpc)

    if mapped_sizes is None and same_as_map:
        mapped_sizes = sizes
    mapped = {int(c): float(v) for c, v in (mapped_sizes or {}).items() if v and v > 0}
    codes = sorted(set(mapped) | set(m.tolist()) | set(r.tolist()) |
                   (set(used) if same_as_map else set()))
    k = len(codes)
    pos = {c: i for i, c in enumerate(codes)}
    counts = np.zeros((k, k), np.int64)
    np.add.at(counts, (np.array([pos[c] for c in m]), np.array([pos[c] for c in r])), 1)
    props = np.zeros((k, k))
    for i, ci in enumerate(codes):
        for j, cj in enumerate(codes):
            if counts[i, j]:
                props[i, j] = st.mean((m == ci) & (r == cj), z).value
    overall = st.mean(m == r, z)
    users, producers, areas = {}, {}, {}
    total_px = float(used_px.sum())
    total_area = total_px * pixel_area_m2 if pixel_area_m2 else None
    mapped_total = sum(mapped[c] for c in mapped if (not same_as_map or c in used))
    for c in codes:
        users[c] = st.ratio((m == c) & (r == c), m == c, z)
        producers[c] = st.ratio((m == c) & (r == c), r == c, z)
        prop = st.mean(r == c, z)
        if same_as_map:
            mp = (mapped.get(c, 0.0) / mapped_total) if (c in used and mapped_total) else 0.0
            mpx = mapped.get(c, 0.0) if c in used else 0.0
        elif mapped:
            tot = sum(mapped.values())
            mp, mpx = mapped.get(c, 0.0) / tot, mapped.get(c, 0.0)
        else:
            mp, mpx = st.mean(m == c, z).value, None
        areas[c] = ClassArea(c, mpx, mp, prop, total_area)
    for c in codes:
        if not _finite(users[c].value) and (mapped.get(c, 0) > 0):
            warnings.append(f"User's accuracy of {_lab(labels, c)} is undefined: no labelled "
                            "point was mapped as this class.")
        if not _finite(producers[c].value):
            warnings.append(f"Producer's accuracy of {_lab(labels, c)} is undefined: no point "
                            "has this reference class (estimated area 0).")
    kappa, f1, iou = _sample_scores(counts)
    strata_out = [{"code": h, "label": _lab(labels, h), "pixels": int(sizes[h]),
                   "weight": sizes[h] / n_total_px,
                   "weight_used": (float(weights[used.index(h)]) if h in used else 0.0),
                   "points": n_h[h]} for h in h_codes]
    lab = {c: _lab(labels, c) for c in codes}
    col = {c: (colors or {}).get(c) or (CLASS_BY_CODE[c].color if c in CLASS_BY_CODE
                                        else "#999999") for c in codes}
    return Assessment(codes, lab, col, counts, props, strata_out, overall, users, producers,
                      areas, int(len(m)), n_unlabelled, kappa,
                      {c: f1[i] for i, c in enumerate(codes)},
                      {c: iou[i] for i, c in enumerate(codes)},
                      pixel_area_m2, total_area, z, fpc, design,
                      post_stratified=design in ("simple", "systematic"),
                      warnings=warnings, metadata=dict(metadata or {}))


def _lab(labels, code):
    if labels and labels.get(code):
        return labels[code]
    if code in CLASS_BY_CODE:
        return CLASS_BY_CODE[code].label
    return f"Class {code}"


def _sample_scores(counts):
    """Cohen's kappa and per-class F1 / IoU of the raw sample error matrix (not design-based)."""
    cm = counts.astype(np.float64)
    total = cm.sum()
    tp = np.diag(cm)
    rows = cm.sum(axis=1)   # mapped
    cols = cm.sum(axis=0)   # reference
    if total == 0:
        nan = np.full(len(tp), np.nan)
        return float("nan"), nan, nan
    po = tp.sum() / total
    pe = (rows * cols).sum() / total ** 2
    kappa = (po - pe) / (1 - pe) if pe < 1 else float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(rows + cols > 0, 2 * tp / (rows + cols), np.nan)
        iou = np.where(rows + cols - tp > 0, tp / (rows + cols - tp), np.nan)
    return float(kappa), f1, iou
