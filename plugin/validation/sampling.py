"""Sampling designs over a classified raster: stratified random, simple random, systematic.

Random designs never reject points over the extent. They read the raster twice, block by block:

1. count the pixels of each class, per window (``np.bincount``), which gives the strata sizes N_h;
2. choose for each stratum ``n_h`` random ranks among its N_h pixels (without replacement), then
   map the ranks to pixel positions, reading only the windows that hold a chosen rank.

So the cost is two reads of the raster whatever the share of nodata or the rarity of a class; a
100-million-pixel raster is sampled in a few seconds. Pixel order is row-major within a window and
window order is fixed, so a seed gives the same points on every machine.

* ``stratified``: strata = map classes, sizes from :func:`.sample_size.allocate`;
  inclusion probability n_h / N_h, weight N_h / n_h.
* ``simple``: simple random sample of the valid pixels; stratum = map class (post-stratified
  at assessment time); inclusion probability n / N.
* ``systematic``: a square grid with a random origin, spacing sqrt(A_valid / n) so that about n
  points fall on valid pixels; stratum = map class (post-stratified); inclusion probability
  treated as n / N (the usual approximation: a systematic sample is assessed as a simple random
  one, which tends to overstate its variance).

A minimum distance between points (in CRS units) thins candidates greedily: each stratum draws
extra candidate ranks in random order, strata take turns accepting a candidate that lies at least
``min_distance`` from every point accepted so far, and a stratum that runs short draws new
candidates (``max_rounds`` times, growing). What cannot be reached is reported in
``SampleResult.shortfall`` and ``messages``. Note that a minimum distance makes inclusion
probabilities only approximately n_h / N_h (pixels near others are slightly less likely).
"""
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .raster_access import ValidationError, _as_codes, _open, count_classes
from .sample_size import (ALLOCATION_METHODS, allocate, plan, sample_size_for_oa,
                          size_for_target)

DESIGNS = ("stratified", "simple", "systematic")
ALLOCATIONS = ALLOCATION_METHODS


@dataclass
class SamplePoint:
    id: int
    x: float
    y: float
    row: int
    col: int
    map_class: int
    stratum: int
    incl_prob: float
    weight: float


@dataclass
class SampleResult:
    points: List[SamplePoint]
    design: str
    allocation_method: Optional[str]
    planned: Dict[int, int]          # stratum -> planned n_h (simple/systematic: achieved)
    achieved: Dict[int, int]         # stratum -> drawn n_h
    stratum_sizes: Dict[int, int]    # stratum (map class) -> N_h pixels
    shortfall: Dict[int, int]        # stratum -> points missing (min distance not reachable)
    crs_wkt: str
    pixel_area: float                # squared CRS units
    pixel_area_m2: Optional[float]
    labels: Dict[int, str]
    colors: Dict[int, str]
    seed: int
    min_distance: float
    seconds: float
    expected_oa_se: Optional[float] = None
    messages: List[str] = field(default_factory=list)

    @property
    def n(self):
        return len(self.points)

    def label(self, code):
        return self.labels.get(int(code), f"Class {int(code)}")


def _rng(seed):
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2 ** 31 - 1))
    return np.random.default_rng(int(seed)), int(seed)


class _Locator:
    """Maps within-class ranks to pixel positions with one block-wise pass."""

    def __init__(self, path, band, counts):
        self.path = path
        self.band = band
        self.counts = counts
        # cumulative count of each class before each window
        self.before = []
        run = {}
        for wc in counts.per_window:
            self.before.append(dict(run))
            for c, v in wc.items():
                run[c] = run.get(c, 0) + v

    def locate(self, ranks, is_cancelled=None):
        """``ranks``: code -> int array of ranks in [0, N_code). Returns code -> (rows, cols),
        in the order of the given ranks."""
        order = {c: np.argsort(r, kind="stable") for c, r in ranks.items()}
        sorted_r = {c: np.asarray(r, np.int64)[order[c]] for c, r in ranks.items()}
        rows = {c: np.empty(len(r), np.int64) for c, r in ranks.items()}
        cols = {c: np.empty(len(r), np.int64) for c, r in ranks.items()}
        ds = _open(self.path)
        try:
            b = ds.GetRasterBand(self.band)
            for (x0, y0, w, h), wc, before in zip(self.counts.windows, self.counts.per_window,
                                                  self.before):
                wanted = []
                for c, sr in sorted_r.items():
                    k = wc.get(c, 0)
                    if not k or not len(sr):
                        continue
                    start = before.get(c, 0)
                    i0, i1 = np.searchsorted(sr, [start, start + k])
                    if i1 > i0:
                        wanted.append((c, i0, i1, start))
                if not wanted:
                    continue
                if is_cancelled and is_cancelled():
                    raise ValidationError("Cancelled.")
                arr = _as_codes(b.ReadAsArray(x0, y0, w, h)).ravel()
                for c, i0, i1, start in wanted:
                    pos = np.flatnonzero(arr == c)[sorted_r[c][i0:i1] - start]
                    idx = order[c][i0:i1]
                    rows[c][idx] = y0 + pos // w
                    cols[c][idx] = x0 + pos % w
        finally:
            ds = None
        return {c: (rows[c], cols[c]) for c in ranks}


