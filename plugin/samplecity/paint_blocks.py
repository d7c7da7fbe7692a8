"""Block interiors: what each function class is built of, one painter per (class, style).

Painters draw into a ``SceneCanvas`` in the plan frame.  They first cover the block's whole
cell (half of the surrounding streets included; streets are painted over it later), then place
buildings, trees, fields... inside the buildable ``inner`` rectangle.  Buildings are skipped
where a network corridor (river, railway, major road) would cut them.
"""
import math

import numpy as np

from . import materials as M
from .layout import AGR, COM, GRE, IND, PUB, RES, TRA
from .noise import WaveNoise


def _tone(rng, lo=0, hi=256):
    return int(rng.integers(lo, hi))


def _rect_ax(along_u, a0, s0, a1, s1):
    """A rectangle given along/across the block's long axis, as (u0, v0, u1, v1)."""
    return (a0, s0, a1, s1) if along_u else (s0, a0, s1, a1)


def _axes(inner):
    u0, v0, u1, v1 = inner
    along_u = (u1 - u0) >= (v1 - v0)
    if along_u:
        return along_u, (u0, u1), (v0, v1)
    return along_u, (v0, v1), (u0, u1)


def _material_at(cv, uu, vv):
    g = cv.grid
    iu = np.clip(((np.asarray(uu) - g.origin) / g.gsd).astype(np.int64), 0, g.n - 1)
    iv = np.clip(((np.asarray(vv) - g.origin) / g.gsd).astype(np.int64), 0, g.n - 1)
    return cv.material[iv, iu], cv.blocked[iv, iu]


def scatter_trees(cv, rect, rng, spacing, keep, radius=(2.5, 5.0), height=(8.0, 16.0),
                  on=(M.GRASS,), conifer_p=0.0, field=None, threshold=0.0):
    """Trees on a jittered grid, kept with probability keep (and where field > threshold)."""
    u0, v0, u1, v1 = rect
    us = np.arange(u0 + spacing / 2, u1, spacing)
    vs = np.arange(v0 + spacing / 2, v1, spacing)
    if len(us) == 0 or len(vs) == 0:
        return
    U, V = np.meshgrid(us, vs)
    U = U + rng.uniform(-0.4, 0.4, U.shape) * spacing
    V = V + rng.uniform(-0.4, 0.4, V.shape) * spacing
    ok = rng.random(U.shape) < keep
    if field is not None:
        ok &= field(U, V) > threshold
    mat, blocked = _material_at(cv, U, V)
    ok &= np.isin(mat, on) & ~blocked
    n = int(ok.sum())
    rad = rng.uniform(*radius, n)
    hgt = rng.uniform(*height, n)
    con = rng.random(n) < conifer_p
    tones = rng.integers(0, 256, n)
    for cu, cvv, r, h, c, t in zip(U[ok], V[ok], rad, hgt, con, tones):
        cv.tree(cu, cvv, r, h, t, conifer=bool(c))


def tree_row(cv, p0, p1, rng, spacing=(7.0, 10.0), radius=(2.5, 4.0), height=(8.0, 14.0)):
    """Trees along a straight line from p0 to p1 (street trees, hedgerows)."""
    length = math.hypot(p1[0] - p0[0], p1[1] - p0[1])
    step = rng.uniform(*spacing)
    if length < step:
        return
    f = np.arange(step / 2, length, step) / length
    n = len(f)
    cu = p0[0] + f * (p1[0] - p0[0]) + rng.normal(0, 0.4, n)
    cvv = p0[1] + f * (p1[1] - p0[1]) + rng.normal(0, 0.4, n)
    rad, hgt, tones = rng.uniform(*radius, n), rng.uniform(*height, n), rng.integers(0, 256, n)
    _, blocked = _material_at(cv, cu, cvv)
    for i in np.flatnonzero(~blocked):
        cv.tree(cu[i], cvv[i], rad[i], hgt[i], int(tones[i]))


def roof_fixtures(cv, rect, rng, height, count):
    """Small plant rooms / HVAC units on a flat roof."""
    u0, v0, u1, v1 = rect
    for _ in range(count):
        w, h = rng.uniform(2.0, 5.0), rng.uniform(2.0, 5.0)
        if u1 - u0 < w + 4 or v1 - v0 < h + 4:
            return
        a = rng.uniform(u0 + 2, u1 - 2 - w)
        b = rng.uniform(v0 + 2, v1 - 2 - h)
        cv.rect((a, b, a + w, b + h), M.ROOF_GREY, height + 2, _tone(rng, 20, 90), 1.15)


def parking_lot(cv, rect, rng, occupancy, along_u=None, edge_trees=True):
    """Asphalt with painted stalls (2.5 m x 5 m, aisles 6 m) and parked cars."""
    u0, v0, u1, v1 = rect
    if u1 - u0 < 8 or v1 - v0 < 8:
        cv.rect(rect, M.ASPHALT, 0, _tone(rng, 60, 200))
        return
    if along_u is None:
        along_u = (u1 - u0) >= (v1 - v0)
    rs, cs, uu, vv = cv.window(rect)
    cv.paint(rs, cs, None, M.ASPHALT, 0, _tone(rng, 60, 200), 1.0)
    a = (uu - u0) if along_u else (vv - v0)     # along the stall rows
    s = (vv - v0) if along_u else (uu - u0)     # across: 16 m modules
    m = np.mod(s, 16.0)
    in_stall = (m < 5.0) | (m >= 11.0)
    g = cv.gsd
    line = in_stall & (np.mod(a, 2.5) < g)
    line = line | (np.abs(m - 5.0) < g / 2) | (np.abs(m - 11.0) < g / 2)
    cv.paint(rs, cs, np.broadcast_to(line, (rs.stop - rs.start, cs.stop - cs.start)),
             M.PAINT, 0, _tone(rng, 100, 200), 0.9)
    # cars, one per occupied stall
    length_a = (u1 - u0) if along_u else (v1 - v0)
    length_s = (v1 - v0) if along_u else (u1 - u0)
    for mod0 in np.arange(0.0, length_s - 4.9, 16.0):
        for row_c in (mod0 + 2.5, mod0 + 13.5):
            if row_c + 2.5 > length_s:
                continue
            slots = np.arange(1.25, length_a - 1.25, 2.5)
            occ = rng.random(len(slots)) < occupancy
            for a_c in slots[occ]:
                cu, cvv = (u0 + a_c, v0 + row_c) if along_u else (u0 + row_c, v0 + a_c)
                cv.vehicle(cu, cvv, not along_u, _tone(rng))
    if edge_trees and rng.random() < 0.6:
        for k in (0, 1):
            lo, hi = (v0, v1) if along_u else (u0, u1)
            s_line = lo + 1.0 if k == 0 else hi - 1.0
            p0 = (u0, s_line) if along_u else (s_line, v0)
            p1 = (u1, s_line) if along_u else (s_line, v1)
            tree_row(cv, p0, p1, rng, spacing=(10, 16), radius=(2.0, 3.5))


