"""Urban Functions plugin code.

``core`` and ``samplecity`` are pure Python (numpy, GDAL, onnxruntime); everything that imports
``qgis`` or Qt lives in ``gui``, ``processing_provider`` and ``qgis_plugin``.
"""
