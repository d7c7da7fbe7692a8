"""Linear networks painted over the blocks: streets, river and ponds, railway, major roads."""
import numpy as np

from . import materials as M
from .layout import major_rect, major_visible
from .paint_blocks import tree_row

ROW_CHUNK = 512   # canvas rows per pass for full-width features (keeps temporaries small)


def _tone(rng, lo=0, hi=256):
    return int(rng.integers(lo, hi))


def _row_chunks(cv):
    n = cv.grid.n
    uu, vv_all = cv.grid.centres()
    for r0 in range(0, n, ROW_CHUNK):
        r1 = min(n, r0 + ROW_CHUNK)
        yield slice(r0, r1), uu, vv_all[r0:r1]


def _paint_rows(cv, rs, mask, material, height=None, tone=None, relief=None):
    cv.paint(rs, slice(0, cv.grid.n), mask, material, height, tone, relief)


def paint_streets(cv, plan, rng):
    for s in plan.streets:
        u0, v0, u1, v1 = s.rect
        along_v = s.axis == "u"
        # across the street: lo side .. hi side
        lo, hi = (u0, u1) if along_v else (v0, v1)
        a0, a1 = (v0, v1) if along_v else (u0, u1)

        def band(p, q):
            return (p, a0, q, a1) if along_v else (a0, p, a1, q)

        if s.kind == "track":
            cv.rect(s.rect, M.MEADOW, 0, _tone(rng))
            mid = 0.5 * (lo + hi)
            cv.rect(band(mid - 1.8, mid + 1.8), M.GRAVEL if rng.random() < 0.5 else M.BARE_SOIL,
                    0, _tone(rng, 60, 200))
            continue
        if s.kind == "path":
            cv.rect(s.rect, M.GRASS, 0, _tone(rng))
            mid = 0.5 * (lo + hi)
            cv.rect(band(mid - 1.5, mid + 1.5), M.GRAVEL, 0, _tone(rng, 120, 220))
            if rng.random() < 0.5:
                p = lo + 1.0
                tree_row(cv, (p, a0) if along_v else (a0, p), (p, a1) if along_v else (a1, p), rng)
            continue
        walk = float(np.clip(s.width * 0.2, 1.8, 2.8))
        cv.rect(s.rect, M.CONCRETE, 0, _tone(rng, 80, 200))
        cv.rect(band(lo + walk, hi - walk), M.ASPHALT, 0, _tone(rng, 40, 220))
        # parked cars along the kerbs
        for side, kerb in ((0, lo + walk + 1.1), (1, hi - walk - 1.1)):
            if rng.random() < 0.6:
                pos = np.arange(a0 + 4, a1 - 4, 5.6)
                for p in pos[rng.random(len(pos)) < rng.uniform(0.2, 0.7)]:
                    cu, cvv = (kerb, p) if along_v else (p, kerb)
                    cv.vehicle(cu, cvv, along_u=not along_v, tone=_tone(rng))
        if rng.random() < 0.35:   # street trees on the sidewalks
            for p in (lo + walk * 0.5, hi - walk * 0.5):
                tree_row(cv, (p, a0 + 3) if along_v else (a0 + 3, p),
                         (p, a1 - 3) if along_v else (a1 - 3, p), rng, spacing=(9, 13))


def paint_ponds(cv, plan, rng):
    for p in plan.ponds:
        rs, cs, uu, vv = cv.window((p.bbox[0] - 4, p.bbox[1] - 4, p.bbox[2] + 4, p.bbox[3] + 4))
        cv.paint(rs, cs, p.inside(uu, vv, shrink_m=-2.5), M.MEADOW, 0, _tone(rng, 0, 90), 1.0)
        inside = p.inside(uu, vv)
        du = np.abs(uu - p.cu) / p.ru
        dv = np.abs(vv - p.cv) / p.rv
        depth = np.clip(1.0 - np.sqrt(du * du + dv * dv), 0, 1)
        cv.paint(rs, cs, inside, M.WATER, 0, _tone(rng), 1.08 - 0.16 * depth)