def _stripes(cv, rect, material, tone, period, amp, along_u, phase=0.0, height=0):
    """Ground with a row pattern (crop rows, tramlines, mowing stripes)."""
    rs, cs, uu, vv = cv.window(rect)
    coord = vv if along_u else uu   # rows run along the long axis
    rel = 1.0 + amp * np.sin(2 * np.pi * coord / period + phase)
    cv.paint(rs, cs, None, material, height, tone,
             np.broadcast_to(rel, (rs.stop - rs.start, cs.stop - cs.start)))


# ---------------------------------------------------------------------------------------------
# residential

def _double_rows(cv, b, rng, depth, lane_w, lane_material):
    """Split the block's short axis into back-to-back pairs of plot rows, with access lanes
    between pairs; yields (s0, s1, front_low) per row.  Rows face a street or a lane."""
    along_u, (a_lo, a_hi), (s_lo, s_hi) = _axes(b.inner)
    short = s_hi - s_lo
    if short < 1.6 * depth:
        return [(s_lo, s_hi, True)]
    units = max(1, int(round((short + lane_w) / (2 * depth + lane_w))))
    unit = (short - (units - 1) * lane_w) / units
    rows = []
    for k in range(units):
        s0 = s_lo + k * (unit + lane_w)
        rows += [(s0, s0 + unit / 2, True), (s0 + unit / 2, s0 + unit, False)]
        if k < units - 1:
            lane = _rect_ax(along_u, a_lo, s0 + unit, a_hi, s0 + unit + lane_w)
            cv.rect(lane, M.GRASS, 0, _tone(rng, 60, 160))
            core = _rect_ax(along_u, a_lo, s0 + unit + 1.0, a_hi, s0 + unit + lane_w - 1.0)
            cv.rect(core, lane_material, 0, _tone(rng, 60, 200))
    return rows


def residential_detached(cv, b, rng):
    cv.rect(b.cell, M.GRASS, 0, _tone(rng, 80, 180))
    along_u, (a_lo, a_hi), (s_lo, s_hi) = _axes(b.inner)
    long_ = a_hi - a_lo
    rows = _double_rows(cv, b, rng, rng.uniform(24, 32), 6.5, M.ASPHALT)
    n_cols = max(1, int(round(long_ / rng.uniform(15, 22))))
    lw = long_ / n_cols
    red_share = rng.uniform(0.45, 0.9)
    for s0, s1, front_low in rows:
        depth = s1 - s0
        for j in range(n_cols):
            a0, a1 = a_lo + j * lw, a_lo + (j + 1) * lw
            lot = _rect_ax(along_u, a0, s0, a1, s1)
            cv.rect(lot, M.GRASS, 0, _tone(rng, 60, 200))
            if not cv.is_free(lot):
                continue
            hw = min(lw - 3.0, rng.uniform(8, 13))
            hd = min(depth * 0.55, rng.uniform(8, 12))
            if hw < 5:
                continue
            setback = rng.uniform(3, 7)
            ha0 = a0 + rng.uniform(1.2, max(1.3, lw - hw - 1.2))
            hs0 = s0 + setback if front_low else s1 - setback - hd
            # driveway from the street to the house side
            side_room = a1 - (ha0 + hw)
            if side_room > 3.2:
                da0 = ha0 + hw + 0.4
                ds = (s0, hs0 + hd * 0.6) if front_low else (hs0 + hd * 0.4, s1)
                cv.rect(_rect_ax(along_u, da0, ds[0], da0 + 2.6, ds[1]),
                        M.CONCRETE if rng.random() < 0.6 else M.GRAVEL, 0, _tone(rng))
                if rng.random() < 0.5:
                    c0 = ds[0] + 0.5 if front_low else ds[1] - 5.5
                    cv.vehicle(*_centre(_rect_ax(along_u, da0, c0, da0 + 2.6, c0 + 5.0)),
                               along_u=not along_u, tone=_tone(rng))
            roof = M.ROOF_RED if rng.random() < red_share else M.ROOF_GREY
            house = _rect_ax(along_u, ha0, hs0, ha0 + hw, hs0 + hd)
            ridge = along_u if rng.random() < 0.75 else not along_u
            cv.pitched_roof(house, roof, rng.uniform(6, 10), _tone(rng), ridge_along_u=ridge)
            # back garden: trees, sometimes a shed or a vegetable patch
            back = (hs0 + hd + 1.5, s1 - 0.5) if front_low else (s0 + 0.5, hs0 - 1.5)
            if back[1] - back[0] > 4:
                for _ in range(rng.poisson(1.6)):
                    pa = rng.uniform(a0 + 1.5, a1 - 1.5)
                    ps = rng.uniform(back[0], back[1])
                    cu, cvv = (pa, ps) if along_u else (ps, pa)
                    cv.tree(cu, cvv, rng.uniform(1.8, 4.5), rng.uniform(5, 13), _tone(rng),
                            conifer=rng.random() < 0.15)
                if rng.random() < 0.3 and lw > 8:
                    e = back[1] - 3.5 if front_low else back[0] + 0.5
                    cv.rect(_rect_ax(along_u, a0 + 1, e, a0 + 4.5, e + 3),
                            M.ROOF_GREY, 3, _tone(rng, 40, 200))
                elif rng.random() < 0.15 and back[1] - back[0] > 8:
                    pa = a0 + lw * 0.45
                    patch = _rect_ax(along_u, pa, back[0] + 1, min(a1 - 1, pa + 6),
                                     back[0] + 6)
                    _stripes(cv, patch, M.BARE_SOIL, _tone(rng), 1.6, 0.15, along_u)


def _centre(rect):
    return 0.5 * (rect[0] + rect[2]), 0.5 * (rect[1] + rect[3])


def residential_rowhouse(cv, b, rng):
    cv.rect(b.cell, M.GRASS, 0, _tone(rng, 80, 180))
    along_u, (a_lo, a_hi), (s_lo, s_hi) = _axes(b.inner)
    rows = _double_rows(cv, b, rng, rng.uniform(26, 34), 4.0, M.CONCRETE)
    roof_choices = (M.ROOF_RED, M.ROOF_GREY)
    for s0, s1, front_low in rows:
        hd = rng.uniform(9, 11)
        setback = rng.uniform(3, 5.5)
        hs0 = s0 + setback if front_low else s1 - setback - hd
        a = a_lo + rng.uniform(1, 4)
        while a < a_hi - 20:
            units = int(rng.integers(4, 9))
            uw = rng.uniform(5.5, 7.5)
            length = min(units * uw, a_hi - 2 - a)
            units = max(1, int(length / uw))
            length = units * uw
            terrace = _rect_ax(along_u, a, hs0, a + length, hs0 + hd)
            if cv.is_free(terrace):
                base_tone = _tone(rng, 30, 226)
                roof = roof_choices[int(rng.random() < 0.35)]
                cv.pitched_roof(terrace, roof, rng.uniform(8, 11), base_tone, ridge_along_u=along_u)
                for k in range(units):
                    unit = _rect_ax(along_u, a + k * uw, hs0, a + (k + 1) * uw, hs0 + hd)
                    rs, cs, _, _ = cv.window(unit)
                    cv.tone[rs, cs] = np.uint8(np.clip(base_tone + rng.integers(-25, 26), 0, 255))
                    # garden strip behind each unit
                    g0, g1 = (hs0 + hd, s1 - 0.5) if front_low else (s0 + 0.5, hs0)
                    garden = _rect_ax(along_u, a + k * uw + 0.3, g0, a + (k + 1) * uw - 0.3, g1)
                    cv.rect(garden, M.GRASS, 0, _tone(rng, 40, 220))
                    if rng.random() < 0.35:
                        pa, ps = a + (k + 0.5) * uw, rng.uniform(g0 + 2, max(g0 + 2.1, g1 - 2))
                        cv.tree(*((pa, ps) if along_u else (ps, pa)), rng.uniform(1.5, 3.2),
                                rng.uniform(4, 9), _tone(rng))
                if rng.random() < 0.3:   # paved front yards
                    f0, f1 = (s0, hs0) if front_low else (hs0 + hd, s1)
                    cv.rect(_rect_ax(along_u, a, f0, a + length, f1), M.CONCRETE, 0,
                            _tone(rng, 60, 200))
            a += length + rng.uniform(3, 6)


