"""What a classify run writes at its output path, and what beside it.

"Classify urban functions" always puts a map of urban functions at the output path. Most models
classify functions themselves. A model whose own classes are something else but whose card
derives functions from them (the So2Sat LCZ model: its ``urban_functions`` output, LCZ
probabilities summed per function) has that derived map written at the output path, and its
own classes beside it as ``<output>_lcz.tif`` (``<output>_model_classes.tif`` for other
schemes). So the main output, its style, its class areas and the validation tools that sample
it always speak of functions, whichever model was picked.
"""
from dataclasses import dataclass
from typing import Optional

from .class_raster import MAX_PROBABILITY
from .classes import FUNCTION_CLASSES
from .model_card import ClassInfo, DerivedOutput

FUNCTIONS_OUTPUT = "urban_functions"   # the card's derived map of functions
FUNCTION_KEYS = frozenset(c.key for c in FUNCTION_CLASSES)


@dataclass(frozen=True)
class MapLayout:
    classes: tuple               # the classes of the map at the output path
    groups: Optional[tuple]      # per class, indices into the model's classes summed for it
    #                              (empty: never mapped); None: the model's own classes
    derived: tuple               # the DerivedOutputs that may be written beside it
    own_classes: Optional[str] = None   # the extra output holding the model's own classes

    @property
    def derives_functions(self):
        return self.groups is not None

    @property
    def confidence_name(self):
        """What band 2 (confidence) of the map holds."""
        return ("confidence (summed probability of the function, %)" if self.derives_functions
                else MAX_PROBABILITY)


def map_layout(card):
    """The :class:`MapLayout` of ``card``."""
    derived = tuple(card.derived_outputs)
    functions = next((d for d in derived if d.name == FUNCTIONS_OUTPUT
                      and d.kind == "class_groups"), None)
    if functions is None or {c.name for c in card.classes} <= FUNCTION_KEYS:
        return MapLayout(tuple(card.classes), None, derived)
    index = {c.code: i for i, c in enumerate(card.classes)}
    raw_classes = card.raw.get("classes") or ()
    lcz = bool(raw_classes) and all("lcz" in raw for raw in raw_classes)
    name = "lcz" if lcz else "model_classes"
    own = DerivedOutput(
        name, "class_groups",
        "Local Climate Zones (the model's own classes)" if lcz else
        f"{card.title}: the model's own classes",
        f"The {len(card.classes)} classes of {card.name} itself; the main map sums their "
        f"probabilities per function ({functions.description or functions.label}).",
        groups=tuple((c, (c.code,)) for c in card.classes))
    # all eight functions, also those no class of the model stands for (So2Sat: public
    # services; never mapped, their group is empty): the category table, the legend and the
    # reference classes of a validation sample are the same as with every other model
    by_code = {g.code: (g, src) for g, src in functions.groups}
    classes, groups = [], []
    for f in FUNCTION_CLASSES:
        g, src = by_code.get(f.code, (ClassInfo(f.code, f.key, f.label, f.color), ()))
        classes.append(g)
        groups.append(tuple(index[c] for c in src))
    return MapLayout(tuple(classes), tuple(groups),
                     tuple(own if d is functions else d for d in derived), name)


def main_map_note(card, layout, own_path):
    """The log line that says the map holds functions derived from another class scheme."""
    return (f"The map holds urban functions derived from the {len(card.classes)} classes of "
            f"{card.name} (their probabilities summed per function: "
            f"{layout_rule(card)}); the model's own classes are in {own_path}.")


def layout_rule(card):
    mapping = card.raw.get("function_mapping") or {}
    return mapping.get("source") or "the card's table"