def paint_river(cv, plan, rng):
    r = plan.river
    half = r.width / 2
    tone_bank, tone_water = _tone(rng, 60, 200), _tone(rng)
    for rs, uu, vv in _row_chunks(cv):
        d = r.distance(uu, vv)
        bank = d < half + r.bank
        if not bank.any():
            continue
        _paint_rows(cv, rs, bank, M.GRASS, 0, tone_bank, 1.0)
        prom = np.abs(d - (half + r.bank * 0.6)) < 1.5
        _paint_rows(cv, rs, prom, M.GRAVEL, 0, 190, 1.0)
        reeds = (d >= half) & (d < half + 1.6)
        _paint_rows(cv, rs, reeds, M.MEADOW, 0, 40, 1.0)
        water = d < half
        rel = 1.1 - 0.2 * np.clip(1.0 - d / half, 0, 1)   # shallow edges brighter
        _paint_rows(cv, rs, water, M.WATER, 0, tone_water, rel)
    # trees along both banks
    lo, hi = -plan.margin, plan.size_m + plan.margin
    t = np.arange(lo, hi, 9.0)
    for sign in (-1, 1):
        keep = rng.random(len(t)) < 0.55
        off = sign * (half + rng.uniform(3.0, max(3.5, r.bank - 2.0), len(t)))
        c = r.centre(t) + off * np.sqrt(1 + r.slope(t) ** 2)
        for tt, cc in zip(t[keep], c[keep]):
            cu, cvv = (tt, cc) if r.axis == "u" else (cc, tt)
            cv.tree(cu, cvv, rng.uniform(3, 6), rng.uniform(10, 20), _tone(rng))


def paint_railway(cv, plan, rng):
    rw = plan.railway
    half = rw.width / 2
    g = cv.gsd
    train = rng.random() < 0.6
    t0 = rng.uniform(-0.3, 0.3) * plan.size_m
    t_len = rng.uniform(120, 220)
    track_of_train = 2.25 if rng.random() < 0.5 else -2.25
    for rs, uu, vv in _row_chunks(cv):
        d = rw.signed_distance(uu, vv)
        corridor = np.abs(d) < half
        if not corridor.any():
            continue
        was_water = corridor & (cv.material[rs] == M.WATER)
        _paint_rows(cv, rs, corridor, M.GRAVEL, 0, 70, 1.0)
        _paint_rows(cv, rs, corridor & (np.abs(d) > half - 2.5), M.MEADOW, 0, 120, 1.0)
        for tc in (-2.25, 2.25):
            x = d - tc
            _paint_rows(cv, rs, np.abs(x) < 1.5, M.GRAVEL, 0, 190, 1.0)
            _paint_rows(cv, rs, np.abs(np.abs(x) - 0.72) < g * 0.5, M.RAIL, 0, 128, 1.0)
        if train:
            t = rw.along(uu, vv)
            x = d - track_of_train
            car = (np.abs(x) < 1.45) & (t > t0) & (t < t0 + t_len) & (np.mod(t - t0, 26.5) < 25.8)
            _paint_rows(cv, rs, car, M.VEHICLE, 4, 10, 1.0)
        if was_water.any():   # bridge deck: casts a shadow on the water
            cv.height[rs][was_water] = 7


