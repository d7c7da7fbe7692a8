"""The eight urban-function classes shared by the sample city, training and the default styles.

A model card carries its own class table (the engine only trusts the card); this module is the
canonical table our own models and the sample city are built with.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class FunctionClass:
    code: int
    key: str
    label: str
    color: str  # "#rrggbb"


FUNCTION_CLASSES = (
    FunctionClass(1, "residential", "Residential", "#e8a33d"),
    FunctionClass(2, "commercial", "Commercial", "#d7301f"),
    FunctionClass(3, "industrial", "Industrial", "#7b3294"),
    FunctionClass(4, "transportation", "Transportation", "#525252"),
    FunctionClass(5, "public_services", "Public services", "#2b8cbe"),
    FunctionClass(6, "green_space", "Green space", "#31a354"),
    FunctionClass(7, "water", "Water", "#a6dbf0"),
    FunctionClass(8, "agricultural_undeveloped", "Agricultural / undeveloped", "#f2e6a6"),
)

CLASS_BY_CODE = {c.code: c for c in FUNCTION_CLASSES}
CLASS_BY_KEY = {c.key: c for c in FUNCTION_CLASSES}
NODATA_CODE = 0  # output class rasters use 0 for "no input had data here"


def class_table():
    """The class list in the model-card format."""
    return [{"code": c.code, "name": c.key, "label": c.label, "color": c.color}
            for c in FUNCTION_CLASSES]
