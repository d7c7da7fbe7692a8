"""The city plan: road network, river, railway and blocks with their function class.

The plan is vector data in the plan frame (see ``frame``), independent of any resolution.
It is built in four steps:

1. networks: major roads (a jittered grid), a meandering river with green banks, a railway;
2. blocks: each superblock between major roads is split recursively by minor streets (a BSP),
   so blocks are rectangles and T-junctions are common, as in real grids;
3. zoning: every block gets a class from spatial scores (commercial core near the centre,
   industry along the railway towards one edge, farmland on the periphery, parks by the
   river, scattered public services) with area quotas, so each class reaches a useful share
   for any seed and size;
4. style: how a block of that class is built (detached houses, slab estates, big-box retail,
   tank farms, schools with running tracks, allotments, crop fields...).
"""
import math
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from ..core.classes import CLASS_BY_KEY
from .frame import ShearField
from .plan_grid import PlanGrid, map_to_plan_index
from .randomness import stream

RES = CLASS_BY_KEY["residential"].code
COM = CLASS_BY_KEY["commercial"].code
IND = CLASS_BY_KEY["industrial"].code
TRA = CLASS_BY_KEY["transportation"].code
PUB = CLASS_BY_KEY["public_services"].code
GRE = CLASS_BY_KEY["green_space"].code
WAT = CLASS_BY_KEY["water"].code
AGR = CLASS_BY_KEY["agricultural_undeveloped"].code
N_CLASSES = 8

MIN_SHARE = 0.035   # every class must cover at least this share of the city


@dataclass(frozen=True)
class MajorRoad:
    axis: str        # "u": a line of constant u (runs north-south); "v": constant v
    pos: float
    width: float
    avenue: bool     # dual carriageway with a tree-lined median


@dataclass
class Street:
    rect: tuple      # (u0, v0, u1, v1), full width
    axis: str        # "u": constant u (the street runs along v)
    width: float
    kind: str = "street"   # street | track (between fields) | path (through parks)


@dataclass
class Block:
    id: int
    cell: tuple      # (u0, v0, u1, v1) up to the centre lines of the surrounding streets
    inner: tuple     # buildable part, streets excluded
    superblock: int
    cls: int = 0
    style: str = ""
    area: float = 0.0          # m² inside the city, not covered by river/railway/major roads
    touches_major: bool = False

    @property
    def centre(self):
        u0, v0, u1, v1 = self.cell
        return 0.5 * (u0 + u1), 0.5 * (v0 + v1)

    @property
    def inner_size(self):
        u0, v0, u1, v1 = self.inner
        return u1 - u0, v1 - v0


@dataclass(frozen=True)
class River:
    axis: str        # "u": flows west-east, centre line v = c(u); "v": flows north-south
    base: float
    amps: tuple
    waves: tuple
    phases: tuple
    width: float
    bank: float      # green strip on each side

    def centre(self, t):
        t = np.asarray(t, dtype=np.float64)
        return self.base + sum(a * np.sin(2 * np.pi * t / w + p)
                               for a, w, p in zip(self.amps, self.waves, self.phases))

    def slope(self, t):
        t = np.asarray(t, dtype=np.float64)
        return sum(a * 2 * np.pi / w * np.cos(2 * np.pi * t / w + p)
                   for a, w, p in zip(self.amps, self.waves, self.phases))

    def distance(self, uu, vv):
        """Approximate distance (m) to the centre line; uu, vv broadcastable."""
        along, across = (uu, vv) if self.axis == "u" else (vv, uu)
        return np.abs(across - self.centre(along)) / np.sqrt(1.0 + self.slope(along) ** 2)


@dataclass(frozen=True)
class Railway:
    pu: float
    pv: float
    angle: float     # direction of the line in the plan frame (radians)
    width: float     # corridor width

    def signed_distance(self, uu, vv):
        return (uu - self.pu) * -math.sin(self.angle) + (vv - self.pv) * math.cos(self.angle)

    def along(self, uu, vv):
        return (uu - self.pu) * math.cos(self.angle) + (vv - self.pv) * math.sin(self.angle)


