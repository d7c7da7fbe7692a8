"""Command line for servers and clusters: the classify job without QGIS.

    python -m plugin.cli classify --vhr ortho.tif --s2-summer s2.tif --out functions.tif
    python -m plugin.cli classify --s2-winter s2.tif --out map.tif --dask local:2
    python -m plugin.cli classify ... --dask tcp://scheduler:8786
    python -m plugin.cli models

It offers the options of the Processing algorithm ``urbanfunctions:classify`` (the same names,
lower case with dashes) and needs GDAL, numpy and onnxruntime, not QGIS. Progress goes to
stderr, a JSON summary of the run to stdout. Ctrl-C or SIGTERM (a batch system's cancel)
cancels: nothing is written; a second Ctrl-C interrupts at once. Exit status: 0 done, 1 failed,
2 bad arguments or inputs, 130 cancelled.
"""
import argparse
import json
import os
import signal
import sys
import threading

from .core.model_card import MODALITIES, MODALITY_LABELS
from .core.inference_modes import MODES

EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 1, 2, 130


def _extent(text):
    """xmin,ymin,xmax,ymax[,CRS] (CRS: EPSG:xxxx or any definition GDAL reads; default the
    inputs' CRS) -> (xmin, ymin, xmax, ymax, crs_wkt or None)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) < 4:
        raise argparse.ArgumentTypeError("write xmin,ymin,xmax,ymax[,EPSG:code]")
    try:
        box = [float(v) for v in parts[:4]]
    except ValueError:
        raise argparse.ArgumentTypeError("xmin,ymin,xmax,ymax must be numbers") from None
    crs = ",".join(parts[4:]) or None
    if crs:
        from osgeo import osr
        srs = osr.SpatialReference()
        try:
            if srs.SetFromUserInput(crs) != 0:
                raise RuntimeError(crs)
        except RuntimeError:
            raise argparse.ArgumentTypeError(f"unknown CRS {crs!r}") from None
        crs = srs.ExportToWkt()
    return tuple(box) + (crs,)


def _aoi(path):
    """(union of the polygons of a vector file as WKT, its CRS as WKT)."""
    from osgeo import ogr
    from .core.errors import InputError
    ds = ogr.Open(path)
    if ds is None:
        raise InputError(f"Area of interest: cannot open {path!r} as a vector file.")
    layer = ds.GetLayer(0)
    union = None
    for feat in layer:
        geom = feat.GetGeometryRef()
        if geom is None or ogr.GT_Flatten(geom.GetGeometryType()) not in (
                ogr.wkbPolygon, ogr.wkbMultiPolygon):
            continue
        union = geom.Clone() if union is None else union.Union(geom)
    if union is None:
        raise InputError(f"Area of interest: {path!r} holds no polygon.")
    srs = layer.GetSpatialRef()
    if srs is None:
        raise InputError(f"Area of interest: {path!r} has no CRS.")
    return union.ExportToWkt(), srs.ExportToWkt()


def _whole_number(minimum):
    """argparse type: an int of at least ``minimum``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value
    return parse


_positive, _not_negative = _whole_number(1), _whole_number(0)


def build_parser():
    ap = argparse.ArgumentParser(prog="python -m plugin.cli",
                                 description="Urban Functions without QGIS.")
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("classify", help="map urban functions (urbanfunctions:classify)",
                       description="Map urban functions from any subset of the inputs a model "
                       "accepts; the options are those of urbanfunctions:classify.")
    for m in MODALITIES:
        c.add_argument("--" + m.replace("_", "-"), dest=m, metavar="RASTER",
                       help=MODALITY_LABELS[m])
    c.add_argument("--model", default="", help="installed model name or .onnx path (empty: the "
                   "best fit for the inputs, as in QGIS)")
    c.add_argument("--out", required=True, help="output GeoTIFF (class codes)")
    c.add_argument("--extent", type=_extent, help="xmin,ymin,xmax,ymax[,EPSG:code]")
    c.add_argument("--aoi", help="vector file of polygons: only inside them is mapped")
    c.add_argument("--tile-size", type=_positive, help="output cells (default: the model's)")
    c.add_argument("--overlap", type=_not_negative, help="output cells (default: the model's)")
    c.add_argument("--batch-size", type=_not_negative, default=0,
                   help="tiles per inference call (default 0: 4 on the CPU, from the free "
                        "memory on a GPU)")
    c.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    c.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                   help="fp16: GPU only; the first batch is checked against fp32")
    c.add_argument("--confidence", action="store_true", help="band 2: confidence in percent")
    c.add_argument("--probabilities", action="store_true",
                   help="also OUT_probabilities.tif (float32 per class)")
    c.add_argument("--optional-outputs", action="store_true",
                   help="also the model's optional outputs (e.g. OUT_gates.tif)")
    c.add_argument("--inference-mode", "--patch-mode", dest="inference_mode", choices=MODES,
                   help="fast (one view), accurate (test-time views averaged) or windows "
                        "(patch classifiers: each window alone); default the model's")
    c.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    c.add_argument("--dask", metavar="SCHEDULER",
                   help="run on a Dask cluster: tcp://host:8786, or local:N for N worker "
                   "processes here (inputs and model must be readable by every worker)")
    c.add_argument("--dask-block-rows", type=_positive, default=4,
                   help="tile rows per Dask task (default 4)")
    c.add_argument("--quiet", action="store_true", help="no progress on stderr")
    sub.add_parser("models", help="list the installed models (JSON)")
    return ap