def paint_majors(cv, plan, rng):
    lo, hi = -plan.margin, plan.size_m + plan.margin
    g = cv.gsd
    for m in plan.majors:
        rs, cs, uu, vv = cv.window(major_rect(plan, m))
        visible = major_visible(plan, m, uu, vv)
        across = (uu - m.pos) if m.axis == "u" else (vv - m.pos)     # row vector or column
        along = vv if m.axis == "u" else uu
        shape = (rs.stop - rs.start, cs.stop - cs.start)
        across = np.broadcast_to(across, shape)
        along = np.broadcast_to(along, shape)
        over_water = (cv.material[rs, cs] == M.WATER) & visible
        walk = 3.0
        half = m.width / 2
        median = 3.0 if m.avenue else 0.0
        cv.paint(rs, cs, visible, M.CONCRETE, 0, _tone(rng, 90, 200), 1.0)
        road = (np.abs(across) < half - walk) & visible
        cv.paint(rs, cs, road, M.ASPHALT, 0, _tone(rng, 40, 200), 1.0)
        # no markings inside junctions
        cross = np.zeros(shape, dtype=bool)
        for o in plan.majors:
            if o.axis != m.axis:
                cross |= np.abs(along - o.pos) < o.width / 2 + 2.0
        cw = half - walk - median   # one carriageway
        lanes = max(1, int(round(cw / 3.3)))
        lane_w = cw / lanes
        dash = np.mod(along, 9.0) < 3.0
        marks = np.zeros(shape, dtype=bool)
        for k in range(1, lanes):
            off = median + k * lane_w
            marks |= (np.abs(np.abs(across) - off) < g * 0.5) & dash
        if m.avenue:
            marks |= np.abs(np.abs(across) - median - 0.3) < g * 0.5
        else:
            marks |= np.abs(across) < g * 0.5
        marks |= (np.abs(np.abs(across) - (half - walk - 0.4)) < g * 0.5)   # edge lines
        # zebra crossings just outside junctions
        zebra = np.zeros(shape, dtype=bool)
        for o in plan.majors:
            if o.axis != m.axis:
                dz = np.abs(along - o.pos) - (o.width / 2 + 1.0)
                zebra |= (dz > 0) & (dz < 3.0) & (np.mod(across, 1.0) < 0.5) & road
        marks = ((marks & ~cross) | zebra) & road
        cv.paint(rs, cs, marks, M.PAINT, 0, _tone(rng, 80, 200), 1.0)
        if m.avenue:
            med = (np.abs(across) < median) & visible
            cv.paint(rs, cs, med, M.GRASS, 0, _tone(rng), 1.0)
        if over_water.any():
            cv.height[rs, cs][over_water] = 7
        # traffic
        n_cars = int((hi - lo) / 22.0 * lanes * 2 * rng.uniform(0.2, 0.45))
        lane = rng.integers(0, lanes, n_cars)
        side = np.where(rng.random(n_cars) < 0.5, 1.0, -1.0)
        off = m.pos + side * (median + (lane + 0.5) * lane_w)
        p = rng.uniform(lo, hi, n_cars)
        cu, cvv = (off, p) if m.axis == "u" else (p, off)
        ok = major_visible(plan, m, cu, cvv)
        for a, b_, t in zip(cu[ok], cvv[ok], rng.integers(0, 256, n_cars)[ok]):
            cv.vehicle(a, b_, along_u=m.axis == "v", tone=int(t))
        # trees: median of avenues, sidewalks of some roads
        rows = []
        if m.avenue:
            rows.append(m.pos)
        elif rng.random() < 0.5:
            rows += [m.pos - half + 1.5, m.pos + half - 1.5]
        crossings = [(o.pos, o.width / 2 + 4.0) for o in plan.majors if o.axis != m.axis]
        step = rng.uniform(9, 12)
        t = np.arange(lo + step / 2, hi, step)
        for c, w in crossings:
            t = t[np.abs(t - c) >= w]
        for p in rows:
            cu, cvv = (np.full_like(t, p), t) if m.axis == "u" else (t, np.full_like(t, p))
            ok = major_visible(plan, m, cu, cvv)
            n = len(t)
            jitter = rng.normal(0, 0.3, (2, n))
            radius, height = rng.uniform(2.5, 4.0, n), rng.uniform(9, 15, n)
            tones = rng.integers(0, 256, n)
            for i in np.flatnonzero(ok):
                cv.tree(cu[i] + jitter[0, i], cvv[i] + jitter[1, i], radius[i], height[i],
                        int(tones[i]))
