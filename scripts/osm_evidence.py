"""Measured evidence for "Map your own city": train on the real Sentinel-2 clip with the real
OpenStreetMap land use of ../shared, and compare on the same held-out blocks.

    python scripts/osm_evidence.py [--minutes 12] [--out build/osm_evidence] [--runs a,b,e]
    python scripts/osm_evidence.py --runs c,a --seed 1    # the seed's share of the figures
    python scripts/osm_evidence.py --runs a,b,c --table-epochs   # the table's epoch counts

(a) urban-fusion fine-tuned on the labels; (b) the same network from scratch; (c) its
Sentinel-2 stream started from the imported So2Sat trunk; (d) RandomForest
and the untrained default (measured inside each training run, on the same cells); (e) the So2Sat
LCZ network (imported from ../shared/data/so2sat) with LCZ -> functions, its 100 m map read
onto the 10 m grid; (f) the So2Sat network itself fine-tuned as a patch classifier of functions
(40 m cells), trained with the same held-out blocks given as ground rectangles, its map read
onto the 10 m grid. Writes docs/osm_evidence.json and .md and the README block between
``<!-- osm-evidence:start -->`` and ``<!-- osm-evidence:end -->``. Each training run gets the
same time limit; seed 0; the split is the same for all (same labels, grid and seed).
"""
import argparse
import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
S2 = os.path.join(SHARED, "s2", "ketzin_20170216_s2l1c_10band.tif")
OSM = os.path.join(SHARED, "osm", "havelland_osm_landuse_west.gpkg")
H5 = os.path.join(SHARED, "so2sat", "S2_RESNET20_BS16_LR2e-4_IN32-32-10_PRO-52-0R12_2019-06-27.h5")
DOCS = os.path.join(ROOT, "docs")
README = os.path.join(ROOT, "README.md")
MARK = ("<!-- osm-evidence:start -->", "<!-- osm-evidence:end -->")
ROWS = (("a", "(a) urban-fusion fine-tuned on the OSM labels"),
        ("b", "(b) the same network from scratch"),
        ("c", "(c) its Sentinel-2 stream from the imported So2Sat trunk"),
        ("d", "(d) RandomForest, per-cell values + 3x3 texture"),
        ("e0", "(e) untrained default: urban-fusion as bundled (simulation only)"),
        ("e", "(e) So2Sat LCZ42 (imported), LCZ -> functions, 100 m"),
        ("f", "(f) So2Sat LCZ42 fine-tuned as a patch classifier of functions, 40 m"))
CLASSES = ("residential", "green_space", "water", "agricultural_undeveloped")


def request(out, base, minutes, s2_trunk=None, held_out=None, held_out_crs=None, seed=0):
    from plugin.learning.labels import read_label_file
    from plugin.learning.user_training import TrainRequest
    return TrainRequest(inputs={"s2_winter": S2}, labels=read_label_file(OSM, "fclass"),
                        output_path=out, base_model=base, max_minutes=minutes, seed=seed,
                        overwrite=True, s2_trunk=s2_trunk, held_out=held_out,
                        held_out_crs=held_out_crs)


def reference_split():
    """The 10 m grid and block split every row is scored on (that of (a))."""
    from plugin.core.model_card import read_card
    from plugin.learning.user_training import BASE_DEFAULT, prepare
    req = request(os.path.join(ROOT, "unused.onnx"), None, 1)
    return prepare(req, read_card(BASE_DEFAULT), req.inputs, say=lambda m: None)


def score_map(model_path, out_dir, prep):
    """Classify the S2 clip with ``model_path`` and score its map (for So2Sat, the functions
    derived from its LCZ), read onto the 10 m grid (each 10 m cell takes the value under its centre), on the held-out
    cells of ``prep``; returns (scores, the map's class indices on that grid, seconds of the
    classify run)."""
    from plugin.core.engine import ClassifyRequest, run_classification
    from plugin.learning.map_scores import read_onto, score
    out = os.path.join(out_dir, "map_" + os.path.basename(model_path).replace(".onnx", ".tif"))
    t0 = time.perf_counter()
    res = run_classification(ClassifyRequest(inputs={"s2_winter": S2}, model_path=model_path,
                                             output_path=out, overwrite=True))
    seconds = time.perf_counter() - t0
    pred = read_onto(res.output_path, prep.grid)
    return score(prep.split.validation, pred), pred, seconds


def so2sat_patch(out_dir, minutes):
    """(f): the So2Sat network fine-tuned as a patch classifier on the same held-out ground."""
    from plugin.learning.blocks import held_out_rectangles
    from plugin.learning.user_training import run_training
    prep = reference_split()
    g = prep.grid
    rects = held_out_rectangles(prep.split, g.left, g.top, g.cell)
    out = os.path.join(out_dir, "osm_f.onnx")
    t0 = time.perf_counter()
    res = run_training(request(out, import_so2sat(out_dir), minutes, held_out=rects,
                               held_out_crs=g.crs_wkt),
                       log=lambda m: print(f"[f] {m}", flush=True))
    seconds = time.perf_counter() - t0
    s, _, classify_s = score_map(out, out_dir, prep)
    return {"metrics": s, "own_grid": res.metrics, "seconds": round(seconds, 1),
            "classify_seconds": round(classify_s, 1),
            "epochs": res.card["training"]["epochs"], "model": os.path.relpath(out, ROOT)}


