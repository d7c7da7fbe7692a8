"""Sample size and allocation for a stratified random sample (strata = map classes).

Olofsson et al. (2014), section 5.1.1, eq. 13: the sample size that gives a target standard error
S(O) of the estimated overall accuracy with stratified random sampling is

    n = (sum_i W_i S_i)^2 / (S(O)^2 + (1/N) sum_i W_i S_i^2)  ~=  (sum_i W_i S_i / S(O))^2

where W_i is the mapped area proportion of class i, S_i = sqrt(U_i (1 - U_i)) the standard
deviation of stratum i for an expected user's accuracy U_i, and N the number of pixels (the second
term of the denominator vanishes for any real map). The paper's example (U = 0.7, 0.6, 0.9, 0.95
for W = 0.02, 0.015, 0.32, 0.645 and S(O) = 0.01) gives n = 641.

The total is then allocated to strata proportionally to W_i, equally, or after Neyman
(n_i proportional to W_i S_i, the allocation that minimises the variance of overall accuracy).
Olofsson et al. recommend moving away from proportional allocation so rare classes get enough
points for their user's accuracy: here every method takes a minimum per stratum (e.g. 50) and
distributes the rest by its rule. No stratum gets more points than it has pixels.
"""
import math
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

ALLOCATION_METHODS = ("proportional", "equal", "neyman")
DEFAULT_EXPECTED_UA = 0.8


def _weights(counts):
    codes = sorted(int(c) for c, v in counts.items() if v > 0)
    n_pix = np.array([float(counts[c]) for c in codes])
    total = n_pix.sum()
    if total <= 0:
        raise ValueError("The map has no classified pixel (every pixel is nodata).")
    return codes, n_pix, n_pix / total


def expected_ua_for(codes, expected_ua):
    """Expected user's accuracy per code from a number, a dict code -> U or None (0.8)."""
    out = []
    for c in codes:
        if expected_ua is None:
            u = DEFAULT_EXPECTED_UA
        elif isinstance(expected_ua, dict):
            u = expected_ua.get(c, expected_ua.get(str(c), DEFAULT_EXPECTED_UA))
        else:
            u = float(expected_ua)
        u = float(u)
        if not 0.0 <= u <= 1.0:
            raise ValueError(f"Expected user's accuracy {u} of class {c} is not between 0 and 1.")
        out.append(u)
    return np.array(out)


def sample_size_for_oa(counts, target_se, expected_ua=None, finite_population=True):
    """Olofsson et al. 2014 eq. 13: total n for a target SE of overall accuracy.

    ``counts``: map class code -> pixel count (the strata sizes); ``target_se``: e.g. 0.01;
    ``expected_ua``: one number for all classes or a dict code -> expected user's accuracy.
    Without ``finite_population`` the approximation (sum W_i S_i / S(O))^2 is returned.
    """
    if not target_se or target_se <= 0:
        raise ValueError("The target standard error of overall accuracy must be positive.")
    codes, n_pix, w = _weights(counts)
    s = np.sqrt(expected_ua_for(codes, expected_ua) * (1 - expected_ua_for(codes, expected_ua)))
    num = float((w * s).sum()) ** 2
    den = target_se ** 2
    if finite_population:
        den += float((w * s * s).sum()) / n_pix.sum()
    if num == 0:
        return 1
    return int(math.ceil(num / den - 1e-9))


@dataclass
class Allocation:
    """Sample size per stratum (code -> n_h) and how it came about."""
    n: Dict[int, int]
    method: str
    requested_total: int
    min_per_stratum: int
    notes: List[str] = field(default_factory=list)

    @property
    def total(self):
        return int(sum(self.n.values()))


def allocate(counts, n, method="proportional", min_per_stratum=0, expected_ua=None):
    """Split a total sample size ``n`` among strata (map classes).

    ``counts``: code -> pixel count (strata with 0 pixels are left out). Every stratum gets at
    least ``min(min_per_stratum, N_h)`` and at most N_h points; the rest follows ``method``:
    ``proportional`` (n_h ~ N_h), ``equal`` or ``neyman`` (n_h ~ N_h S_h with
    S_h = sqrt(U_h (1 - U_h)) from ``expected_ua``). Rounding keeps the total exactly (largest
    remainders). If the minimums alone exceed ``n`` the total is raised to their sum (noted).
    """
    if method not in ALLOCATION_METHODS:
        raise ValueError(f"Unknown allocation {method!r}; use one of {ALLOCATION_METHODS}.")
    n = int(n)
    if n < 1:
        raise ValueError("The sample size must be at least 1.")
    codes, n_pix, w = _weights(counts)
    notes = []
    caps = n_pix.astype(np.int64)
    floors = np.minimum(int(max(0, min_per_stratum)), caps)
    total = n
    if total > caps.sum():
        notes.append(f"The map has only {int(caps.sum())} classified pixels; every one is taken.")
        total = int(caps.sum())
    if floors.sum() > total:
        notes.append(f"The minimum of {min_per_stratum} points per stratum needs "
                     f"{int(floors.sum())} points; the total was raised from {n} to that.")
        total = int(floors.sum())
    if method == "proportional":
        rule = n_pix.copy()
    elif method == "equal":
        rule = np.ones_like(n_pix)
    else:
        u = expected_ua_for(codes, expected_ua)
        rule = n_pix * np.sqrt(u * (1 - u))
        if rule.sum() <= 0:
            notes.append("Every expected user's accuracy is 0 or 1: Neyman allocation is "
                         "undefined, proportional allocation was used instead.")
            rule = n_pix.copy()
    fixed = np.full(len(codes), np.nan)
    for _ in range(2 * len(codes) + 2):
        free = np.isnan(fixed)
        if not free.any():
            break
        remaining = total - np.nansum(fixed)
        wf = rule[free]
        share = remaining * (wf / wf.sum() if wf.sum() > 0 else np.full(wf.size, 1.0 / wf.size))
        lo = share < floors[free]
        hi = share > caps[free]
        if not lo.any() and not hi.any():
            break
        idx = np.flatnonzero(free)
        if hi.any():  # caps first: they free points for the others
            fixed[idx[hi]] = caps[free][hi]
        else:         # then minimums (they only lower the others' shares)
            fixed[idx[lo]] = floors[free][lo]
    free = np.isnan(fixed)
    alloc = np.where(free, 0, np.nan_to_num(fixed)).astype(np.int64)
    if free.any():
        remaining = total - alloc.sum()
        wf = rule[free]
        share = remaining * (wf / wf.sum() if wf.sum() > 0 else np.full(wf.size, 1.0 / wf.size))
        base = np.floor(share + 1e-9).astype(np.int64)
        left = int(remaining - base.sum())
        if left > 0:
            order = np.argsort(-(share - base), kind="stable")
            for i in order:
                if left == 0:
                    break
                if base[i] < caps[free][i]:
                    base[i] += 1
                    left -= 1
        alloc[free] = base
    out = {c: int(v) for c, v in zip(codes, alloc)}
    if sum(out.values()) != n and not notes:
        notes.append(f"The total is {sum(out.values())} instead of {n} (stratum sizes).")
    return Allocation(out, method, n, int(min_per_stratum), notes)


