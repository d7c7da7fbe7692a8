"""The 17 Local Climate Zones (Stewart & Oke 2012) and their mapping to our 8 urban functions.

Codes 1..17 are the So2Sat LCZ42 label order, which is the order of the network's softmax:
softmax index ``i`` is code ``i + 1``; codes 1-10 are the built types LCZ 1-10 and codes 11-17
are the land-cover types LCZ A-G.

Colours are the standard LCZ palette used by WUDAPT and the LCZ Generator (Demuzere et al.),
which follows Stewart & Oke's scheme: reds for compact, oranges for open, yellow for lightweight,
greys for large low-rise / heavy industry, greens for vegetation, black for paved, blue for water.

An LCZ describes urban *form* (building height, density, surface cover), not land *use*, so the
mapping to our functions (:mod:`plugin.core.classes`) is a rule of thumb: each row says why, and
``certain`` is False where the same form commonly hosts several functions.  No LCZ corresponds
to ``public_services`` (schools, hospitals... have no distinct form at 100 m), so an LCZ-derived
function map never contains that class.
"""
from dataclasses import dataclass

import numpy as np

from ..core.classes import CLASS_BY_KEY, FUNCTION_CLASSES


@dataclass(frozen=True)
class LczClass:
    code: int    # output value: So2Sat softmax index + 1
    lcz: str     # "1".."10", "A".."G"
    key: str     # machine name
    label: str   # Stewart & Oke's name
    color: str   # WUDAPT / LCZ Generator palette


LCZ_CLASSES = (
    LczClass(1, "1", "compact_high_rise", "Compact high-rise", "#8c0000"),
    LczClass(2, "2", "compact_mid_rise", "Compact mid-rise", "#d10000"),
    LczClass(3, "3", "compact_low_rise", "Compact low-rise", "#ff0000"),
    LczClass(4, "4", "open_high_rise", "Open high-rise", "#bf4d00"),
    LczClass(5, "5", "open_mid_rise", "Open mid-rise", "#ff6600"),
    LczClass(6, "6", "open_low_rise", "Open low-rise", "#ff9955"),
    LczClass(7, "7", "lightweight_low_rise", "Lightweight low-rise", "#faee05"),
    LczClass(8, "8", "large_low_rise", "Large low-rise", "#bcbcbc"),
    LczClass(9, "9", "sparsely_built", "Sparsely built", "#ffccaa"),
    LczClass(10, "10", "heavy_industry", "Heavy industry", "#555555"),
    LczClass(11, "A", "dense_trees", "Dense trees", "#006a00"),
    LczClass(12, "B", "scattered_trees", "Scattered trees", "#00aa00"),
    LczClass(13, "C", "bush_scrub", "Bush, scrub", "#648525"),
    LczClass(14, "D", "low_plants", "Low plants", "#b9db79"),
    LczClass(15, "E", "bare_rock_or_paved", "Bare rock or paved", "#000000"),
    LczClass(16, "F", "bare_soil_or_sand", "Bare soil or sand", "#fbf7ae"),
    LczClass(17, "G", "water", "Water", "#6a6aff"),
)
LCZ_BY_CODE = {c.code: c for c in LCZ_CLASSES}
LCZ_BY_NAME = {c.lcz: c for c in LCZ_CLASSES}


@dataclass(frozen=True)
class LczFunction:
    lcz: str        # "1".."10", "A".."G"
    function: str   # key in plugin.core.classes
    certain: bool   # False: the same form often hosts other functions (see rationale)
    rationale: str