def _perimeter_ring(cv, inner, rng, depth, height, roof_mats, flat, seg_len, gap_p=0.08):
    """Buildings along the block edge (European perimeter block), one segment per house."""
    u0, v0, u1, v1 = inner
    strips = [((u0, v0, u1, v0 + depth), True), ((u0, v1 - depth, u1, v1), True),
              ((u0, v0 + depth, u0 + depth, v1 - depth), False),
              ((u1 - depth, v0 + depth, u1, v1 - depth), False)]
    for (a0, b0, a1, b1), along_u in strips:
        lo, hi = (a0, a1) if along_u else (b0, b1)
        p = lo
        while p < hi - 4:
            L = min(rng.uniform(*seg_len), hi - p)
            if hi - (p + L) < 6:
                L = hi - p
            seg = (p, b0, p + L, b1) if along_u else (a0, p, a1, p + L)
            if rng.random() > gap_p and cv.is_free(seg):
                h = height[0] + rng.random() * (height[1] - height[0])
                mat = roof_mats[int(rng.integers(0, len(roof_mats)))]
                if flat:
                    cv.flat_roof(seg, mat, h, _tone(rng))
                    roof_fixtures(cv, seg, rng, h, int(rng.integers(0, 3)))
                else:
                    cv.pitched_roof(seg, mat, h, _tone(rng), ridge_along_u=along_u)
            p += L


def residential_perimeter(cv, b, rng):
    cv.rect(b.cell, M.CONCRETE, 0, _tone(rng, 80, 180))
    u0, v0, u1, v1 = b.inner
    cv.rect(b.inner, M.GRASS, 0, _tone(rng, 60, 200))
    depth = rng.uniform(12, 15)
    red_rich = rng.random() < 0.6
    mats = (M.ROOF_RED, M.ROOF_RED, M.ROOF_GREY) if red_rich else (M.ROOF_GREY, M.ROOF_RED)
    if min(u1 - u0, v1 - v0) < 2 * depth + 8:
        depth = max(8.0, (min(u1 - u0, v1 - v0) - 8) / 2)
    _perimeter_ring(cv, b.inner, rng, depth, (14, 22), mats, False, (12, 28))
    court = (u0 + depth + 1, v0 + depth + 1, u1 - depth - 1, v1 - depth - 1)
    if court[2] - court[0] > 6 and court[3] - court[1] > 6:
        if rng.random() < 0.5:   # a paved yard along one side of the courtyard
            cu0, cv0, cu1, cv1 = court
            k = rng.uniform(0.15, 0.3)
            yard = (cu0, cv0, cu1, cv0 + k * (cv1 - cv0)) if rng.random() < 0.5 else \
                (cu0, cv0, cu0 + k * (cu1 - cu0), cv1)
            cv.rect(yard, M.CONCRETE, 0, _tone(rng, 100, 220))
        scatter_trees(cv, court, rng, 9.0, 0.45, radius=(2.5, 5.5), height=(8, 16))
        for _ in range(int(rng.integers(0, 3))):
            w, h = rng.uniform(4, 10), rng.uniform(4, 8)
            if court[2] - court[0] > w + 2 and court[3] - court[1] > h + 2:
                a = rng.uniform(court[0], court[2] - w)
                c = rng.uniform(court[1], court[3] - h)
                cv.flat_roof((a, c, a + w, c + h), M.ROOF_GREY, 4, _tone(rng), parapet=False)


def _split_rect(rect, rng):
    u0, v0, u1, v1 = rect
    f = rng.uniform(0.3, 0.6)
    if rng.random() < 0.5:
        return (u0, v0, u0 + f * (u1 - u0), v1)
    return (u0, v0, u1, v0 + f * (v1 - v0))


def residential_slab(cv, b, rng):
    """Prefab slab estate: long flat-roofed blocks, lawns, paths, parking."""
    cv.rect(b.cell, M.GRASS, 0, _tone(rng, 80, 200))
    along_u, (a_lo, a_hi), (s_lo, s_hi) = _axes(b.inner)
    long_, short = a_hi - a_lo, s_hi - s_lo
    pitch = rng.uniform(36, 50)
    n = max(1, int((short - 6) / pitch))
    s_start = s_lo + (short - n * pitch) / 2
    roof = M.ROOF_WHITE if rng.random() < 0.4 else M.ROOF_GREY
    for i in range(n):
        s0 = s_start + i * pitch + 4
        L = min(long_ - 12, rng.uniform(50, 110))
        if L < 25:
            continue
        pieces = 2 if long_ > 2 * L + 24 else 1
        gap = (long_ - pieces * L) / (pieces + 1)
        for k in range(pieces):
            a0 = a_lo + gap + k * (L + gap)
            slab = _rect_ax(along_u, a0, s0, a0 + L, s0 + 12)
            if not cv.is_free(slab):
                continue
            h = rng.uniform(15, 36)
            cv.flat_roof(slab, roof, h, _tone(rng))
            for stair in np.arange(a0 + 8, a0 + L - 4, rng.uniform(14, 20)):
                cv.rect(_rect_ax(along_u, stair, s0 + 4, stair + 3, s0 + 8), M.ROOF_GREY,
                        h + 2, _tone(rng, 20, 80), 1.1)
            # parking strip and path on the entrance side
            ps0 = s0 + 12 + 3
            if ps0 + 14 < s_start + (i + 1) * pitch + 4 or i == n - 1:
                lot = _rect_ax(along_u, a0, ps0, a0 + L, min(ps0 + 11, s_hi))
                if cv.is_free(lot) and rng.random() < 0.7:
                    parking_lot(cv, lot, rng, rng.uniform(0.4, 0.8), along_u=along_u,
                                edge_trees=False)
            cv.rect(_rect_ax(along_u, a0, s0 + 12.3, a0 + L, s0 + 14.3), M.CONCRETE, 0,
                    _tone(rng))
    scatter_trees(cv, b.inner, rng, 11.0, 0.35, radius=(2.5, 5.0), height=(8, 18))


# ---------------------------------------------------------------------------------------------
# commercial