@dataclass(frozen=True)
class Pond:
    cu: float
    cv: float
    ru: float
    rv: float
    block: int
    wobble: tuple = (0.0, 0.0, 0.0, 0.0)   # shore irregularity: amp3, phase3, amp5, phase5

    @property
    def bbox(self):
        return (self.cu - self.ru, self.cv - self.rv, self.cu + self.ru, self.cv + self.rv)

    def inside(self, uu, vv, shrink_m=0.0):
        du, dv = (uu - self.cu) / self.ru, (vv - self.cv) / self.rv
        theta = np.arctan2(dv, du)
        a3, p3, a5, p5 = self.wobble
        edge = 1.0 - a3 - a5 + a3 * np.sin(3 * theta + p3) + a5 * np.sin(5 * theta + p5)
        edge = edge - shrink_m / min(self.ru, self.rv)
        return du * du + dv * dv < edge * edge


@dataclass
class CityPlan:
    seed: int
    size_m: float
    shear: ShearField
    margin: float
    centre: tuple
    majors: List[MajorRoad]
    river: River
    railway: Railway
    streets: List[Street] = field(default_factory=list)
    blocks: List[Block] = field(default_factory=list)
    ponds: List[Pond] = field(default_factory=list)
    industrial_anchor: Optional[tuple] = None

    def describe(self):
        """Plain-JSON summary for the metadata file."""
        return {
            "majors": [{"axis": m.axis, "pos_m": round(m.pos, 1), "width_m": round(m.width, 1),
                        "avenue": m.avenue} for m in self.majors],
            "river": {"flows_along": self.river.axis, "width_m": round(self.river.width, 1),
                      "bank_m": round(self.river.bank, 1)},
            "railway": {"angle_deg": round(math.degrees(self.railway.angle), 1),
                        "corridor_m": round(self.railway.width, 1)},
            "n_blocks": len(self.blocks),
            "n_streets": len(self.streets),
            "ponds": len(self.ponds),
            "block_styles": _count([f"{b.cls}:{b.style}" for b in self.blocks if b.area > 0]),
        }


def _count(items):
    out = {}
    for it in items:
        out[it] = out.get(it, 0) + 1
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------------------------
# 1. networks

def _major_roads(rng, size_m):
    majors = []
    for axis in ("u", "v"):
        pos = rng.uniform(0.25, 0.62) * min(size_m, 600.0)
        avenue_left = size_m >= 1200
        while pos < size_m - 100.0:
            avenue = avenue_left and rng.random() < 0.35
            width = rng.uniform(30.0, 36.0) if avenue else rng.uniform(18.0, 24.0)
            avenue_left = avenue_left and not avenue
            majors.append(MajorRoad(axis, float(pos), float(width), bool(avenue)))
            pos += rng.uniform(290.0, 440.0)
    return majors


def _river(rng, size_m):
    axis = "u" if rng.random() < 0.5 else "v"
    width = float(np.clip(size_m * rng.uniform(0.026, 0.036), 30.0, 85.0))
    base = size_m * rng.uniform(0.3, 0.7)
    amps = (size_m * rng.uniform(0.04, 0.08), size_m * rng.uniform(0.01, 0.02))
    waves = (size_m * rng.uniform(0.8, 1.4), size_m * rng.uniform(0.25, 0.4))
    phases = tuple(float(p) for p in rng.uniform(0, 2 * math.pi, 2))
    bank = float(rng.uniform(10.0, 18.0))
    return River(axis, float(base), amps, waves, phases, width, bank)


def _railway(rng, size_m, centre, river):
    # Roughly across the river's direction so the two split the city differently.
    base_angle = 0.5 * math.pi if river.axis == "u" else 0.0
    angle = base_angle + rng.uniform(-0.6, 0.6)
    off = rng.uniform(0.12, 0.3) * size_m * (1 if rng.random() < 0.5 else -1)
    pu = centre[0] + off * -math.sin(angle)
    pv = centre[1] + off * math.cos(angle)
    return Railway(float(pu), float(pv), float(angle), float(rng.uniform(16.0, 22.0)))