LCZ_TO_FUNCTION = (
    LczFunction("1", "commercial", False,
                "Dense towers are mostly central business districts (offices, retail, hotels); "
                "in many Asian cities they are also housing."),
    LczFunction("2", "residential", False,
                "Dense 3-9 storey blocks: historic cores and perimeter blocks, mainly flats, "
                "often with shops on the ground floor (mixed use)."),
    LczFunction("3", "residential", True,
                "Dense 1-3 storey buildings: terraced houses, old villages and dense informal "
                "housing."),
    LczFunction("4", "residential", False,
                "Tower blocks in open space: mostly housing estates, sometimes office parks."),
    LczFunction("5", "residential", True,
                "Open 3-9 storey blocks (slab estates, apartment blocks with green between)."),
    LczFunction("6", "residential", True,
                "Detached and semi-detached houses with gardens: suburban housing."),
    LczFunction("7", "residential", True,
                "Dense single-storey lightweight structures: informal settlements."),
    LczFunction("8", "industrial", False,
                "Large flat buildings with paved surroundings: warehouses, logistics, light "
                "industry; retail parks and shopping centres (commercial) look the same."),
    LczFunction("9", "residential", False,
                "Small scattered buildings in a natural setting: low-density housing, villas and "
                "farmsteads; most of the cell is vegetation (could be agricultural)."),
    LczFunction("10", "industrial", True,
                "Heavy industry: plants, refineries, steel works, storage tanks."),
    LczFunction("A", "green_space", True,
                "Dense woodland or forest, including urban forests and large parks."),
    LczFunction("B", "green_space", False,
                "Lightly wooded land: parks, cemeteries, wooded pasture (or orchards, which "
                "are agricultural)."),
    LczFunction("C", "agricultural_undeveloped", True,
                "Bush, scrub and shrubland: undeveloped semi-natural land."),
    LczFunction("D", "agricultural_undeveloped", False,
                "Grass and crops: mostly farmland and grassland; inside cities also lawns, "
                "sports fields and airfields."),
    LczFunction("E", "transportation", False,
                "Paved or rocky with few buildings: airports' aprons, rail yards, large car "
                "parks and motorway junctions; also natural bare rock."),
    LczFunction("F", "agricultural_undeveloped", True,
                "Bare soil or sand: fallow fields, construction sites, beaches and deserts."),
    LczFunction("G", "water", True, "Open water: rivers, lakes, sea, reservoirs."),
)
FUNCTION_BY_LCZ = {m.lcz: m for m in LCZ_TO_FUNCTION}


def lcz_class_table():
    """The LCZ classes in the model-card format, with the mapped function for reference."""
    out = []
    for c in LCZ_CLASSES:
        m = FUNCTION_BY_LCZ[c.lcz]
        out.append({"code": c.code, "name": c.key, "label": f"LCZ {c.lcz} – {c.label}",
                    "color": c.color, "lcz": c.lcz, "function": m.function,
                    "function_code": CLASS_BY_KEY[m.function].code})
    return out


def function_lut():
    """uint8 lookup table: ``lut[lcz_code]`` is the function code (``lut[0]`` = 0, nodata)."""
    lut = np.zeros(len(LCZ_CLASSES) + 1, np.uint8)
    for c in LCZ_CLASSES:
        lut[c.code] = CLASS_BY_KEY[FUNCTION_BY_LCZ[c.lcz].function].code
    return lut


def function_probabilities(lcz_probs, axis=-1):
    """Function probabilities from LCZ probabilities (17 along ``axis``, So2Sat order): the sum
    of the LCZ probabilities mapped to each of the 8 functions (8 along ``axis``, code order).
    Taking the argmax of this is better than mapping the LCZ argmax: two built LCZs that both
    mean "residential" pool their votes."""
    p = np.moveaxis(np.asarray(lcz_probs), axis, -1)
    if p.shape[-1] != len(LCZ_CLASSES):
        raise ValueError(f"expected {len(LCZ_CLASSES)} LCZ probabilities, got {p.shape[-1]}")
    lut = function_lut()[1:]
    out = np.zeros(p.shape[:-1] + (len(FUNCTION_CLASSES),), p.dtype)
    for f in FUNCTION_CLASSES:
        sel = lut == f.code
        if sel.any():
            out[..., f.code - 1] = p[..., sel].sum(axis=-1)
    return np.moveaxis(out, -1, axis)


BUILT_CODES = tuple(c.code for c in LCZ_CLASSES if c.code <= 10)   # LCZ 1-10


def function_groups():
    """Our function classes as groups of LCZ codes (model-card ``class_groups`` format): one
    group per function that at least one LCZ maps to, in function-code order, with the
    function's own code, colour and label, so an LCZ-derived function map is styled like the
    maps of our other models (public services never appear: no LCZ maps to it)."""
    groups = []
    for f in FUNCTION_CLASSES:
        codes = [c.code for c in LCZ_CLASSES if FUNCTION_BY_LCZ[c.lcz].function == f.key]
        if codes:
            groups.append({"code": f.code, "name": f.key, "label": f.label, "color": f.color,
                           "from": codes})
    return groups
