"""Processing provider ``urbanfunctions`` with the algorithm ``classify`` (imports qgis)."""
