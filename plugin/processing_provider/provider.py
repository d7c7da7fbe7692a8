"""The ``urbanfunctions`` Processing provider."""
import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .classify_algorithm import ClassifyAlgorithm
from .lcz_algorithms import lcz_algorithms
from .train_algorithm import TrainAlgorithm
from .validation_algorithms import validation_algorithms

ICON = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "resources", "icons", "urban_functions.svg")


class UrbanFunctionsProvider(QgsProcessingProvider):

    def id(self):
        return "urbanfunctions"

    def name(self):
        return "Urban Functions"

    def longName(self):
        return "Urban Functions: map urban functions from imagery, night-time light and Sentinel-2"

    def icon(self):
        return QIcon(ICON)

    def svgIconPath(self):
        return ICON

    def loadAlgorithms(self):
        self.addAlgorithm(ClassifyAlgorithm())
        self.addAlgorithm(TrainAlgorithm())
        for algorithm in lcz_algorithms() + validation_algorithms():
            self.addAlgorithm(algorithm)

    def supportedOutputRasterLayerExtensions(self):
        # the engine writes GeoTIFF only (colour table, category names, atomic rename)
        return ["tif"]

    def defaultRasterFileExtension(self):
        return "tif"
