"""How a model is run over a tile: the inference modes and their test-time views.

* ``fast``: one view of each tile;
* ``accurate``: each tile also seen flipped left-right, flipped up-down and transposed (the
  card's ``views``), each view's probabilities turned back onto the map and averaged. The
  networks are trained with flips and 90 degree rotations, so every view is a fair look at the
  same ground; averaging them cancels part of the network's orientation-specific mistakes, at
  the cost of one network run per view;
* ``windows``: patch classifiers only: every window on its own with all views
  (:mod:`.shared_trunk`).

Segmentation cards choose their default in ``output.default_mode`` (``fast`` when absent) and
may list ``output.test_time_views``; patch classifiers in ``patch.shared_trunk``.
"""
import numpy as np

from .errors import InputError

MODES = ("fast", "accurate", "windows")
MODE_LABELS = {"fast": "fast (one view)",
               "accurate": "accurate (test-time views: flips and transpose, averaged)",
               "windows": "per window (each window alone; slowest)"}
VIEWS = ("identity", "flip_x", "flip_y", "transpose")
# (label, mode) for the dialog and Processing; None: the card's default
MODE_CHOICES = (("The model's default", None),
                ("Fast (one view)", "fast"),
                ("Accurate (test-time views: flips and transpose, averaged)", "accurate"),
                ("Per window (patch classifiers: each window alone; slowest)", "windows"))


def check_mode(requested):
    if requested and requested not in MODES:
        raise InputError(f"Unknown inference mode {requested!r}; choose one of "
                         f"{', '.join(MODES)}.")


def apply_view(x, name):
    """x [..., H, W] seen through a test-time view (each view is its own inverse)."""
    if name == "flip_x":
        return x[..., ::-1]
    if name == "flip_y":
        return x[..., ::-1, :]
    if name == "transpose":
        return np.swapaxes(x, -1, -2)
    return x


def segmentation_views(output, requested):
    """(mode, views, note or None) for a segmentation card's ``output`` spec and the requested
    mode (None: the card's default). The graphs take tiles of any size (a multiple of the
    card's size step), so a transposed tile that is not square goes through as it is."""
    check_mode(requested)
    note = None
    mode = requested or output.default_mode
    if mode == "windows":
        note = ("'windows' applies to patch classifiers only; this model maps whole tiles: "
                "the accurate mode (test-time views) is used.")
        mode = "accurate"
    return mode, (("identity",) if mode == "fast" else tuple(output.test_time_views)), note