def import_so2sat(out_dir):
    from plugin.lcz.importer import import_so2sat_weights
    models = os.path.join(out_dir, "models")
    os.makedirs(models, exist_ok=True)
    return import_so2sat_weights(H5, models, overwrite=True)


def train(out_dir, key, minutes, seed=0, epochs=0, held=None):
    """Row ``key`` trained with ``seed`` for ``epochs`` (0: as many as ``minutes`` allow);
    ``held``: the held-out ground given as rectangles (request's held_out, held_out_crs)."""
    from plugin.learning.user_training import SCRATCH, run_training
    out = os.path.join(out_dir, f"osm_{key}" + (f"_seed{seed}" if seed else "") + ".onnx")
    t0 = time.perf_counter()
    trunk = import_so2sat(out_dir) if key == "c" else None
    req = request(out, SCRATCH if key == "b" else None, minutes, trunk, seed=seed,
                  **(held or {}))
    req.epochs = epochs
    res = run_training(req,
                       log=lambda m: print(f"[{key}] {m}", flush=True))
    return {"metrics": res.metrics, "seconds": round(time.perf_counter() - t0, 1),
            "epochs": res.card["training"]["epochs"], "model": os.path.relpath(out, ROOT)}


def so2sat(out_dir):
    """LCZ -> functions of the imported So2Sat model, scored on the held-out cells."""
    from plugin.learning.user_training import score
    onnx = import_so2sat(out_dir)
    prep = reference_split()
    s, pred, seconds = score_map(onnx, out_dir, prep)
    # the whole labelled west part too (So2Sat never saw these labels)
    s_all = score(prep.ras.labels, pred)
    return {"metrics": s, "all_labelled": s_all, "seconds": round(seconds, 1)}


def table(results):
    head = ("| Model | Held-out OA | Macro F1 | " + " | ".join(
        c.replace("_", " ").replace("agricultural undeveloped", "agricultural") + " F1"
        for c in CLASSES) + " | Time |")
    lines = [head, "|---|---:|---:|" + "---:|" * len(CLASSES) + "---:|"]
    for key, label in ROWS:
        m, t = None, ""
        if key in ("a", "b", "c") and key in results:
            m, t = results[key]["metrics"]["validation"], (
                f"{results[key]['seconds'] / 60:.1f} min ({results[key]['epochs']} epochs)")
        elif key == "d" and "a" in results:
            m = results["a"]["metrics"]["comparisons"].get("random_forest")
            t = f"{m['seconds']:.0f} s" if m else ""
        elif key == "e0" and "a" in results:
            m = results["a"]["metrics"]["comparisons"].get("untrained_base")
        elif key == "e" and "e" in results:
            m, t = results["e"]["metrics"], f"{results['e']['seconds']:.0f} s (classify)"
        elif key == "f" and "f" in results:
            m, t = results["f"]["metrics"], (
                f"{results['f']['seconds'] / 60:.1f} min ({results['f']['epochs']} epochs)")
        if m is None:
            lines.append(f"| {label} | not run | | " + "| " * len(CLASSES) + "|")
            continue
        f1 = [m["per_class_f1"].get(c) for c in CLASSES]
        lines.append(f"| {label} | {m['overall_accuracy']:.3f} | {m['macro_f1']:.3f} | "
                     + " | ".join("" if v is None else f"{v:.3f}" for v in f1) + f" | {t} |")
    return "\n".join(lines)


def views_sentence(results):
    """How (a)-(c) are scored: each run scored its map with the four test-time views averaged
    (inference mode accurate) and with one view (fast) and kept the better as classify's
    default (user_training.finish); both figures, from the same runs."""
    modes = {k: results[k]["metrics"].get("by_inference_mode")
             for k in ("a", "b", "c") if k in results}
    modes = {k: v for k, v in modes.items() if v}
    if not modes:
        return ""
    return ("Each of (a)-(c) scored its map on these cells with the four test-time views "
            "averaged (accurate) and with one view (fast), and keeps the better as classify's "
            "default; the table gives that one (a choice between two made on the held-out "
            "cells, so slightly optimistic). Held-out OA accurate / fast: " + ", ".join(
                f"({k}) {v['accurate']['overall_accuracy']:.3f} / "
                f"{v['fast']['overall_accuracy']:.3f}" for k, v in modes.items()) + ". ")