def _choose(rng, population, size, exclude=None):
    """``size`` distinct ranks in [0, population) in random order, avoiding ``exclude``."""
    size = int(min(size, population - (len(exclude) if exclude is not None else 0)))
    if size <= 0:
        return np.empty(0, np.int64)
    if exclude is None or len(exclude) == 0:
        return rng.choice(population, size=size, replace=False).astype(np.int64)
    excl = np.asarray(sorted(exclude), np.int64)
    if population - len(excl) <= 4 * size or population <= 1_000_000:
        rest = np.setdiff1d(np.arange(population, dtype=np.int64), excl, assume_unique=True)
        return rng.permutation(rest)[:size]
    picked = []
    got = 0
    while got < size:
        cand = rng.choice(population, size=min(population, 2 * (size - got) + len(excl)),
                          replace=False)
        cand = cand[~np.isin(cand, excl)]
        cand = cand[:size - got]
        picked.append(cand)
        excl = np.union1d(excl, cand)
        got += len(cand)
    return np.concatenate(picked).astype(np.int64)


class _Spacer:
    """Greedy minimum-distance acceptance with a hash grid of cell size ``d``."""

    def __init__(self, d):
        self.d = float(d)
        self.d2 = self.d * self.d
        self.grid = {}

    def accept(self, x, y):
        if self.d <= 0:
            return True
        gx, gy = int(np.floor(x / self.d)), int(np.floor(y / self.d))
        for i in (gx - 1, gx, gx + 1):
            for j in (gy - 1, gy, gy + 1):
                for (px, py) in self.grid.get((i, j), ()):
                    if (px - x) ** 2 + (py - y) ** 2 < self.d2:
                        return False
        self.grid.setdefault((gx, gy), []).append((x, y))
        return True


