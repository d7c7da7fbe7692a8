"""`make bench`: speed and memory of the engine, measured side by side with raw onnxruntime.

Every run is a fresh process. For each bundled model on the sample city (repeated, min and
median reported) it prints:

* output cells per second and input megapixels per second (the finest input's pixels);
* the engine/raw-ORT ratio: the same tiles (or windows), read into memory beforehand, run through
  the same onnxruntime session settings with nothing else around them. 1.0 means the engine adds
  nothing to inference;
* the time breakdown from the engine's own timings: reading and co-registering (GDAL warped
  VRTs; done in a background thread, so "waited" is what inference waited for it), inference,
  blending, writing;
* the CPU share (process CPU time / wall time / cores) and the peak RSS.

GDAL's block cache is left as a user has it (GDAL's default) for the speed cases. The memory
cases pin it to 64 MB so that the engine's own memory shows: Sentinel-2-only rasters of three
sizes (time should grow linearly, memory stay flat), and one raster laid out wide and tall (the
widest raster's memory). Results: stdout and build/bench.json.

Usage: python scripts/bench.py [--repeats N] [--sizes 4,16,64] [--quick] [--speed-only]
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
MODELS = {
    "sample-city-fusion": os.path.join(ROOT, "models", "sample_city_fusion.onnx"),
    "urban-fusion": os.path.join(ROOT, "models", "urban_fusion.onnx"),
    "vhr-scenes-resnet": os.path.join(ROOT, "models", "vhr_scenes_resnet.onnx"),
}
BUILD = os.path.join(ROOT, "build", "bench")
MEMORY_GROWTH_LIMIT = 1.05   # peak RSS at 4x the rows (same width) may be at most 5 % above 1x
PINNED_CACHE_MB = "64"


def synthetic_s2(path, width, height):
    """A uint16 10-band 10 m raster written block by block (the bench itself stays small)."""
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


def input_megapixels(inputs):
    """Pixels of the finest input (what a user's imagery holds), in millions."""
    from osgeo import gdal
    best = 0
    for path in inputs.values():
        ds = gdal.Open(path)
        best = max(best, ds.RasterXSize * ds.RasterYSize)
    return best / 1e6


def raw_ort_seconds(request):
    """Inference alone: the engine's tiles (or patch windows) read into memory first, then only
    ``session.run`` timed, in batches as full as the engine could make them."""
    import numpy as np
    from plugin.core.engine import _fresh_cells, resolve_tiling
    from plugin.core.feeds import FeedReader
    from plugin.core.grid import plan_grid
    from plugin.core.model_card import read_card
    from plugin.core.patches import PatchReader
    from plugin.core.runtime import InferenceSession
    from plugin.core.tiling import tile_starts
    from plugin.core.shared_trunk import resolve_mode
    card = read_card(request.model_path)
    grid = plan_grid(card, request.inputs)
    tile, overlap = resolve_tiling(card, grid, None, None, lambda _m: None)
    patch = card.patch is not None
    overlap = 0 if patch else overlap
    th, tw = min(tile, grid.height), min(tile, grid.width)
    rows = tile_starts(grid.height, th, th - overlap if th < grid.height else th)
    cols = tile_starts(grid.width, tw, tw - overlap if tw < grid.width else tw)
    session = InferenceSession(request.model_path, request.device)
    # the batch size the engine resolves for this provider (4 on the CPU, free memory on a GPU)
    from plugin.core.engine import TilePlan, with_batch_size
    request = with_batch_size(request, session, TilePlan(
        card, request.inputs, grid, tile, overlap, th, tw, [], [], None, patch), lambda _m: None)
    batches = []

    mode = resolve_mode(card.patch, request.inference_mode)[0] if patch else None
    reader = (PatchReader(card, request.inputs, grid, mode=mode) if patch
              else FeedReader(card, request.inputs, grid))

    class Recorder:
        """Stands in for the session: records the feeds the engine's own patch code makes."""

        def run(self, _name, feed):
            batches.append(feed)
            p, n = card.patch, feed[card.patch.input].shape[0]
            if p.pool_inputs and p.pool_inputs[0] in feed:
                return np.zeros((n, len(card.classes), feed[p.pool_inputs[0]].shape[0],
                                 feed[p.pool_inputs[1]].shape[0]), np.float32)
            return np.zeros((n, len(card.classes)), np.float32)
    with reader:
        if patch:
            for ri, row in enumerate(rows):
                for ci, col in enumerate(cols):
                    windows, _valid = reader.read(col, row, tw, th)
                    reader.infer(Recorder(), windows, th, tw, chunk=64 * request.batch_size,
                                 only=_fresh_cells(rows, cols, ri, ci, th, tw))
        else:
            tiles = [reader.read(col, row, tw, th)[0] for row in rows for col in cols]
            for k in range(0, len(tiles), request.batch_size):
                group = tiles[k:k + request.batch_size]
                batches.append({name: np.concatenate([t[name] for t in group])
                                for name in group[0]})
    t = time.perf_counter()
    for feed in batches:
        session.run(card.output.name, feed)
    return time.perf_counter() - t


def child(args):
    """One classification (and the raw-ORT baseline when asked), numbers as JSON on stdout."""
    from plugin.core.engine import ClassifyRequest, run_classification
    inputs, out, model, raw = json.loads(args[0]), args[1], args[2], args[3] == "raw"
    mode = args[4] if len(args) > 4 and args[4] != "-" else None
    dask = args[5] if len(args) > 5 and args[5] != "-" else None
    request = ClassifyRequest(inputs, model, out, overwrite=True, inference_mode=mode,
                              dask_scheduler=dask)
    r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    res = run_classification(request)
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    result = {"cells": res.grid.width * res.grid.height, "seconds": wall,
              "cpu_share": cpu / wall / (os.cpu_count() or 1), "provider": res.provider,
              "timings": res.timings, "input_mpix": input_megapixels(inputs),
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "gdal_cachemax": os.environ.get("GDAL_CACHEMAX", "GDAL default"),
              "dask": None if res.cluster is None else {
                  "workers": len(res.cluster["workers"]), "blocks": len(res.cluster["blocks"]),
                  "halo_tiles_recomputed": res.cluster["halo_tiles_recomputed"]}}
    if raw:
        result["raw_ort_s"] = raw_ort_seconds(request)
    print(json.dumps(result))


def run_once(name, inputs, model, raw=False, pinned=False, mode=None, dask=None):
    out = os.path.join(BUILD, f"{name}.tif")
    env = dict(os.environ)
    env.pop("GDAL_CACHEMAX", None)
    if pinned:
        env["GDAL_CACHEMAX"] = PINNED_CACHE_MB
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(inputs), out, model,
                           "raw" if raw else "-", mode or "-", dask or "-"],
                          capture_output=True, text=True,
                          cwd=ROOT,
                          env=env)
    if proc.returncode != 0:
        raise SystemExit(f"bench case {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def speed_case(name, inputs, model, repeats, mode=None):
    """Repeated runs with the raw-ORT baseline each time; min and median."""
    runs = [run_once(name, inputs, MODELS[model], raw=True, mode=mode) for _ in range(repeats)]
    best = min(runs, key=lambda r: r["seconds"])
    secs = [r["seconds"] for r in runs]
    ratios = [r["raw_ort_s"] / r["seconds"] for r in runs]
    t = best["timings"]
    case = {"model": model, "cells": best["cells"], "input_mpix": best["input_mpix"],
            "seconds_min": min(secs), "seconds_median": statistics.median(secs),
            "cells_per_s": best["cells"] / min(secs), "mpix_per_s": best["input_mpix"] / min(secs),
            "raw_ort_s_min": min(r["raw_ort_s"] for r in runs),
            "engine_vs_raw_ort": max(ratios), "engine_vs_raw_ort_median": statistics.median(ratios),
            "cpu_share": best["cpu_share"], "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "breakdown_s": {k: round(v, 3) for k, v in t.items()}, "provider": best["provider"],
            "repeats": repeats, "gdal_cachemax": best["gdal_cachemax"], "inference_mode": mode}
    print(f"{name:<34} {case['cells']:>9,d} cells  min {case['seconds_min']:6.1f} s "
          f"(median {case['seconds_median']:5.1f})  {case['cells_per_s']:>9,.0f} cells/s  "
          f"{case['mpix_per_s']:6.2f} MPix/s  engine/raw ORT {case['engine_vs_raw_ort']:.2f}  "
          f"CPU {case['cpu_share']:.0%}  RSS {case['peak_rss_mb']:5.0f} MB  [{case['provider']}]")
    print(f"{'':<34} read {t['read_s']:.2f} s (inference waited {t.get('read_wait_s', 0):.2f}),"
          f" infer {t['infer_s']:.2f}, blend {t.get('blend_s', 0):.2f}, write {t['write_s']:.2f}"
          f"; raw ORT {case['raw_ort_s_min']:.2f} s")
    return case


def dask_cases(mpix=4):
    """The same raster in-process and on a LocalCluster of 1 and 2 worker processes (Sentinel-2
    only, sample-city-fusion): time, the 2-vs-1 ratio and the client's peak RSS (the workers
    are other processes). The maps are compared bit for bit."""
    import numpy as np
    from osgeo import gdal
    side = int(round((mpix * 1e6) ** 0.5))
    path = synthetic_s2(os.path.join(BUILD, f"s2_{side}x{side}.tif"), side, side)
    runs, maps = {}, {}
    for label, dask in (("in-process", None), ("local:1", "local:1"), ("local:2", "local:2")):
        name = f"dask {label}"
        r = run_once(name, {"s2_summer": path}, MODELS["sample-city-fusion"], dask=dask)
        ds = gdal.Open(os.path.join(BUILD, f"{name}.tif"))
        maps[label] = ds.GetRasterBand(1).ReadAsArray()
        ds = None
        runs[label] = {"seconds": r["seconds"], "client_peak_rss_mb": r["peak_rss_mb"],
                       "dask": r["dask"], "same_map_as_in_process":
                           bool(np.array_equal(maps[label], maps["in-process"]))}
        print(f"{name:<34} {side} x {side}  {r['seconds']:7.1f} s  client peak RSS "
              f"{r['peak_rss_mb']:6.0f} MB  same map as in-process: "
              f"{runs[label]['same_map_as_in_process']}"
              + (f"  ({r['dask']['blocks']} blocks, {r['dask']['halo_tiles_recomputed']} halo "
                 "tiles again)" if r["dask"] else ""))
    runs["two_vs_one_worker_speedup"] = runs["local:1"]["seconds"] / runs["local:2"]["seconds"]
    print(f"{'':<34} 2 worker processes vs 1: x{runs['two_vs_one_worker_speedup']:.2f}")
    return runs


def compare_mode_maps(city):
    """The scene model's maps of the sample city in each patch mode (written by the speed
    cases): the share of cells equal to the windows map, and the agreement with the city's
    truth (the class of each 30 m cell, on cells of one class only)."""
    from osgeo import gdal
    maps = {}
    for mode in ("windows", "accurate", "fast"):
        ds = gdal.Open(os.path.join(BUILD, f"sample city VHR, vhr-scenes-resnet, {mode}.tif"))
        maps[mode] = ds.GetRasterBand(1).ReadAsArray()
        ds = None
    h, w = maps["windows"].shape
    ds = gdal.Open(city.ground_truth)
    truth = ds.GetRasterBand(1).ReadAsArray()
    f = int(round(30.0 / ds.GetGeoTransform()[1]))
    ds = None
    blocks = truth[:h * f, :w * f].reshape(h, f, w, f).transpose(0, 2, 1, 3).reshape(h, w, -1)
    pure = (blocks == blocks[..., :1]).all(axis=-1)
    out = {}
    for mode, m in maps.items():
        out[mode] = {"same_as_windows": float((m == maps["windows"]).mean()),
                     "agreement_with_truth_pure_cells": float((m[pure] == blocks[pure, 0]).mean()),
                     "pure_cells": int(pure.sum())}
        print(f"{'':<34} {mode:<8} map: {out[mode]['same_as_windows']:.1%} of cells as the "
              f"windows map; agrees with the sample city's truth on "
              f"{out[mode]['agreement_with_truth_pure_cells']:.1%} of {int(pure.sum())} "
              "one-class cells")
    return out


def memory_case(name, width, height, pinned=True):
    path = synthetic_s2(os.path.join(BUILD, f"s2_{width}x{height}.tif"), width, height)
    r = run_once(name, {"s2_summer": path}, MODELS["sample-city-fusion"], pinned=pinned)
    case = {"cells": r["cells"], "mpix": r["cells"] / 1e6, "seconds": r["seconds"],
            "cells_per_s": r["cells"] / r["seconds"], "peak_rss_mb": r["peak_rss_mb"],
            "cpu_share": r["cpu_share"], "gdal_cachemax": r["gdal_cachemax"],
            "breakdown_s": {k: round(v, 3) for k, v in r["timings"].items()}}
    print(f"{name:<34} {width:>5} x {height:<5} {case['mpix']:6.1f} MPix  {r['seconds']:7.1f} s  "
          f"{case['cells_per_s']:>9,.0f} cells/s  peak RSS {r['peak_rss_mb']:6.0f} MB  "
          f"(GDAL cache: {r['gdal_cachemax']})")
    return case


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="4,16,64", help="MPix of the memory cases")
    parser.add_argument("--quick", action="store_true", help="1 repeat, sizes 1,4,16")
    parser.add_argument("--speed-only", action="store_true",
                        help="only the speed cases (no memory cases, no memory gate)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.sizes = 1, "1,4,16"
    sizes = [float(s) for s in args.sizes.split(",")]
    os.makedirs(BUILD, exist_ok=True)
    from plugin.samplecity import generate_sample_city
    city = generate_sample_city(os.path.join(BUILD, "sample_city"), seed=0)
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU threads, "
               f"{platform.python_implementation()} {platform.python_version()}")
    print(f"Machine: {machine}\n")
    results = {"machine": machine, "speed": {}, "memory": {}}
    print("Speed (GDAL cache as a user has it; each case repeated, best and median):")
    results["speed"]["sample_city_all_inputs"] = speed_case(
        "sample city, 6 inputs", city.inputs, "sample-city-fusion", args.repeats)
    results["speed"]["sample_city_urban_fusion"] = speed_case(
        "sample city, 6 inputs, urban-fusion", city.inputs, "urban-fusion", args.repeats)
    # the scene model in each patch mode: the shared trunk against window by window
    for mode in ("accurate", "fast", "windows"):
        results["speed"][f"sample_city_vhr_scenes_{mode}"] = speed_case(
            f"sample city VHR, vhr-scenes-resnet, {mode}", {"vhr": city.vhr},
            "vhr-scenes-resnet", args.repeats, mode)
    per_s = {m: results["speed"][f"sample_city_vhr_scenes_{m}"]["cells_per_s"]
             for m in ("accurate", "fast", "windows")}
    results["speed"]["vhr_scenes_speedup"] = {m: per_s[m] / per_s["windows"]
                                              for m in ("accurate", "fast")}
    print(f"{'':<34} shared trunk vs. window by window: accurate x"
          f"{per_s['accurate'] / per_s['windows']:.1f}, fast x{per_s['fast'] / per_s['windows']:.1f}"
          " cells/s")
    results["speed"]["vhr_scenes_maps"] = compare_mode_maps(city)
    print("\nDask (LocalCluster on this machine):")
    results["dask"] = dask_cases()
    if args.speed_only:
        with open(os.path.join(ROOT, "build", "bench_speed.json"), "w") as f:
            json.dump(results, f, indent=1)
        print(f"Results: {os.path.join('build', 'bench_speed.json')}")
        return
    print(f"\nMemory (GDAL cache pinned to {PINNED_CACHE_MB} MB; Sentinel-2 only, "
          "sample-city-fusion):")
    for mpix in sizes:
        side = int(round((mpix * 1e6) ** 0.5))
        results["memory"][f"square_{mpix:g}mpix"] = memory_case(f"square {mpix:g} MPix", side, side)
    mid = sizes[len(sizes) // 2]
    side = int(round((mid * 1e6) ** 0.5))
    base = int(round((sizes[0] * 1e6) ** 0.5))
    results["memory"]["wide"] = memory_case(f"wide {mid:g} MPix", side * side // base, base)
    results["memory"]["tall"] = memory_case(f"tall {mid:g} MPix", base, side * side // base)
    results["memory"]["square_default_cache"] = memory_case(
        f"square {mid:g} MPix, GDAL default cache", side, side, pinned=False)
    small = results["memory"][f"square_{sizes[0]:g}mpix"]
    large = results["memory"][f"square_{sizes[-1]:g}mpix"]
    tall, wide = results["memory"]["tall"], results["memory"]["wide"]
    growth = large["peak_rss_mb"] / small["peak_rss_mb"]
    rows_growth = tall["peak_rss_mb"] / small["peak_rss_mb"]   # same width, more rows
    linear = (large["seconds"] / large["mpix"]) / (small["seconds"] / small["mpix"])
    widest = wide["peak_rss_mb"] / tall["peak_rss_mb"]
    # the gate: memory must not grow with the rows (they are streamed); growth with the width
    # (the blending strip spans it) is reported, not yet held to a limit
    verdict = "PASS" if rows_growth <= MEMORY_GROWTH_LIMIT else "FAIL"
    print(f"\nMore rows at the same width ({small['mpix']:g} -> {tall['mpix']:g} MPix): peak RSS "
          f"x{rows_growth:.2f} ({verdict}, limit x{MEMORY_GROWTH_LIMIT}).")
    print(f"Square {sizes[0]:g} -> {sizes[-1]:g} MPix: time per MPix x{linear:.2f} (1.00 = "
          f"linear), peak RSS x{growth:.2f}; the same area laid out wide instead of tall: peak "
          f"RSS x{widest:.2f} (memory still grows with the width).")
    results["summary"] = {"rows_rss_growth": rows_growth, "rss_limit": MEMORY_GROWTH_LIMIT,
                          "size_rss_growth": growth, "time_per_mpix_growth": linear,
                          "wide_over_tall_rss": widest, "verdict": verdict}
    with open(os.path.join(ROOT, "build", "bench.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"Results: {os.path.join('build', 'bench.json')}")
    if verdict != "PASS":
        raise SystemExit(1)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