def commercial_core(cv, b, rng):
    cv.rect(b.cell, M.CONCRETE, 0, _tone(rng, 100, 220))
    u0, v0, u1, v1 = b.inner
    depth = min(rng.uniform(16, 22), (min(u1 - u0, v1 - v0) - 6) / 2)
    mats = (M.ROOF_GREY, M.ROOF_GREY, M.ROOF_WHITE, M.ROOF_METAL)
    court = (u0 + depth, v0 + depth, u1 - depth, v1 - depth)
    if court[2] - court[0] > 4 and court[3] - court[1] > 4:
        cv.rect(court, M.CONCRETE, 0, _tone(rng, 60, 160))
        for _ in range(int(rng.integers(1, 4))):
            r = _split_rect(court, rng)
            if cv.is_free(r):
                cv.flat_roof(r, M.ROOF_GREY, rng.uniform(5, 8), _tone(rng, 30, 160))
    _perimeter_ring(cv, b.inner, rng, max(8.0, depth), (18, 32), mats, True, (18, 40), 0.03)
    if rng.random() < 0.35:   # a tower at a corner
        s = rng.uniform(20, 30)
        cu = u0 if rng.random() < 0.5 else u1 - s
        cvv = v0 if rng.random() < 0.5 else v1 - s
        tower = (cu, cvv, cu + s, cvv + s)
        if cv.is_free(tower):
            h = rng.uniform(45, 85)
            cv.flat_roof(tower, M.ROOF_WHITE if rng.random() < 0.5 else M.ROOF_GREY, h,
                         _tone(rng))
            roof_fixtures(cv, tower, rng, h, 3)


def commercial_bigbox(cv, b, rng):
    cv.rect(b.cell, M.ASPHALT, 0, _tone(rng, 60, 200))
    along_u, (a_lo, a_hi), (s_lo, s_hi) = _axes(b.inner)
    long_, short = a_hi - a_lo, s_hi - s_lo
    depth = short * rng.uniform(0.45, 0.6)
    blen = long_ * rng.uniform(0.6, 0.9)
    a0 = a_lo + rng.uniform(0, long_ - blen)
    back_low = rng.random() < 0.5
    bs0 = s_lo + 3 if back_low else s_hi - 3 - depth
    hall = _rect_ax(along_u, a0, bs0, a0 + blen, bs0 + depth)
    lot = _rect_ax(along_u, a_lo + 2, bs0 + depth + 4 if back_low else s_lo + 2, a_hi - 2,
                   s_hi - 2 if back_low else bs0 - 4)
    parking_lot(cv, lot, rng, rng.uniform(0.35, 0.8), along_u=along_u)
    if cv.is_free(hall, 0):
        h = rng.uniform(8, 14)
        cv.flat_roof(hall, M.ROOF_WHITE if rng.random() < 0.6 else M.ROOF_GREY, h, _tone(rng))
        u0, v0, u1, v1 = hall
        # rows of HVAC units / skylights
        for p in np.arange(u0 + 6, u1 - 6, rng.uniform(10, 16)):
            for q in np.arange(v0 + 6, v1 - 6, rng.uniform(12, 18)):
                cv.rect((p, q, p + 2.5, q + 2.5), M.ROOF_GREY, h + 1, _tone(rng, 40, 120), 1.1)
    else:
        parking_lot(cv, hall, rng, 0.5, along_u=along_u)