def draw_sample(raster_path, n=None, design="stratified", allocation="proportional",
                min_per_stratum=0, target_se=None, expected_ua=None, min_distance=0.0,
                seed=None, band=1, nodata="auto", classes=None, max_rounds=6,
                progress=None, is_cancelled=None, log=None) -> SampleResult:
    """Draw validation points from a classified raster.

    ``n``: total sample size, or None to derive it from ``target_se`` (target standard error of
    overall accuracy) and ``expected_ua`` (a number or a dict code -> expected user's accuracy)
    with Olofsson et al. 2014 eq. 13. ``allocation`` (stratified design): ``proportional``,
    ``equal`` or ``neyman``, each with ``min_per_stratum``. ``classes``: restrict the strata to
    these codes (others are treated like nodata). ``min_distance`` in CRS units. ``seed``: any
    int; None draws one (recorded in the result). ``nodata``: see :func:`raster_info`.
    """
    t0 = time.perf_counter()
    if design not in DESIGNS:
        raise ValidationError(f"Unknown design {design!r}; use one of {DESIGNS}.")
    messages = []

    def say(msg):
        messages.append(msg)
        if log:
            log(msg)

    def prog(frac):
        if progress:
            progress(max(0.0, min(1.0, frac)))

    counts = count_classes(raster_path, band, nodata, progress=lambda f: prog(0.5 * f),
                           is_cancelled=is_cancelled)
    info = counts.info
    if classes is not None:
        keep = {int(c) for c in classes}
        counts.totals = {c: v for c, v in counts.totals.items() if c in keep}
        counts.per_window = [{c: v for c, v in wc.items() if c in keep}
                             for wc in counts.per_window]
    sizes = {c: v for c, v in counts.totals.items() if v > 0}
    if not sizes:
        raise ValidationError(f"{raster_path!r} has no classified pixel to sample "
                              "(every pixel is nodata).")
    n_valid = sum(sizes.values())
    rng, seed = _rng(seed)
    expected_se = None
    if n is None or int(n) <= 0:
        if target_se is None:
            raise ValidationError("Give a sample size or a target standard error of overall "
                                  "accuracy.")
        n13 = sample_size_for_oa(sizes, target_se, expected_ua)
        say(f"Sample size for SE(OA) = {target_se:g}: n = {n13} (Olofsson et al. 2014, eq. 13).")
        if design == "stratified":
            n, _ = size_for_target(sizes, target_se, allocation, min_per_stratum, expected_ua)
            if n != n13:
                say(f"Raised to n = {n} so that the {allocation} allocation with at least "
                    f"{min_per_stratum} per class still meets the target standard error.")
        else:
            n = n13
    n = int(n)
    min_distance = float(min_distance or 0.0)

    if design == "systematic":
        points, shortfall, planned = _systematic(raster_path, band, info, counts, sizes, n, rng,
                                                 min_distance, say)
        achieved = {}
        for p in points:
            achieved[p.stratum] = achieved.get(p.stratum, 0) + 1
        planned = dict(achieved)
        _set_weights(points, sizes, achieved, design)
        prog(1.0)
        return SampleResult(points, design, None, planned, achieved, sizes, shortfall,
                            info.crs_wkt, info.pixel_area, info.pixel_area_m2,
                            {c: info.label(c) for c in sizes}, {c: info.color(c) for c in sizes},
                            seed, min_distance, time.perf_counter() - t0, None, messages)

    if design == "stratified":
        alloc = allocate(sizes, n, allocation, min_per_stratum, expected_ua)
        for note in alloc.notes:
            say(note)
        want = {c: k for c, k in alloc.n.items() if k > 0}
        expected_se = plan(sizes, n, method=allocation, min_per_stratum=min_per_stratum,
                           expected_ua=expected_ua)["expected_oa_se"] \
            if expected_ua is not None else None
    else:
        if n > n_valid:
            say(f"The map has only {n_valid} classified pixels; every one is taken.")
            n = n_valid
        # a simple random sample of the valid pixels is a multivariate hypergeometric split of
        # n over the classes: draw n global ranks over the classes laid end to end
        codes = sorted(sizes)
        bounds = np.cumsum([0] + [sizes[c] for c in codes])
        g = np.sort(_choose(rng, n_valid, n))
        k = np.searchsorted(bounds, g, side="right") - 1
        want = {c: int((k == i).sum()) for i, c in enumerate(codes)}
        want = {c: v for c, v in want.items() if v > 0}

    locator = _Locator(raster_path, band, counts)
    accepted = {c: [] for c in want}
    used = {c: np.empty(0, np.int64) for c in want}
    spacer = _Spacer(min_distance)
    factor = 1.0 if min_distance <= 0 else 2.0
    rounds = 1 if min_distance <= 0 else max(1, int(max_rounds))
    for rnd in range(rounds):
        short = {c: want[c] - len(accepted[c]) for c in want
                 if len(accepted[c]) < want[c] and len(used[c]) < sizes[c]}
        if not short:
            break
        ranks = {}
        for c, k in short.items():
            m = k if min_distance <= 0 else int(np.ceil(k * factor)) + 10
            ranks[c] = _choose(rng, sizes[c], m, used[c])
            used[c] = np.concatenate([used[c], ranks[c]])
        pos = locator.locate(ranks, is_cancelled)
        prog(0.5 + 0.5 * (rnd + 1) / rounds)
        # strata take turns, each through its candidates in random order
        queues = {c: 0 for c in ranks}
        active = sorted(ranks)
        while active:
            nxt = []
            for c in active:
                rows, cols = pos[c]
                while queues[c] < len(rows) and len(accepted[c]) < want[c]:
                    i = queues[c]
                    queues[c] += 1
                    x, y = info.centre(rows[i], cols[i])
                    if spacer.accept(float(x), float(y)):
                        accepted[c].append((int(rows[i]), int(cols[i]), float(x), float(y)))
                        break
                if queues[c] < len(rows) and len(accepted[c]) < want[c]:
                    nxt.append(c)
            active = nxt
        factor *= 2.0
    shortfall = {c: want[c] - len(accepted[c]) for c in want if len(accepted[c]) < want[c]}
    if shortfall:
        lost = ", ".join(f"{info.label(c)}: {v}" for c, v in sorted(shortfall.items()))
        say(f"A minimum distance of {min_distance:g} could not be kept for every point; "
            f"missing points per stratum: {lost}.")
    points = []
    for c in sorted(accepted):
        for (r, col, x, y) in accepted[c]:
            points.append(SamplePoint(0, x, y, r, col, c, c, 0.0, 0.0))
    # a stable, spatially meaningless order: random, but reproducible
    perm = rng.permutation(len(points))
    points = [points[i] for i in perm]
    for i, p in enumerate(points):
        p.id = i + 1
    achieved = {c: len(accepted[c]) for c in want}
    _set_weights(points, sizes, achieved, design)
    prog(1.0)
    return SampleResult(points, design, allocation if design == "stratified" else None,
                        dict(want), achieved, sizes, shortfall, info.crs_wkt, info.pixel_area,
                        info.pixel_area_m2, {c: info.label(c) for c in sizes},
                        {c: info.color(c) for c in sizes}, seed, min_distance,
                        time.perf_counter() - t0, expected_se, messages)