# --------------------------------------------------------------------------------------------
# 2. blocks

def _superblocks(plan):
    """Cells between major-road centre lines, as (cell, inner) rectangles."""
    lo, hi = -plan.margin, plan.size_m + plan.margin
    out = {}
    for axis in ("u", "v"):
        roads = sorted((m for m in plan.majors if m.axis == axis), key=lambda m: m.pos)
        edges = [(lo, 0.0)] + [(m.pos, m.width / 2) for m in roads] + [(hi, 0.0)]
        out[axis] = [(a[0], a[0] + a[1], b[0], b[0] - b[1]) for a, b in zip(edges, edges[1:])]
    cells = []
    for cv0, iv0, cv1, iv1 in out["v"]:
        for cu0, iu0, cu1, iu1 in out["u"]:
            cells.append(((cu0, cv0, cu1, cv1), (iu0, iv0, iu1, iv1)))
    return cells


def _split(rng, cell, inner, max_side, sb, plan):
    """Recursive BSP of one superblock into blocks separated by minor streets."""
    u0, v0, u1, v1 = inner
    w, h = u1 - u0, v1 - v0
    if max(w, h) <= max_side:
        plan.blocks.append(Block(len(plan.blocks), cell, inner, sb))
        return
    axis = "u" if (w > h if abs(w - h) > 0.15 * max(w, h) else rng.random() < 0.5) else "v"
    length = w if axis == "u" else h
    sw = float(rng.uniform(9.0, 13.0))
    lo_ok = 40.0 + sw / 2
    frac = rng.uniform(0.35, 0.65)
    pos = (u0 if axis == "u" else v0) + frac * length
    lo, hi = (u0, u1) if axis == "u" else (v0, v1)
    if pos - lo < lo_ok or hi - pos < lo_ok:
        plan.blocks.append(Block(len(plan.blocks), cell, inner, sb))
        return
    c0, cv0, c1, cv1 = cell
    if axis == "u":
        plan.streets.append(Street((pos - sw / 2, v0, pos + sw / 2, v1), "u", sw))
        _split(rng, (c0, cv0, pos, cv1), (u0, v0, pos - sw / 2, v1), max_side, sb, plan)
        _split(rng, (pos, cv0, c1, cv1), (pos + sw / 2, v0, u1, v1), max_side, sb, plan)
    else:
        plan.streets.append(Street((u0, pos - sw / 2, u1, pos + sw / 2), "v", sw))
        _split(rng, (c0, cv0, c1, pos), (u0, v0, u1, pos - sw / 2), max_side, sb, plan)
        _split(rng, (c0, pos, c1, cv1), (u0, pos + sw / 2, u1, v1), max_side, sb, plan)


def _subdivide(rng, plan):
    S = plan.size_m
    cu, cv = plan.centre
    for sb, (cell, inner) in enumerate(_superblocks(plan)):
        mu, mv = 0.5 * (cell[0] + cell[2]), 0.5 * (cell[1] + cell[3])
        r = math.hypot(mu - cu, mv - cv) / S
        p_coarse = float(np.clip(r * 1.4 - 0.1, 0.1, 0.6))
        p_fine = float(np.clip(0.7 - r * 1.5, 0.15, 0.6))
        x = rng.random()
        if x < p_fine:
            max_side = rng.uniform(95.0, 145.0)
        elif x < p_fine + p_coarse:
            max_side = rng.uniform(210.0, 320.0)
        else:
            max_side = rng.uniform(145.0, 210.0)
        _split(rng, cell, inner, max_side, sb, plan)
    for b in plan.blocks:
        b.touches_major = any(
            (m.axis == "u" and (abs(b.cell[0] - m.pos) < 1 or abs(b.cell[2] - m.pos) < 1)) or
            (m.axis == "v" and (abs(b.cell[1] - m.pos) < 1 or abs(b.cell[3] - m.pos) < 1))
            for m in plan.majors)


# --------------------------------------------------------------------------------------------
# rasterising the plan (used for quotas here, and at full resolution by the scene painter)