def write(results, out_dir):
    os.makedirs(DOCS, exist_ok=True)
    with open(os.path.join(DOCS, "osm_evidence.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    split = (results.get("a") or results.get("b") or {}).get("metrics", {}).get("split", {})
    intro = (
        f"Real Sentinel-2 L1C clip (Havelland, 16 Feb 2017, one winter scene, 10 m) and real "
        f"OpenStreetMap land use (west part, 265 polygons, field `fclass`, bundled class map). "
        f"Held-out: {split.get('validation_blocks', '?')} of {split.get('blocks_with_labels', '?')}"
        f" blocks of 1 km ({split.get('validation_cells', '?')} labelled 10 m cells); every row "
        "is scored on exactly these cells. Training cells within the network's receptive field "
        f"of them are not used: a buffer of {split.get('buffer_cells', '?')} cells "
        f"({split.get('training_cells', '?')} training cells left) for (a) and (b), "
        + (f"{results['c']['metrics']['split']['buffer_cells']} cells "
           f"({results['c']['metrics']['split']['training_cells']} left) for (c), whose "
           "So2Sat trunk sees farther. " if "c" in results else "") +
        ("(f) is trained with these very blocks held out (given as ground rectangles), on "
         f"its 40 m grid with a buffer of {results['f']['own_grid']['split']['buffer_cells']} "
         "cells; its map and So2Sat's (e) are read onto the 10 m cells (the value under each "
         "cell's centre). " if "f" in results else "") +
        views_sentence(results) +
        f"Seed 0; each training run limited to the same time; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads. Made by "
        "`make evidence-osm` (`scripts/osm_evidence.py`).")
    block = intro + "\n\n" + table(results)
    with open(os.path.join(DOCS, "osm_evidence.md"), "w", encoding="utf-8") as f:
        f.write("# Training on OpenStreetMap land use: measured\n\n" + block + "\n")
    with open(README, encoding="utf-8") as f:
        text = f.read()
    if MARK[0] in text and MARK[1] in text:
        a, rest = text.split(MARK[0], 1)
        _, b = rest.split(MARK[1], 1)
        with open(README, "w", encoding="utf-8") as f:
            f.write(a + MARK[0] + "\n" + block + "\n" + MARK[1] + b)
    print(block)


def other_seed(args):
    """Rows a-c again with another training seed, on the held-out blocks of seed 0 (given as
    rectangles: the same cells and buffer) and for that row's number of epochs, so that only
    the training's random draws vary: how far one seed's figures can be trusted."""
    from plugin.learning.blocks import held_out_rectangles
    ref = reference_split()
    g = ref.grid
    held = {"held_out": held_out_rectangles(ref.split, g.left, g.top, g.cell),
            "held_out_crs": g.crs_wkt}
    path = os.path.join(DOCS, "osm_evidence_seeds.json")
    results = json.load(open(path, encoding="utf-8")) if os.path.exists(path) else {}
    with open(os.path.join(DOCS, "osm_evidence.json"), encoding="utf-8") as f:
        seed0 = json.load(f)
    for key in args.runs.split(","):
        if key not in ("a", "b", "c") or key not in seed0 or (key == "c"
                                                             and not os.path.isfile(H5)):
            print(f"{key}: skipped (only rows a-c, after their seed-0 run; c needs {H5})")
            continue
        r = train(args.out, key, args.minutes, args.seed, seed0[key]["epochs"], held)
        m = r["metrics"]["validation"]
        results[f"{key}_seed{args.seed}"] = {
            "overall_accuracy": m["overall_accuracy"], "macro_f1": m["macro_f1"],
            "per_class_f1": m["per_class_f1"], "cells": m["cells"],
            "by_inference_mode": r["metrics"].get("by_inference_mode"),
            "epochs": r["epochs"], "seconds": r["seconds"], "minutes": args.minutes,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU threads"}
        with open(path, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1, sort_keys=True)
        print(f"{key} seed {args.seed}: held-out OA {m['overall_accuracy']:.3f}, macro F1 "
              f"{m['macro_f1']:.3f} on {m['cells']} cells", flush=True)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "osm_evidence"))
    ap.add_argument("--runs", default="a,b,c,e,f")
    ap.add_argument("--table-epochs", action="store_true",
                    help="rows a-c for the epochs recorded in docs/osm_evidence.json instead of "
                         "as many as --minutes allow: repeats the table's runs")
    ap.add_argument("--seed", type=int, default=0,
                    help="training seed of rows a-c; not 0: the same held-out blocks and "
                         "epochs, results in docs/osm_evidence_seeds.json (the table stays "
                         "that of seed 0)")
    args = ap.parse_args(argv)
    for p in (S2, OSM):
        if not os.path.isfile(p):
            raise SystemExit(f"needs {p} (../shared/data)")
    os.makedirs(args.out, exist_ok=True)
    if args.seed:
        return other_seed(args)
    path = os.path.join(DOCS, "osm_evidence.json")
    results = json.load(open(path, encoding="utf-8")) if os.path.exists(path) else {}
    for key in args.runs.split(","):
        if key in ("a", "b") or (key == "c" and os.path.isfile(H5)):
            epochs = results[key]["epochs"] if args.table_epochs and key in results else 0
            results[key] = train(args.out, key, args.minutes, epochs=epochs)
        elif key == "e" and os.path.isfile(H5):
            results[key] = so2sat(args.out)
        elif key == "f" and os.path.isfile(H5):
            results[key] = so2sat_patch(args.out, args.minutes)
        write(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