def _set_weights(points, sizes, achieved, design):
    if design == "stratified":
        for p in points:
            p.incl_prob = achieved[p.stratum] / sizes[p.stratum]
            p.weight = sizes[p.stratum] / achieved[p.stratum]
    else:
        n = len(points)
        total = sum(sizes.values())
        for p in points:
            p.incl_prob = n / total
            p.weight = total / n


def _systematic(path, band, info, counts, sizes, n, rng, min_distance, say):
    """Square grid with a random origin; spacing so that about n nodes hit valid pixels."""
    n_valid = sum(sizes.values())
    gt = info.geotransform
    if gt[2] or gt[4]:
        raise ValidationError("A systematic sample needs a north-up raster (no rotation).")
    px, py = abs(gt[1]), abs(gt[5])
    spacing = float(np.sqrt(n_valid * px * py / n))  # in CRS units
    if min_distance > spacing:
        say(f"The grid spacing ({spacing:g}) is below the minimum distance ({min_distance:g}); "
            "the spacing was widened to the minimum distance (fewer points).")
        spacing = min_distance
    sx, sy = spacing / px, spacing / py  # in pixels
    ox, oy = rng.uniform(0, sx), rng.uniform(0, sy)
    cols = np.floor(ox + sx * np.arange(int(np.ceil((info.width - ox) / sx)))).astype(np.int64)
    rows = np.floor(oy + sy * np.arange(int(np.ceil((info.height - oy) / sy)))).astype(np.int64)
    cols = cols[(cols >= 0) & (cols < info.width)]
    rows = rows[(rows >= 0) & (rows < info.height)]
    keep = set(sizes)
    points = []
    ds = _open(path)
    try:
        b = ds.GetRasterBand(band)
        for (x0, y0, w, h) in counts.windows:
            rr = rows[(rows >= y0) & (rows < y0 + h)]
            cc = cols[(cols >= x0) & (cols < x0 + w)]
            if rr.size == 0 or cc.size == 0:
                continue
            arr = _as_codes(b.ReadAsArray(x0, y0, w, h))
            vals = arr[np.ix_(rr - y0, cc - x0)]
            for i, r in enumerate(rr):
                for j, c in enumerate(cc):
                    v = int(vals[i, j])
                    if v in keep:
                        x, y = info.centre(r, c)
                        points.append(SamplePoint(0, float(x), float(y), int(r), int(c), v, v,
                                                  0.0, 0.0))
    finally:
        ds = None
    points.sort(key=lambda p: (p.row, p.col))
    for i, p in enumerate(points):
        p.id = i + 1
    say(f"Systematic grid: spacing {spacing:g} CRS units, {len(points)} points on classified "
        f"pixels (about {n} expected).")
    return points, {}, None


__all__ = ["DESIGNS", "ALLOCATIONS", "SamplePoint", "SampleResult", "draw_sample"]