def paint_block_ids(plan, grid):
    """Block id + 1 per plan pixel (0 = no block)."""
    ids = np.zeros((grid.n, grid.n), dtype=np.int32)
    for b in plan.blocks:
        rs, cs, _, _ = grid.window(b.cell)
        ids[rs, cs] = b.id + 1
    return ids


def paint_overlays(plan, grid, out=None):
    """Class codes of features that override blocks (0 elsewhere), in drawing order."""
    ov = np.zeros((grid.n, grid.n), dtype=np.uint8) if out is None else out
    uu, vv = grid.centres()
    d = plan.river.distance(uu, vv).astype(np.float32)
    ov[d < plan.river.width / 2 + plan.river.bank] = GRE
    ov[d < plan.river.width / 2] = WAT
    del d
    for p in plan.ponds:
        rs, cs, pu, pv = grid.window(p.bbox)
        ov[rs, cs][p.inside(pu, pv)] = WAT
    rail = np.abs(plan.railway.signed_distance(uu, vv)) < plan.railway.width / 2
    ov[rail] = TRA
    del rail
    for m in plan.majors:
        rs, cs, mu, mv = grid.window(major_rect(plan, m))
        ov[rs, cs][major_visible(plan, m, mu, mv)] = TRA
    return ov


def major_rect(plan, m):
    lo, hi = -plan.margin, plan.size_m + plan.margin
    a, b = m.pos - m.width / 2, m.pos + m.width / 2
    return (a, lo, b, hi) if m.axis == "u" else (lo, a, hi, b)


def major_visible(plan, m, uu, vv):
    """Where major road m is built (window mask).  Roads crossing the river get a bridge;
    a road running along the river's direction stops at the banks where a meander crosses it
    (a kilometre-long bridge along the river would be absurd)."""
    shape = np.broadcast_shapes(np.shape(uu), np.shape(vv))
    if m.axis != plan.river.axis:   # parallel to the river's course
        return np.broadcast_to(plan.river.distance(uu, vv) >= plan.river.width / 2
                               + plan.river.bank, shape)
    return np.ones(shape, dtype=bool)


def paint_classes(plan, grid):
    """Class code per plan pixel."""
    lut = np.zeros(len(plan.blocks) + 1, dtype=np.uint8)
    for b in plan.blocks:
        lut[b.id + 1] = b.cls
    cls = lut[paint_block_ids(plan, grid)]
    ov = paint_overlays(plan, grid)
    np.copyto(cls, ov, where=ov > 0)
    return cls


def to_map(plan, grid, plan_array, gsd_m):
    """Resample a plan-frame raster onto the map grid (x east, y south) at gsd_m (nearest)."""
    idx = map_to_plan_index(grid, plan.shear, plan.size_m, gsd_m)
    return plan_array.reshape(-1)[idx]


# --------------------------------------------------------------------------------------------
# 3. zoning

class _Scores:
    """Smooth random fields and distances used to score blocks for each class."""

    def __init__(self, rng, plan):
        self.plan = plan
        S = plan.size_m
        cen = np.array([b.centre for b in plan.blocks])
        self.u, self.v = cen[:, 0], cen[:, 1]
        self.r = np.hypot(self.u - plan.centre[0], self.v - plan.centre[1]) / S
        self.edge = np.minimum.reduce([self.u, self.v, S - self.u, S - self.v]) / S
        self.d_rail = np.abs(plan.railway.signed_distance(self.u, self.v)) / S
        self.d_river = plan.river.distance(self.u, self.v) / S
        self.major = np.array([b.touches_major for b in plan.blocks], dtype=float)
        self.rng = rng

    def noise(self):
        """A smooth random field over the city (zero mean, unit-ish amplitude) at block centres."""
        S = self.plan.size_m
        out = np.zeros_like(self.u)
        for _ in range(3):
            k = 2 * np.pi / (S * self.rng.uniform(0.4, 0.9))
            a = self.rng.uniform(0, 2 * np.pi)
            out += np.cos(k * (np.cos(a) * self.u + np.sin(a) * self.v) + self.rng.uniform(0, 7))
        return out / 1.7