def expected_oa_se(counts, allocation, expected_ua=None):
    """Predicted SE of overall accuracy, sqrt(sum W_h^2 U_h (1-U_h) / (n_h - 1)) (eq. 5)."""
    n_h = allocation.n if isinstance(allocation, Allocation) else allocation
    codes, n_pix, w = _weights(counts)
    u = expected_ua_for(codes, expected_ua)
    var = 0.0
    for c, wi, ui in zip(codes, w, u):
        k = n_h.get(c, 0)
        if k < 2:
            if wi > 0:
                return float("nan")
            continue
        var += wi * wi * ui * (1 - ui) / (k - 1)
    return math.sqrt(var)


def size_for_target(counts, target_se, method="proportional", min_per_stratum=0,
                    expected_ua=None, max_rounds=40):
    """Smallest n (from eq. 13 upwards) whose allocation meets ``target_se``.

    Eq. 13 assumes the Neyman-optimal split; minimums per stratum or another allocation move
    points away from it, so n is raised until the allocated design predicts SE <= target.
    """
    n = sample_size_for_oa(counts, target_se, expected_ua)
    alloc = allocate(counts, n, method, min_per_stratum, expected_ua)
    for _ in range(max_rounds):
        se = expected_oa_se(counts, alloc, expected_ua)
        if not se > target_se:  # also stops on nan (a stratum with < 2 points and no room)
            break
        n = max(n + 1, int(math.ceil(n * min(2.0, (se / target_se) ** 2))))
        alloc = allocate(counts, n, method, min_per_stratum, expected_ua)
    return n, alloc


def plan(counts, n=None, target_se=None, method="proportional", min_per_stratum=0,
         expected_ua=None):
    """What the UI shows before drawing: total, allocation and predicted standard errors.

    Give either ``n`` or ``target_se`` (then n comes from :func:`size_for_target`).
    """
    if n is None:
        if target_se is None:
            raise ValueError("Give a sample size or a target standard error of overall accuracy.")
        n = sample_size_for_oa(counts, target_se, expected_ua)  # reported as requested_n
        _, alloc = size_for_target(counts, target_se, method, min_per_stratum, expected_ua)
    else:
        alloc = allocate(counts, n, method, min_per_stratum, expected_ua)
    codes, _, w = _weights(counts)
    u = expected_ua_for(codes, expected_ua)
    ua_se = {c: (math.sqrt(ui * (1 - ui) / (alloc.n[c] - 1)) if alloc.n[c] > 1 else float("nan"))
             for c, ui in zip(codes, u)}
    return {
        "n": alloc.total,
        "requested_n": int(n),
        "allocation": alloc.n,
        "weights": {c: float(x) for c, x in zip(codes, w)},
        "expected_oa_se": expected_oa_se(counts, alloc, expected_ua),
        "expected_ua_se": ua_se,
        "notes": list(alloc.notes),
    }


def parse_expected_ua(text):
    """"0.8" -> 0.8; "1=0.9, 2=0.7; 5:0.6" -> {1: 0.9, 2: 0.7, 5: 0.6}; "" -> None.

    Per-class entries may be mixed with one plain number, the default of the other classes.
    """
    text = (text or "").strip()
    if not text:
        return None
    out, default = {}, None
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        sep = "=" if "=" in part else (":" if ":" in part else None)
        try:
            if sep:
                k, v = part.split(sep, 1)
                out[int(k.strip())] = float(v.strip())
            else:
                default = float(part)
        except ValueError as exc:
            raise ValueError(f"Cannot read the expected user's accuracy {part!r}: give a number "
                             "(0.8) or class=value pairs (1=0.9, 2=0.7).") from exc
    for v in list(out.values()) + ([default] if default is not None else []):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"Expected user's accuracy {v} is not between 0 and 1.")
    if not out:
        return default
    if default is not None:
        return _DefaultDict(out, default)
    return out


class _DefaultDict(dict):
    """code -> U with a default for codes not given."""

    def __init__(self, values, default):
        super().__init__(values)
        self.default = default

    def get(self, key, fallback=None):
        if key in self:
            return self[key]
        return self.default
