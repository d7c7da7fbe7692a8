"""Training and export of the bundled sample-city model (the only place that imports torch).

``python -m plugin.training.train_sample`` (``make train-sample``) generates synthetic sample
cities, reads them through the engine's own co-registration (so training sees exactly what
inference sees), trains :class:`~.model.SampleCityFusionNet`, exports it to
``models/sample_city_fusion.onnx`` with its model card and writes ``models/sample_city_fusion.md``.
"""