def _industrial_anchor(rng, plan):
    """A point on the railway near where it leaves the city: industry clusters there."""
    S = plan.size_m
    rw = plan.railway
    ts = np.linspace(-1.5 * S, 1.5 * S, 601)
    pts = np.stack([rw.pu + ts * math.cos(rw.angle), rw.pv + ts * math.sin(rw.angle)], 1)
    inside = np.all((pts > 0.1 * S) & (pts < 0.9 * S), axis=1)
    cand = pts[inside]
    if len(cand) == 0:
        return (rng.uniform(0.15, 0.85) * S, rng.uniform(0.15, 0.85) * S)
    end = cand[0] if rng.random() < 0.5 else cand[-1]
    return (float(end[0]), float(end[1]))


def _measure(plan, grid, gsd_m):
    """Per-block free area (m²) in the city and the area of each overlay class, on the map grid."""
    ids = to_map(plan, grid, paint_block_ids(plan, grid), gsd_m)
    ov = to_map(plan, grid, paint_overlays(plan, grid), gsd_m)
    px = gsd_m * gsd_m
    free = np.bincount(ids[ov == 0], minlength=len(plan.blocks) + 1)[1:] * px
    ov_area = np.bincount(ov.ravel(), minlength=N_CLASSES + 1) * px
    return free, ov_area, ids, ov


def _class_shares(plan, grid, gsd_m):
    free, ov_area, _, _ = _measure(plan, grid, gsd_m)
    area = ov_area[:].astype(float)
    area[0] = 0
    for b, a in zip(plan.blocks, free):
        area[b.cls] += a
    return area / (plan.size_m ** 2)


def _zone(rng, plan, grid, gsd_m):
    S = plan.size_m
    total = S * S
    free, ov_area, _, _ = _measure(plan, grid, gsd_m)
    for b, a in zip(plan.blocks, free):
        b.area = float(a)
    sc = _Scores(rng, plan)
    anchor = plan.industrial_anchor
    d_anchor = np.hypot(sc.u - anchor[0], sc.v - anchor[1]) / S
    jitter = lambda: rng.normal(0, 0.15, len(plan.blocks))  # noqa: E731
    scores = {
        COM: -5.0 * sc.r + 0.5 * sc.major + 0.3 * sc.noise() + jitter(),
        IND: -3.0 * d_anchor - 3.0 * sc.d_rail + 0.3 * sc.noise() + jitter(),
        AGR: -6.0 * sc.edge + 0.4 * sc.noise() - 1.0 * (sc.d_rail < 0.04) - 1.5 * (d_anchor < 0.25)
             + jitter(),
        TRA: -6.0 * sc.d_rail - 1.0 * sc.r + 0.3 * sc.noise() + jitter(),
        GRE: -3.0 * sc.d_river + 0.6 * sc.noise() + 2 * jitter(),
        PUB: -2.0 * np.abs(sc.r - 0.25) + 3 * jitter(),
    }
    targets = {
        COM: rng.uniform(0.07, 0.10), IND: rng.uniform(0.08, 0.12), AGR: rng.uniform(0.15, 0.22),
        TRA: rng.uniform(0.10, 0.13), GRE: rng.uniform(0.08, 0.12), PUB: rng.uniform(0.05, 0.08),
    }
    have = {c: ov_area[c] / total for c in targets}
    areas = np.array([b.area for b in plan.blocks])
    free_mask = areas > 0
    for c in (COM, IND, AGR, TRA, GRE, PUB):
        s = scores[c].copy()
        s[~free_mask] = -np.inf
        share = have[c]
        picked_any = False
        while True:
            need = targets[c] - share
            i = int(np.argmax(s))
            if not np.isfinite(s[i]):
                break
            a = areas[i] / total
            # Stop when the next block would overshoot more than it helps (but take one block
            # of every class that has none yet, so each class shows its appearance).
            if need < a / 2 and (picked_any or have[c] >= MIN_SHARE):
                break
            plan.blocks[i].cls = c
            share += a
            picked_any = True
            s[i] = -np.inf
            free_mask[i] = False
            for other in scores.values():
                other[i] = -np.inf
            if c == PUB:   # public services are spread out, not clustered
                near = np.hypot(sc.u - sc.u[i], sc.v - sc.v[i]) < 0.18 * S
                s[near] -= 1.5
    for b in plan.blocks:
        if b.cls == 0:
            b.cls = RES
    return sc


