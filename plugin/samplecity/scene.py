"""The fine scene: the plan painted into materials, heights and shadows (plan frame)."""
from dataclasses import dataclass

import numpy as np

from .canvas import SceneCanvas
from .layout import CityPlan, paint_block_ids, paint_overlays
from .paint_blocks import paint_block
from .paint_networks import paint_majors, paint_ponds, paint_railway, paint_river, paint_streets
from .randomness import stream
from .shadows import cast_shadows


@dataclass
class Scene:
    plan: CityPlan
    canvas: SceneCanvas
    classes: np.ndarray     # class code per plan pixel
    shadow: np.ndarray      # bool, in the VHR's shadow

    @property
    def grid(self):
        return self.canvas.grid


def paint_scene(plan, gsd_m):
    cv = SceneCanvas(plan.size_m, plan.margin, gsd_m)
    overlay = paint_overlays(plan, cv.grid)
    cv.blocked[...] = overlay > 0
    lut = np.zeros(len(plan.blocks) + 1, dtype=np.uint8)
    for b in plan.blocks:
        lut[b.id + 1] = b.cls
    classes = lut[paint_block_ids(plan, cv.grid)]
    np.copyto(classes, overlay, where=overlay > 0)
    del overlay
    for b in plan.blocks:
        paint_block(cv, b, stream(plan.seed, "block", b.id), plan)
    rng = stream(plan.seed, "networks")
    paint_streets(cv, plan, rng)
    paint_ponds(cv, plan, rng)
    paint_river(cv, plan, rng)
    paint_railway(cv, plan, rng)
    paint_majors(cv, plan, rng)
    shadow = cast_shadows(cv.height, gsd_m)
    return Scene(plan, cv, classes, shadow)