def _progress(quiet):
    state = {"text": None}

    def progress(fraction, message=""):
        if quiet:
            return
        text = f"{100 * fraction:5.1f} % {message}"
        if text != state["text"]:
            state["text"] = text
            print(text, file=sys.stderr, flush=True)
    return progress


def classify(args):
    from .core.engine import ClassifyRequest, run_classification
    from .core.models import default_model_for, find_model
    inputs = {m: getattr(args, m) for m in MODALITIES if getattr(args, m)}
    if not inputs:
        from .core.errors import InputError
        raise InputError("classify: give at least one input (--vhr, --s2-summer, ...).")
    entry = find_model(args.model) if args.model else default_model_for(list(inputs),
                                                                        inputs=inputs)
    extent = args.extent
    if extent is not None and extent[4] is None:
        from .core.grid import plan_grid
        extent = extent[:4] + (plan_grid(entry.card, inputs).crs_wkt,)
    request = ClassifyRequest(
        inputs=inputs, model_path=entry.path, output_path=args.out, extent=extent,
        aoi=_aoi(args.aoi) if args.aoi else None, tile_size=args.tile_size,
        overlap=args.overlap, batch_size=args.batch_size, device=args.device,
        precision=args.precision,
        confidence=args.confidence, probabilities=args.probabilities,
        optional_outputs=args.optional_outputs, overwrite=args.overwrite,
        inference_mode=args.inference_mode, dask_scheduler=args.dask,
        dask_block_rows=args.dask_block_rows)
    cancel = threading.Event()

    def on_signal(signum, _frame):
        # the first Ctrl-C (or SIGTERM, e.g. from a batch system) cancels cleanly; a second
        # Ctrl-C interrupts whatever is waiting (a scheduler that does not answer)
        if cancel.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        cancel.set()
        print("Cancelling (Ctrl-C again to interrupt at once)…", file=sys.stderr, flush=True)
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        log = (lambda msg: None) if args.quiet else (
            lambda msg: print(msg, file=sys.stderr, flush=True))
        log(f"Model: {entry.card.title} ({entry.path})")
        log(entry.card.validation_summary())
        res = run_classification(request, progress=_progress(args.quiet),
                                 is_cancelled=cancel.is_set, log=log)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(json.dumps({
        "output": res.output_path, "manifest": os.path.abspath(res.manifest_path),
        "model": entry.card.name,
        "provider": res.provider, "seconds": round(res.seconds, 3),
        "extra_outputs": res.extra_outputs, "inference_mode": res.inference_mode,
        "class_areas_m2": {a.name: a.area_m2 for a in res.class_areas},
        "dask": None if res.cluster is None else {
            "scheduler": res.cluster["scheduler"], "workers": len(res.cluster["workers"]),
            "blocks": len(res.cluster["blocks"])}}, indent=1))
    return 0


def models(_args):
    from .core.models import list_models
    print(json.dumps([{"name": e.card.name, "version": e.card.version, "path": e.path,
                       "inputs": list(e.card.modalities), "bundled": e.bundled}
                      for e in list_models()], indent=1))
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    from .core.errors import Cancelled, InputError, ModelError, OutputError, UrbanFunctionsError
    try:
        return {"classify": classify, "models": models}[args.command](args)
    except Cancelled as exc:
        print(f"Cancelled: {exc}", file=sys.stderr)
        return EXIT_CANCELLED
    except (InputError, ModelError, OutputError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UrbanFunctionsError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("Interrupted: no output was written.", file=sys.stderr)
        return EXIT_CANCELLED
    except (RuntimeError, ValueError, OSError) as exc:
        # GDAL's and the cluster's own errors (e.g. coordinates outside a CRS): said plainly
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
