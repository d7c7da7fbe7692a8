"""`make bench`: speed and peak memory of the engine, each case in a fresh process.

Memory target: peak RSS must not grow with raster height (rows are streamed; only one strip of
tiles across the width is held). GDAL's own block cache is process-wide and sized by
GDAL_CACHEMAX (default 5 % of RAM, owned by QGIS inside QGIS); the bench pins it to 64 MB so
that what is measured is the engine. Speed: cells per second on the sample city with the bundled
model, on the provider onnxruntime actually used. Results go to stdout and build/bench.json.
"""
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
MODEL = os.path.join(ROOT, "models", "sample_city_fusion.onnx")
VHR_MODEL = os.path.join(ROOT, "models", "vhr_scenes_resnet.onnx")
FUSION_MODEL = os.path.join(ROOT, "models", "urban_fusion.onnx")
BUILD = os.path.join(ROOT, "build", "bench")
MEMORY_GROWTH_LIMIT = 1.05  # peak RSS at 4x the rows may be at most 5 % above 1x
GDAL_CACHE_MB = "64"


def synthetic_s2(path, width, height):
    """A uint16 10-band raster written block by block (the bench itself stays small)."""
    import numpy as np
    from osgeo import gdal, osr
    if os.path.exists(path):
        return path
    ds = gdal.GetDriverByName("GTiff").Create(path + ".tmp", width, height, 10, gdal.GDT_UInt16,
                                              ["TILED=YES", "COMPRESS=DEFLATE"])
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds.SetProjection(srs.ExportToWkt())
    ds.SetGeoTransform((370000, 10, 0, 5806000, 0, -10))
    rng = np.random.default_rng(0)
    block = (rng.random((10, 256, width)) * 3000 + 200).astype(np.uint16)
    for row in range(0, height, 256):
        n = min(256, height - row)
        for b in range(10):
            ds.GetRasterBand(b + 1).WriteArray(block[b, :n], 0, row)
    ds = None
    os.replace(path + ".tmp", path)
    return path


def child(args):
    """Run one classification and print its numbers (runs in its own process)."""
    from plugin.core.engine import ClassifyRequest, run_classification
    inputs = json.loads(args[0])
    out, model = args[1], args[2]
    t = time.perf_counter()
    res = run_classification(ClassifyRequest(inputs, model, out, overwrite=True))
    cells = res.grid.width * res.grid.height
    print(json.dumps({"cells": cells, "seconds": time.perf_counter() - t,
                      "provider": res.provider, "timings": res.timings,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_case(name, inputs, model=MODEL):
    out = os.path.join(BUILD, f"{name}.tif")
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(inputs), out, model],
                          capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, GDAL_CACHEMAX=GDAL_CACHE_MB))
    if proc.returncode != 0:
        raise SystemExit(f"bench case {name} failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{name:<28} {result['cells']:>10,d} cells  {result['seconds']:7.1f} s  "
          f"{result['cells'] / result['seconds']:>9,.0f} cells/s  peak RSS {result['peak_rss_mb']:7.0f} MB"
          f"  [{result['provider']}]")
    return result


def main():
    os.makedirs(BUILD, exist_ok=True)
    from plugin.samplecity import generate_sample_city
    results = {}
    city = generate_sample_city(os.path.join(BUILD, "sample_city"), seed=0)
    results["sample_city_all_inputs"] = run_case("sample_city_all_inputs", city.inputs)
    results["sample_city_vhr_only"] = run_case("sample_city_vhr_only", {"vhr": city.vhr})
    # the real-scene VHR model: one window per 30 m cell (4 test-time views each)
    results["sample_city_vhr_scenes_model"] = run_case("sample_city_vhr_scenes_model",
                                                       {"vhr": city.vhr}, VHR_MODEL)
    # the default model for any input set with NTL or Sentinel-2: all six sample-city inputs
    results["sample_city_urban_fusion"] = run_case("sample_city_urban_fusion", city.inputs,
                                                   FUSION_MODEL)
    width = 1024
    for rows in (1024, 4096):
        path = synthetic_s2(os.path.join(BUILD, f"s2_{width}x{rows}.tif"), width, rows)
        results[f"s2_only_{width}x{rows}"] = run_case(f"s2_only_{width}x{rows}", {"s2_summer": path})
    small, large = results[f"s2_only_{width}x1024"], results[f"s2_only_{width}x4096"]
    growth = large["peak_rss_mb"] / small["peak_rss_mb"]
    verdict = "PASS" if growth <= MEMORY_GROWTH_LIMIT else "FAIL"
    print(f"\nPeak memory at 4x the rows: x{growth:.2f} ({verdict}, limit x{MEMORY_GROWTH_LIMIT})")
    results["memory_growth_4x_rows"] = {"ratio": growth, "limit": MEMORY_GROWTH_LIMIT, "verdict": verdict}
    with open(os.path.join(ROOT, "build", "bench.json"), "w") as f:
        json.dump(results, f, indent=1)
    if verdict != "PASS":
        raise SystemExit(1)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
