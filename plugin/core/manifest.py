"""The run manifest: a JSON record next to the output of what was run, on what, with what."""
import datetime
import json
import os
import platform
import sys

import numpy as np
from osgeo import gdal

from .environment import PLUGIN_ROOT
from .rasters import crs_label, file_hash, inspect_raster


def plugin_version():
    try:
        with open(os.path.join(PLUGIN_ROOT, "metadata.txt"), encoding="utf-8") as f:
            for line in f:
                if line.startswith("version="):
                    return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _input_record(path, spec):
    info = inspect_raster(path, spec.label)
    return {"path": os.path.abspath(path), "crs": crs_label(info.crs_wkt),
            "size": [info.width, info.height], "bands": info.band_count,
            "pixel_size": list(info.pixel_size), "dtype": info.dtype,
            "nodata": None if info.nodata is None else str(info.nodata),
            "resampled_to_m": spec.gsd_m, "resampling": spec.resampling,
            "hash": file_hash(path)}


def build(request, card, grid, session, tile, overlap, tiles, timings, seconds, areas, messages,
          extra_outputs=None, inference_mode=None, cluster=None, views=None):
    doc = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "plugin": {"name": "Urban Functions", "version": plugin_version()},
        "output": {
            "path": os.path.abspath(request.output_path),
            "crs": crs_label(grid.crs_wkt), "crs_wkt": grid.crs_wkt,
            "geotransform": list(grid.geotransform), "size": [grid.width, grid.height],
            "bands": ["class"] + (["confidence_percent"] if request.confidence else []),
            "nodata": 0,
        },
        "extra_outputs": {name: os.path.abspath(path) for name, path in (extra_outputs or {}).items()},
        "inputs": {m: _input_record(p, card.input_for(m)) for m, p in request.inputs.items() if p},
        "model": {"name": card.name, "version": card.version, "path": os.path.abspath(request.model_path),
                  "hash": file_hash(request.model_path)},
        "area": ({"mode": "polygon", "wkt": request.aoi[0]} if request.aoi else
                 {"mode": "extent", "extent": list(request.extent[:4])} if request.extent else
                 {"mode": "overlap of the inputs"}),
        "tiling": {"tile_cells": tile, "overlap_cells": overlap, "tiles": tiles,
                   "batch_size": request.batch_size, "blending": "raised-cosine weights",
                   **({"inference_mode": inference_mode} if inference_mode else {}),
                   **({"views": list(views)} if views and len(views) > 1 else {})},
        "execution": {"device_requested": request.device, "providers_requested": session.requested,
                      "provider": session.provider, "providers": session.providers,
                      "io_binding": session.io_binding, "precision": session.precision,
                      **({"fp16_parity": session.parity} if session.parity else {}),
                      **({"fallback": session.fallback} if session.fallback
                         else {}),
                      **({"dask": cluster} if cluster else {})},
        "timings_s": dict({k: round(v, 3) for k, v in timings.items()}, total=round(seconds, 3)),
        "class_areas": [{"code": a.code, "name": a.name, "cells": a.cells,
                         "area_m2": a.area_m2} for a in areas],
        "software": {"python": sys.version.split()[0], "numpy": np.__version__,
                     "gdal": gdal.__version__, "onnxruntime": session.onnxruntime_version,
                     "platform": platform.platform()},
        "messages": messages,
    }
    return json.dumps(doc, indent=1)
