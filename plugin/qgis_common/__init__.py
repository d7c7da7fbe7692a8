"""QGIS helpers shared by the Processing algorithms and the dialogs (imports qgis): turning layers
into the engine's plain inputs, styling results, summaries, and the user models folder."""
