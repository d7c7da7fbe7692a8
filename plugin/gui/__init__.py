"""QGIS user interface: the dialogs, their background tasks and the labelling dock (imports qgis)."""
