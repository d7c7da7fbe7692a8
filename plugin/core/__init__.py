"""Pure-Python engine: never imports qgis or Qt (enforced by tests/test_core_boundary.py)."""