def _ensure_shares(rng, plan, grid, gsd_m, sc):
    """Fix up classes whose share fell short (small cities, big river bends...)."""
    total = plan.size_m ** 2
    for _ in range(40):
        shares = _class_shares(plan, grid, gsd_m)
        short = [c for c in range(1, N_CLASSES + 1) if shares[c] < MIN_SHARE]
        if not short:
            return shares
        c = short[0]
        if c == WAT:
            if _add_pond(rng, plan, (MIN_SHARE + 0.01 - shares[WAT]) * total):
                continue
            c = GRE   # no park to dig a pond in: make one first
        # a donor block whose class keeps its own minimum share after giving it away
        cand = [b for b in plan.blocks if b.cls != c and b.area > 0
                and shares[b.cls] - b.area / total >= MIN_SHARE + 0.005]
        if not cand:
            return shares
        badness = {COM: sc.r, IND: sc.d_rail, AGR: sc.edge, TRA: sc.d_rail, GRE: sc.d_river,
                   PUB: np.abs(sc.r - 0.25), RES: -sc.r}[c]
        min(cand, key=lambda b: badness[b.id]).cls = c
    return _class_shares(plan, grid, gsd_m)


def _add_pond(rng, plan, area_needed):
    """Dig a pond (or lake) into green blocks until area_needed (m²) is reached."""
    greens = sorted((b for b in plan.blocks if b.cls == GRE and b.area > 1500
                     and not any(p.block == b.id for p in plan.ponds)),
                    key=lambda b: -b.area)
    if not greens:
        return False
    b = greens[0]
    w, h = b.inner_size
    frac = min(0.55, max(0.2, area_needed / max(b.area, 1.0)))
    ru, rv = w / 2 * 0.92, h / 2 * 0.92
    scale = math.sqrt(frac * w * h / (math.pi * ru * rv))
    scale = min(scale, 1.0)
    ru, rv = ru * scale, rv * scale
    cu = 0.5 * (b.inner[0] + b.inner[2]) + rng.uniform(-0.3, 0.3) * (w / 2 - ru)
    cv = 0.5 * (b.inner[1] + b.inner[3]) + rng.uniform(-0.3, 0.3) * (h / 2 - rv)
    wobble = (float(rng.uniform(0.04, 0.1)), float(rng.uniform(0, 6.3)),
              float(rng.uniform(0.02, 0.06)), float(rng.uniform(0, 6.3)))
    plan.ponds.append(Pond(float(cu), float(cv), float(ru), float(rv), b.id, wobble))
    return True


# --------------------------------------------------------------------------------------------
# 4. styles and street kinds

def _styles(rng, plan, sc):
    stadium_done = False
    pubs = sorted((b for b in plan.blocks if b.cls == PUB), key=lambda b: -b.area)
    for b in plan.blocks:
        w, h = b.inner_size
        r = sc.r[b.id]
        x = rng.random()
        if b.cls == RES:
            if r < 0.2:
                b.style = "perimeter" if x < 0.7 else "slab"
            elif r < 0.36:
                b.style = "slab" if x < 0.35 else ("rowhouse" if x < 0.65 else "perimeter")
            else:
                b.style = "detached" if x < 0.7 else "rowhouse"
        elif b.cls == COM:
            b.style = "core" if (r < 0.18 and x < 0.8) else ("bigbox" if x < 0.55 else "office")
        elif b.cls == IND:
            b.style = "tanks" if (b.area > 20000 and x < 0.4) else "halls"
        elif b.cls == TRA:
            b.style = "railyard" if sc.d_rail[b.id] * plan.size_m < 120 else "parking"
        elif b.cls == GRE:
            has_pond = any(p.block == b.id for p in plan.ponds)
            b.style = "park" if (has_pond or x < 0.6) else ("cemetery" if x < 0.8 else "allotments")
        elif b.cls == AGR:
            b.style = "fields" if x < 0.8 else "fallow"
        elif b.cls == PUB:
            b.style = "school" if x < 0.55 else ("hospital" if x < 0.8 else "civic")
    for b in pubs:
        w, h = b.inner_size
        if not stadium_done and max(w, h) >= 160 and min(w, h) >= 105:
            b.style = "stadium"
            stadium_done = True
            break
    # Make sure the looks that identify a class exist at least once.
    for cls, style in ((PUB, "school"), (COM, "bigbox"), (RES, "detached")):
        blocks = [b for b in plan.blocks if b.cls == cls and b.area > 0 and b.style != "stadium"]
        if blocks and not any(b.style == style for b in blocks):
            max(blocks, key=lambda b: b.area).style = style