def commercial_office(cv, b, rng):
    """Office park: mid- and high-rise blocks on a plaza, lawns with trees, a car park."""
    cv.rect(b.cell, M.CONCRETE, 0, _tone(rng, 120, 230))
    u0, v0, u1, v1 = b.inner
    W, H = u1 - u0, v1 - v0
    lot = None
    if H > 70 and rng.random() < 0.6:
        lot = (u0 + 2, v1 - 20, u1 - 2, v1 - 2)
        v1 -= 24
    # lawns between the buildings
    for _ in range(int(rng.integers(1, 3))):
        cv.rect(_split_rect((u0 + 3, v0 + 3, u1 - 3, v1 - 3), rng), M.GRASS, 0, _tone(rng))
    nu = max(1, int(W // 55))
    nv = max(1, int(H // 55)) if lot is None else max(1, int((v1 - v0) // 55))
    cw, ch = W / nu, (v1 - v0) / nv
    for i in range(nu):
        for j in range(nv):
            if rng.random() < 0.15:
                continue
            w = cw * rng.uniform(0.5, 0.8)
            h = ch * rng.uniform(0.5, 0.8)
            a = u0 + i * cw + rng.uniform(3, max(3.1, cw - w - 3))
            c = v0 + j * ch + rng.uniform(3, max(3.1, ch - h - 3))
            r = (a, c, a + w, c + h)
            if w > 12 and h > 12 and cv.is_free(r):
                hh = rng.uniform(20, 40) if rng.random() < 0.7 else rng.uniform(45, 80)
                cv.flat_roof(r, M.ROOF_WHITE if rng.random() < 0.4 else M.ROOF_GREY, hh,
                             _tone(rng))
                roof_fixtures(cv, r, rng, hh, int(rng.integers(1, 4)))
    scatter_trees(cv, (u0, v0, u1, v1), rng, 12.0, 0.35, radius=(2.5, 4.5), height=(8, 14),
                  on=(M.CONCRETE, M.GRASS))
    if lot is not None and cv.is_free(lot):
        parking_lot(cv, lot, rng, 0.65, along_u=True)


# ---------------------------------------------------------------------------------------------
# industrial

def _yard(cv, rect, rng):
    cv.rect(rect, M.CONCRETE, 0, _tone(rng, 40, 200))
    u0, v0, u1, v1 = rect
    for _ in range(int(rng.integers(1, 4))):
        r = _split_rect(rect, rng)
        mat = (M.GRAVEL, M.BARE_SOIL, M.ASPHALT)[int(rng.integers(0, 3))]
        cv.rect(r, mat, 0, _tone(rng))


def _hall(cv, rect, rng):
    h = rng.uniform(8, 16)
    mat = (M.ROOF_METAL, M.ROOF_METAL, M.ROOF_GREY, M.ROOF_WHITE)[int(rng.integers(0, 4))]
    cv.flat_roof(rect, mat, h, _tone(rng))
    u0, v0, u1, v1 = rect
    along_u = (u1 - u0) < (v1 - v0)   # skylight bands across the long side
    rs, cs, uu, vv = cv.window(rect)
    coord = uu if along_u else vv
    period = rng.uniform(6, 10)
    band = np.mod(coord - (u0 if along_u else v0), period) < 1.6
    band = np.broadcast_to(band, (rs.stop - rs.start, cs.stop - cs.start)).copy()
    band[:2, :] = band[-2:, :] = False
    band[:, :2] = band[:, -2:] = False
    cv.relief[rs, cs][band] = 150


def industrial_halls(cv, b, rng):
    _yard(cv, b.cell, rng)
    u0, v0, u1, v1 = b.inner
    W, H = u1 - u0, v1 - v0
    nu = 2 if W > 110 else 1
    nv = 2 if H > 110 else 1
    for i in range(nu):
        for j in range(nv):
            cu0, cu1 = u0 + i * W / nu, u0 + (i + 1) * W / nu
            cv0, cv1 = v0 + j * H / nv, v0 + (j + 1) * H / nv
            if rng.random() < 0.12 and (nu * nv) > 1:
                _truck_park(cv, (cu0 + 4, cv0 + 4, cu1 - 4, cv1 - 4), rng)
                continue
            fw, fh = rng.uniform(0.55, 0.85), rng.uniform(0.55, 0.85)
            w, h = (cu1 - cu0) * fw, (cv1 - cv0) * fh
            a = cu0 + rng.uniform(3, max(3.1, cu1 - cu0 - w - 3))
            c = cv0 + rng.uniform(3, max(3.1, cv1 - cv0 - h - 3))
            hall = (a, c, a + w, c + h)
            if w > 15 and h > 15 and cv.is_free(hall):
                _hall(cv, hall, rng)
            # stockpiles and containers in the yard
            for _ in range(int(rng.integers(0, 3))):
                pu, pv = rng.uniform(cu0 + 6, cu1 - 6), rng.uniform(cv0 + 6, cv1 - 6)
                mat, _ = _material_at(cv, pu, pv)
                if mat in (M.CONCRETE, M.GRAVEL, M.BARE_SOIL, M.ASPHALT):
                    r = rng.uniform(3, 7)
                    cv.dome(pu, pv, r, r * 0.6, _tone(rng),
                            M.GRAVEL if rng.random() < 0.5 else M.BARE_SOIL)
            if rng.random() < 0.5:
                _containers(cv, (cu0 + 3, cv0 + 3, cu1 - 3, cv1 - 3), rng)


def _truck_park(cv, rect, rng):
    u0, v0, u1, v1 = rect
    cv.rect(rect, M.ASPHALT, 0, _tone(rng))
    for c in np.arange(v0 + 3, v1 - 3, 5.0):
        for a in np.arange(u0 + 2, u1 - 17, 18.0):
            if rng.random() < 0.4:
                cv.rect((a, c - 1.25, a + 16, c + 1.25), M.VEHICLE, 4, _tone(rng, 0, 96), 1.0)


def _containers(cv, rect, rng):
    u0, v0, u1, v1 = rect
    if u1 - u0 < 20 or v1 - v0 < 10:
        return
    a = rng.uniform(u0, u1 - 13)
    c = rng.uniform(v0, v1 - 8)
    for k in range(int(rng.integers(2, 6))):
        cc = c + k * 2.6
        if cc + 2.5 > v1:
            break
        r = (a, cc, a + 12.2, cc + 2.4)
        mat, _ = _material_at(cv, a + 6, cc + 1.2)
        if mat in (M.CONCRETE, M.GRAVEL, M.ASPHALT, M.BARE_SOIL):
            cv.rect(r, M.VEHICLE, 5, _tone(rng, 128, 256), 1.0)


def industrial_tanks(cv, b, rng):
    cv.rect(b.cell, M.GRAVEL, 0, _tone(rng, 80, 200))
    u0, v0, u1, v1 = b.inner
    W, H = u1 - u0, v1 - v0
    r = rng.uniform(7, 13)
    pitch = 2 * r + rng.uniform(6, 10)
    # tanks fill one part, a hall and a yard the rest
    frac = rng.uniform(0.55, 0.8)
    if W >= H:
        zone, rest = (u0, v0, u0 + W * frac, v1), (u0 + W * frac + 4, v0, u1, v1)
    else:
        zone, rest = (u0, v0, u1, v0 + H * frac), (u0, v0 + H * frac + 4, u1, v1)
    zu0, zv0, zu1, zv1 = zone
    cv.rect((zu0 + 1, zv0 + 1, zu1 - 1, zv1 - 1), M.CONCRETE, 0, _tone(rng, 100, 200))
    cv.rect((zu0 + 2.5, zv0 + 2.5, zu1 - 2.5, zv1 - 2.5), M.GRAVEL, 0, _tone(rng, 60, 180))
    for cu in np.arange(zu0 + pitch / 2, zu1 - r, pitch):
        for cvv in np.arange(zv0 + pitch / 2, zv1 - r, pitch):
            rr = r * rng.uniform(0.75, 1.0)
            if not cv.is_free((cu - rr, cvv - rr, cu + rr, cvv + rr)):
                continue
            h = rng.uniform(10, 20)
            rs, cs, uu, vv = cv.window((cu - rr, cvv - rr, cu + rr, cvv + rr))
            du, dv = (uu - cu) / rr, (vv - cvv) / rr
            d2 = du * du + dv * dv
            mask = d2 < 1.0
            lit = 1.0 + 0.12 * (du + dv) * 0.7071 * np.sqrt(np.clip(d2, 0, 1))
            lit = np.where(d2 > 0.82, 0.85, lit)    # rim
            cv.paint(rs, cs, mask, M.TANK, h, _tone(rng, 100, 256), lit)
    ru0, rv0, ru1, rv1 = rest
    if ru1 - ru0 > 20 and rv1 - rv0 > 20:
        _yard(cv, rest, rng)
        hall = (ru0 + 3, rv0 + 3, ru0 + 3 + (ru1 - ru0) * 0.6, rv0 + 3 + (rv1 - rv0) * 0.6)
        if cv.is_free(hall):
            _hall(cv, hall, rng)


# ---------------------------------------------------------------------------------------------
# transportation blocks

def transport_railyard(cv, b, rng, railway):
    cv.rect(b.cell, M.GRAVEL, 0, _tone(rng, 40, 140))
    rs, cs, uu, vv = cv.window(b.inner)
    d = railway.signed_distance(uu, vv)
    t = railway.along(uu, vv)
    pitch = 4.6
    k = np.floor(d / pitch)
    x = d - (k + 0.5) * pitch            # across position relative to this track's centre
    ballast = np.abs(x) < 1.5
    g = cv.gsd
    rail = (np.abs(np.abs(x) - 0.72) < g * 0.5)
    shape = (rs.stop - rs.start, cs.stop - cs.start)
    cv.paint(rs, cs, ballast, M.GRAVEL, 0, 200, 1.0)
    # wagons on some tracks: trains of 14 m cars with 1.5 m gaps
    kk = k.astype(np.int64)
    track_rand = (kk * 2654435761 + b.id * 97) % 1000 / 1000.0
    occupied = track_rand < 0.45
    wagon = occupied & (np.mod(t + track_rand * 100, 15.5) < 14.0) & (np.abs(x) < 1.45)
    wagon &= np.abs(np.mod(t + track_rand * 100, 400.0) - 200) < 120   # trains, not full tracks
    cv.paint(rs, cs, np.broadcast_to(rail & ~wagon, shape), M.RAIL, 0, 128, 1.0)
    wtone = ((track_rand * 7919) % 1.0 * 255).astype(np.uint8)
    cv.paint(rs, cs, np.broadcast_to(wagon, shape), M.ROOF_METAL, 4,
             np.broadcast_to(wtone, shape), 1.0)
    u0, v0, u1, v1 = b.inner
    if rng.random() < 0.6:
        w = min(u1 - u0, v1 - v0)
        hall = (u0 + 2, v0 + 2, u0 + 2 + min(60, (u1 - u0) * 0.5), v0 + 2 + min(22, w * 0.3))
        if cv.is_free(hall):
            _hall(cv, hall, rng)


def transport_parking(cv, b, rng):
    cv.rect(b.cell, M.ASPHALT, 0, _tone(rng, 60, 200))
    u0, v0, u1, v1 = b.inner
    W, H = u1 - u0, v1 - v0
    if rng.random() < 0.5 and W > 60 and H > 50:   # bus depot: hall + buses
        hall = (u0 + 3, v0 + 3, u0 + W * 0.45, v1 - 3)
        if cv.is_free(hall):
            cv.flat_roof(hall, M.ROOF_GREY, rng.uniform(8, 11), _tone(rng))
        for a in np.arange(u0 + W * 0.5, u1 - 4, 4.5):
            for c in np.arange(v0 + 4, v1 - 14, 15.0):
                if rng.random() < 0.6:
                    cv.rect((a, c, a + 2.55, c + 12), M.VEHICLE, 3, _tone(rng, 0, 40), 1.0)
    else:
        parking_lot(cv, b.inner, rng, rng.uniform(0.4, 0.9))


# ---------------------------------------------------------------------------------------------
# public services

def _sports_field(cv, rect, rng, with_track):
    """A football pitch with white lines, optionally inside a red running track."""
    u0, v0, u1, v1 = rect
    along_u = (u1 - u0) >= (v1 - v0)
    cu, cvv = _centre(rect)
    long_, short = ((u1 - u0), (v1 - v0)) if along_u else ((v1 - v0), (u1 - u0))
    if with_track:
        radius = min(short / 2 - 1, 37.0)
        half_len = min(long_ / 2 - radius - 1, 42.0)
        if radius < 20 or half_len < 10:
            with_track = False
    if with_track:
        dist = cv.stadium_shape(cu, cvv, half_len, radius, along_u)
        rs, cs, uu, vv = cv.window(rect)
        d = dist(uu, vv)
        lanes = 7.3
        track = (d < radius) & (d >= radius - lanes)
        cv.paint(rs, cs, track, M.TRACK, 0, _tone(rng, 80, 180), 1.0)
        lane_line = track & (np.mod(radius - d, 1.22) < cv.gsd * 0.45)
        cv.paint(rs, cs, lane_line, M.PAINT, 0, 128, 0.85)
        inner_r = radius - lanes
        field = d < inner_r
        cv.paint(rs, cs, field, M.SPORTS_TURF, 0, _tone(rng, 80, 180), 1.0)
        fl, fs = min(half_len + inner_r - 6, 52.0), min(inner_r - 2, 34.0)
    else:
        fl, fs = min(long_ / 2 - 3, 50.0), min(short / 2 - 3, 32.0)
        if fl < 10 or fs < 8:
            return
    pitch = _rect_ax(along_u, -fl, -fs, fl, fs)
    pitch = (pitch[0] + cu, pitch[1] + cvv, pitch[2] + cu, pitch[3] + cvv)
    rs, cs, uu, vv = cv.window(pitch)
    a = (uu - cu) if along_u else (vv - cvv)
    mow = 1.0 + 0.07 * np.sign(np.sin(np.pi * a / 5.0))
    shape = (rs.stop - rs.start, cs.stop - cs.start)
    cv.paint(rs, cs, None, M.SPORTS_TURF, 0, _tone(rng, 80, 180), np.broadcast_to(mow, shape))
    g = cv.gsd
    s = (vv - cvv) if along_u else (uu - cu)
    line = (np.abs(np.abs(a) - (fl - g)) < g / 2) & (np.abs(s) < fs)
    line |= (np.abs(np.abs(s) - (fs - g)) < g / 2) & (np.abs(a) < fl)
    line |= np.abs(a) < g / 2
    line |= np.abs(np.hypot(a, s) - 9.15) < g / 2
    cv.paint(rs, cs, np.broadcast_to(line, shape), M.PAINT, 0, 128, 1.0)


def public_school(cv, b, rng):
    cv.rect(b.cell, M.GRASS, 0, _tone(rng, 80, 180))
    along_u, (a_lo, a_hi), (s_lo, s_hi) = _axes(b.inner)
    long_, short = a_hi - a_lo, s_hi - s_lo
    split = a_lo + long_ * rng.uniform(0.4, 0.55)
    field_first = rng.random() < 0.5
    fa = (a_lo, split) if field_first else (split, a_hi)
    ba = (split, a_hi) if field_first else (a_lo, split)
    fr = _rect_ax(along_u, fa[0] + 2, s_lo + 2, fa[1] - 2, s_hi - 2)
    if cv.is_free(fr):
        cv.rect(fr, M.GRASS, 0, _tone(rng, 100, 200))
        _sports_field(cv, fr, rng, with_track=short > 70 and rng.random() < 0.8)
    yard = _rect_ax(along_u, ba[0] + 2, s_lo + 2, ba[1] - 2, s_hi - 2)
    cv.rect(yard, M.ASPHALT if rng.random() < 0.5 else M.CONCRETE, 0, _tone(rng))
    # L-shaped school building
    bw = (ba[1] - ba[0]) - 10
    d = rng.uniform(12, 16)
    x = rng.random()
    roof = M.ROOF_RED if x < 0.4 else (M.ROOF_GREY if x < 0.76 else M.ROOF_WHITE)
    h = rng.uniform(10, 16)
    tone = _tone(rng)
    wing1 = _rect_ax(along_u, ba[0] + 5, s_lo + 5, ba[0] + 5 + bw, s_lo + 5 + d)
    wing2 = _rect_ax(along_u, ba[0] + 5, s_lo + 5, ba[0] + 5 + d, s_hi - 5 - short * 0.25)
    for w in (wing1, wing2):
        if cv.is_free(w) and w[2] > w[0] + 5 and w[3] > w[1] + 5:
            if roof == M.ROOF_RED:
                cv.pitched_roof(w, roof, h, tone)
            else:
                cv.flat_roof(w, roof, h, tone)
    scatter_trees(cv, b.inner, rng, 10.0, 0.25, on=(M.GRASS, M.ASPHALT, M.CONCRETE),
                  height=(8, 16))


def public_stadium(cv, b, rng):
    """Athletics stadium: track and pitch, stands around, a paved apron, car parks at the ends."""
    cv.rect(b.cell, M.GRASS, 0, _tone(rng, 80, 180))
    along_u, (a_lo, a_hi), (s_lo, s_hi) = _axes(b.inner)
    long_, short = a_hi - a_lo, s_hi - s_lo
    stand = rng.uniform(14, 20)
    room = 3.0 + stand + 6.0          # gap, stands, apron around the track
    radius = min(short / 2 - room, 37.0)
    half_len = min(long_ / 2 - radius - room, 42.0)
    if radius < 22 or half_len < 5:
        public_school(cv, b, rng)
        return
    cu, cvv = _centre(b.inner)
    dist = cv.stadium_shape(cu, cvv, half_len, radius, along_u)
    rs, cs, uu, vv = cv.window(b.inner)
    d = dist(uu, vv)
    cv.paint(rs, cs, d < radius + room, M.CONCRETE, 0, _tone(rng, 120, 220), 1.0)
    ring = (d >= radius + 3) & (d < radius + 3 + stand)
    cv.paint(rs, cs, ring, M.CONCRETE, 14, _tone(rng, 40, 140), 1.0)
    core = _rect_ax(along_u, -(half_len + radius + 0.5), -(radius + 0.5), half_len + radius + 0.5,
                    radius + 0.5)
    _sports_field(cv, (core[0] + cu, core[1] + cvv, core[2] + cu, core[3] + cvv), rng, True)
    end = long_ / 2 - (half_len + radius + room) - 3
    mid = 0.5 * (a_lo + a_hi)
    if end > 14:
        for a0 in (a_lo + 1, mid + half_len + radius + room + 2):
            lot = _rect_ax(along_u, a0, s_lo + 4, a0 + end, s_hi - 4)
            parking_lot(cv, lot, rng, rng.uniform(0.2, 0.5), along_u=not along_u, edge_trees=False)
    scatter_trees(cv, b.cell, rng, 12.0, 0.4, height=(8, 15))


def public_hospital(cv, b, rng):
    cv.rect(b.cell, M.GRASS, 0, _tone(rng, 100, 200))
    along_u, (a_lo, a_hi), (s_lo, s_hi) = _axes(b.inner)
    short = s_hi - s_lo
    h = rng.uniform(14, 26)
    tone = _tone(rng, 150, 256)
    main = _rect_ax(along_u, a_lo + 8, s_lo + short * 0.35, a_hi - 8, s_lo + short * 0.35 + 16)
    if cv.is_free(main):
        cv.flat_roof(main, M.ROOF_WHITE, h, tone)
        roof_fixtures(cv, main, rng, h, 4)
    for p in np.arange(a_lo + 14, a_hi - 20, rng.uniform(30, 45)):
        wing = _rect_ax(along_u, p, s_lo + 8, p + 14, s_hi - short * 0.2)
        if cv.is_free(wing):
            cv.flat_roof(wing, M.ROOF_WHITE, h * rng.uniform(0.6, 1.0), tone)
    lot = _rect_ax(along_u, a_lo + 3, s_hi - short * 0.18, a_hi - 3, s_hi - 3)
    if cv.is_free(lot):
        parking_lot(cv, lot, rng, 0.7, along_u=along_u)
    scatter_trees(cv, b.inner, rng, 9.0, 0.45, height=(8, 18))


def public_civic(cv, b, rng):
    cv.rect(b.cell, M.CONCRETE, 0, _tone(rng, 120, 230))
    u0, v0, u1, v1 = b.inner
    cu, cvv = _centre(b.inner)
    W, H = u1 - u0, v1 - v0
    bw, bh = min(W * 0.5, rng.uniform(40, 70)), min(H * 0.5, rng.uniform(30, 50))
    bld = (cu - bw / 2, v0 + 6, cu + bw / 2, v0 + 6 + bh)
    if cv.is_free(bld):
        d = min(12.0, bh / 3)
        roof = M.ROOF_RED if rng.random() < 0.6 else M.ROOF_GREY
        _perimeter_ring(cv, bld, rng, d, (14, 18), (roof,), False, (200, 300), gap_p=0.0)
        court = (bld[0] + d, bld[1] + d, bld[2] - d, bld[3] - d)
        if court[2] > court[0] and court[3] > court[1]:
            cv.rect(court, M.GRASS, 0, _tone(rng))
    # square with a fountain and tree rows
    fc = (cu, 0.5 * (v0 + 6 + bh + v1))
    if fc[1] + 6 < v1:
        cv.disc(fc[0], fc[1], 6.0, M.CONCRETE, 0, 230)
        cv.disc(fc[0], fc[1], 4.5, M.WATER, 0, 160)
    tree_row(cv, (u0 + 3, v0 + 6 + bh + 4), (u0 + 3, v1 - 3), rng)
    tree_row(cv, (u1 - 3, v0 + 6 + bh + 4), (u1 - 3, v1 - 3), rng)
    scatter_trees(cv, b.inner, rng, 16.0, 0.25, on=(M.CONCRETE,), height=(8, 14))


# ---------------------------------------------------------------------------------------------
# green space

def _winding_path(cv, rect, rng, width=3.0, material=M.GRAVEL):
    u0, v0, u1, v1 = rect
    rs, cs, uu, vv = cv.window(rect)
    horizontal = rng.random() < 0.5
    amp = rng.uniform(5, 20)
    k = 2 * np.pi / rng.uniform(60, 140)
    ph = rng.uniform(0, 6.3)
    if horizontal:
        c = v0 + (v1 - v0) * rng.uniform(0.25, 0.75)
        mask = np.abs(vv - (c + amp * np.sin(k * uu + ph))) < width / 2
    else:
        c = u0 + (u1 - u0) * rng.uniform(0.25, 0.75)
        mask = np.abs(uu - (c + amp * np.sin(k * vv + ph))) < width / 2
    cv.paint(rs, cs, mask, material, 0, _tone(rng, 120, 220), 1.0)


def green_park(cv, b, rng):
    cv.rect(b.cell, M.GRASS, 0, _tone(rng, 60, 200))
    for _ in range(int(rng.integers(1, 3))):
        _winding_path(cv, b.inner, rng)
    if rng.random() < 0.3:   # a meadow part (unmown)
        cv.rect(_split_rect(b.inner, rng), M.MEADOW, 0, _tone(rng))
        for _ in range(int(rng.integers(1, 3))):
            _winding_path(cv, b.inner, rng)
    field = WaveNoise(rng, rng.uniform(30, 60))
    scatter_trees(cv, b.inner, rng, 6.5, 0.85, radius=(3.0, 7.0), height=(10, 22),
                  on=(M.GRASS, M.MEADOW), conifer_p=0.15, field=field,
                  threshold=rng.uniform(-0.1, 0.5))
    if rng.random() < 0.4:   # playground
        u0, v0, u1, v1 = b.inner
        if u1 - u0 > 40 and v1 - v0 > 40:
            pu, pv = rng.uniform(u0 + 5, u1 - 25), rng.uniform(v0 + 5, v1 - 20)
            if _material_at(cv, pu + 10, pv + 7)[0] == M.GRASS:
                cv.rect((pu, pv, pu + 20, pv + 15), M.BARE_SOIL, 0, 230)


def green_cemetery(cv, b, rng):
    cv.rect(b.cell, M.GRASS, 0, _tone(rng, 60, 160))
    rs, cs, uu, vv = cv.window(b.inner)
    u0, v0, _, _ = b.inner
    pitch = rng.uniform(22, 30)
    paths = (np.mod(uu - u0, pitch) < 2.5) | (np.mod(vv - v0, pitch) < 2.5)
    graves = (np.mod(uu - u0, 3.0) < 1.0) & (np.mod(vv - v0, 2.6) < 1.6) & ~paths
    shape = (rs.stop - rs.start, cs.stop - cs.start)
    cv.paint(rs, cs, np.broadcast_to(graves, shape), M.CONCRETE, 0, _tone(rng, 120, 240), 1.0)
    cv.paint(rs, cs, np.broadcast_to(paths, shape), M.GRAVEL, 0, _tone(rng, 140, 220), 1.0)
    scatter_trees(cv, b.inner, rng, 7.0, 0.45, radius=(2.0, 4.5), height=(8, 18),
                  on=(M.GRASS, M.CONCRETE), conifer_p=0.4)
    chapel = (u0 + 6, v0 + 6, u0 + 22, v0 + 16)
    if cv.is_free(chapel):
        cv.pitched_roof(chapel, M.ROOF_RED, 12, _tone(rng))


def green_allotments(cv, b, rng):
    cv.rect(b.cell, M.GRASS, 0, _tone(rng, 60, 160))
    u0, v0, u1, v1 = b.inner
    pw, ph = rng.uniform(12, 18), rng.uniform(16, 24)
    for a in np.arange(u0 + 1, u1 - pw + 1, pw + 2.0):
        for c in np.arange(v0 + 1, v1 - ph + 1, ph + 2.0):
            plot = (a, c, a + pw, c + ph)
            cv.rect(plot, M.GRASS, 0, _tone(rng))
            if rng.random() < 0.75:   # vegetable beds
                bed = (a + 1, c + ph * 0.45, a + pw - 1, c + ph - 1)
                _stripes(cv, bed, (M.BARE_SOIL, M.CROP_MAIZE, M.MEADOW)[int(rng.integers(0, 3))],
                         _tone(rng), 1.2, 0.2, True)
            if cv.is_free(plot):
                cv.pitched_roof((a + 1, c + 1, a + 4.5, c + 4), (M.ROOF_RED, M.ROOF_GREY)[
                    int(rng.random() < 0.5)], 3, _tone(rng))
            for _ in range(int(rng.integers(0, 3))):
                cv.tree(rng.uniform(a + 2, a + pw - 2), rng.uniform(c + 5, c + ph - 2),
                        rng.uniform(1.5, 3.0), rng.uniform(3, 6), _tone(rng))
    # paths between plots stay grass/gravel
    rs, cs, uu, vv = cv.window(b.inner)
    lanes = (np.mod(uu - u0 - 1, pw + 2.0) > pw) | (np.mod(vv - v0 - 1, ph + 2.0) > ph)
    cv.paint(rs, cs, np.broadcast_to(lanes, (rs.stop - rs.start, cs.stop - cs.start)),
             M.GRAVEL, 0, _tone(rng, 100, 200), 1.0)


# ---------------------------------------------------------------------------------------------
# agricultural / undeveloped

CROPS = (M.CROP_CEREAL, M.CROP_CEREAL, M.CROP_MAIZE, M.MEADOW, M.BARE_SOIL)


def _fields(cv, rect, rng, depth=0):
    u0, v0, u1, v1 = rect
    W, H = u1 - u0, v1 - v0
    if max(W, H) > rng.uniform(90, 230) and min(W, H) > 30 and depth < 6:
        if W >= H:
            p = u0 + W * rng.uniform(0.3, 0.7)
            a, b = (u0, v0, p - 1, v1), (p + 1, v0, u1, v1)
            edge = ((p, v0), (p, v1))
        else:
            p = v0 + H * rng.uniform(0.3, 0.7)
            a, b = (u0, v0, u1, p - 1), (u0, p + 1, u1, v1)
            edge = ((u0, p), (u1, p))
        _fields(cv, a, rng, depth + 1)
        _fields(cv, b, rng, depth + 1)
        if rng.random() < 0.3:   # hedgerow on the boundary
            tree_row(cv, edge[0], edge[1], rng, spacing=(4, 7), radius=(2, 4), height=(5, 12))
        return
    crop = CROPS[int(rng.integers(0, len(CROPS)))]
    along_u = W >= H if rng.random() < 0.8 else W < H
    period = {M.CROP_CEREAL: 1.6, M.CROP_MAIZE: 2.4, M.MEADOW: 6.0, M.BARE_SOIL: 2.0}[crop]
    amp = {M.CROP_CEREAL: 0.06, M.CROP_MAIZE: 0.12, M.MEADOW: 0.05, M.BARE_SOIL: 0.1}[crop]
    _stripes(cv, rect, crop, _tone(rng), period, amp, along_u, rng.uniform(0, 6.3))
    if crop == M.CROP_CEREAL:   # tramlines every 18-24 m
        rs, cs, uu, vv = cv.window(rect)
        coord = (vv - v0) if along_u else (uu - u0)
        sp = rng.uniform(18, 24)
        m = np.mod(coord, sp)
        tram = (np.abs(m - 1.0) < 0.4) | (np.abs(m - 2.8) < 0.4)
        rel = np.where(tram, 0.8, 1.0)
        shape = (rs.stop - rs.start, cs.stop - cs.start)
        cv.relief[rs, cs] = np.clip(cv.relief[rs, cs] * np.broadcast_to(rel, shape), 0,
                                    255).astype(np.uint8)


def agricultural_fields(cv, b, rng):
    cv.rect(b.cell, M.MEADOW, 0, _tone(rng))
    _fields(cv, b.inner, rng)


def agricultural_fallow(cv, b, rng):
    cv.rect(b.cell, M.MEADOW, 0, _tone(rng))
    noise = WaveNoise(rng, rng.uniform(25, 50))
    rs, cs, uu, vv = cv.window(b.cell)
    n = noise(uu, vv)
    cv.paint(rs, cs, n > 0.9, M.BARE_SOIL, 0, _tone(rng), 1.0)
    cv.paint(rs, cs, (n < -0.6), M.GRASS, 0, _tone(rng, 0, 90), 1.0)
    scatter_trees(cv, b.inner, rng, 7.0, 0.5, radius=(1.5, 3.5), height=(2, 6),
                  on=(M.MEADOW, M.GRASS), field=noise, threshold=-0.2)


def paint_block(cv, b, rng, plan):
    cls, style = b.cls, b.style
    if cls == RES:
        {"detached": residential_detached, "rowhouse": residential_rowhouse,
         "perimeter": residential_perimeter, "slab": residential_slab}[style](cv, b, rng)
    elif cls == COM:
        {"core": commercial_core, "bigbox": commercial_bigbox,
         "office": commercial_office}[style](cv, b, rng)
    elif cls == IND:
        {"halls": industrial_halls, "tanks": industrial_tanks}[style](cv, b, rng)
    elif cls == TRA:
        if style == "railyard":
            transport_railyard(cv, b, rng, plan.railway)
        else:
            transport_parking(cv, b, rng)
    elif cls == PUB:
        {"school": public_school, "stadium": public_stadium, "hospital": public_hospital,
         "civic": public_civic}[style](cv, b, rng)
    elif cls == GRE:
        if style == "park":
            green_park(cv, b, rng)
        elif style == "cemetery":
            green_cemetery(cv, b, rng)
        else:
            green_allotments(cv, b, rng)
    elif cls == AGR:
        (agricultural_fields if style == "fields" else agricultural_fallow)(cv, b, rng)
    else:
        cv.rect(b.cell, M.GRASS, 0, 128)
