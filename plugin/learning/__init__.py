"""Learning: datasets read through the engine's feeds, the networks, losses, trainers and ONNX export
(the only package that imports torch; never imports qgis). Users train on their own labels with
:mod:`.user_training`; the ``make train-*`` recipes rebuild the bundled models with the same code.

The sample-city recipe:

``python -m plugin.learning.train_sample`` (``make train-sample``) generates synthetic sample
cities, reads them through the engine's own co-registration (so training sees exactly what
inference sees), trains :class:`~.model.SampleCityFusionNet`, exports it to
``models/sample_city_fusion.onnx`` with its model card and writes ``models/sample_city_fusion.md``.
"""