def _street_kinds(plan):
    if not plan.streets:
        return
    cells = np.array([b.cell for b in plan.blocks])
    cls = np.array([b.cls for b in plan.blocks])
    for s in plan.streets:
        u0, v0, u1, v1 = s.rect
        if s.axis == "u":
            line = 0.5 * (u0 + u1)
            touch = (np.abs(cells[:, 0] - line) < 0.5) | (np.abs(cells[:, 2] - line) < 0.5)
            overlap = (cells[:, 1] < v1) & (cells[:, 3] > v0)
        else:
            line = 0.5 * (v0 + v1)
            touch = (np.abs(cells[:, 1] - line) < 0.5) | (np.abs(cells[:, 3] - line) < 0.5)
            overlap = (cells[:, 0] < u1) & (cells[:, 2] > u0)
        sides = set(cls[touch & overlap].tolist())
        if sides and sides <= {AGR}:
            s.kind = "track"
        elif sides and sides <= {GRE, AGR}:
            s.kind = "path"
        else:
            s.kind = "street"


# --------------------------------------------------------------------------------------------

def plan_city(seed, size_m=2400.0):
    """Build the city plan for a seed (deterministic)."""
    rng = stream(seed, "layout")
    S = float(size_m)
    shear = ShearField.random(rng, S)
    centre = (S * rng.uniform(0.38, 0.62), S * rng.uniform(0.38, 0.62))
    majors = _major_roads(rng, S)
    river = _river(rng, S)
    railway = _railway(rng, S, centre, river)
    plan = CityPlan(int(seed), S, shear, shear.max_offset + 6.0, centre, majors, river, railway)
    plan.industrial_anchor = _industrial_anchor(rng, plan)
    _subdivide(rng, plan)
    # Quotas are measured on a coarse map grid: fast, and accurate to a fraction of a percent.
    gsd = max(4.0, S / 400.0)
    grid = PlanGrid.covering(S, plan.margin, gsd)
    sc = _zone(rng, plan, grid, gsd)
    for _ in range(4):   # a river alone is thin in a big city: add lakes to parks
        water = _class_shares(plan, grid, gsd)[WAT]
        if water >= 0.045 or not _add_pond(rng, plan, (0.05 - water) * S * S):
            break
    _ensure_shares(rng, plan, grid, gsd, sc)
    free, _, _, _ = _measure(plan, grid, gsd)
    for b, a in zip(plan.blocks, free):
        b.area = float(a)
    _styles(rng, plan, sc)
    _street_kinds(plan)
    return plan


def render_layout(seed=0, size_m=2400.0, gsd_m=5.0):
    """Class codes (uint8, 1..8) of the city on the map grid at gsd_m, north-up.

    Row 0 is the northern edge; the grid is the ground-truth grid of ``generate_sample_city``
    when gsd_m matches (EPSG:32633, west/north edge at the city origin).  The plan is
    rasterised at gsd_m itself, so along block edges a cell may differ from the generated
    ground truth, which samples the fine (VHR-resolution) scene at cell centres.
    """
    plan = plan_city(seed, size_m)
    grid = PlanGrid.covering(plan.size_m, plan.margin, gsd_m)
    return to_map(plan, grid, paint_classes(plan, grid), gsd_m)
