"""QGIS user interface: dialog, background task, styling and result summaries (imports qgis)."""
