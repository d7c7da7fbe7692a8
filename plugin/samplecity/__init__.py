"""Sample city generator: a deterministic synthetic city with ground truth and six inputs.

Pure Python (numpy + GDAL).  Used by the demo, the tests and to train a first baseline model::

    from plugin.samplecity import generate_sample_city
    city = generate_sample_city("/tmp/city", seed=0)
    city.inputs          # {"vhr": ".../vhr.tif", "ntl": ..., "s2_spring": ..., ...}
    city.ground_truth    # class codes 1..8 (core.classes), 5 m, EPSG:32633

Each modality is written in its own CRS and grid, as real data arrives (VHR EPSG:25833 0.8 m,
NTL EPSG:4326 0.001 deg, S2 10 m in EPSG:32633 / EPSG:3035 / an offset grid).
"""
from .generator import (FILES, GENERATOR_VERSION, METADATA_FILE, SampleCity,
                        generate_sample_city, load_existing)
from .layout import plan_city, render_layout

__all__ = ["generate_sample_city", "SampleCity", "render_layout", "plan_city", "load_existing",
           "GENERATOR_VERSION", "METADATA_FILE", "FILES"]
