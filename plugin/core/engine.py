"""Classify urban functions: the one job every front end (dialog, Processing, CLI) runs.

Inputs are co-registered on the fly (``feeds``), inferred tile by tile with overlap
(``tiling``), blended, and streamed into a GeoTIFF that appears atomically (``class_raster``),
with a run manifest beside it (``manifest``).
"""
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import numpy as np

from . import manifest as run_manifest
from .class_raster import ClassRasterWriter, ValueRasterWriter
from .publication import (check_geotiff_path, check_output_path, publish, remove_stale_partials,
                          stage_text)
from .errors import Cancelled, InputError, ModelError
from .feeds import FeedReader
from .grid import plan_grid
from .model_card import read_card
from .patches import PatchReader
from .prefetch import TilePrefetcher
from .runtime import InferenceSession
from .shared_trunk import MODE_LABELS
from .tiling import StripAccumulator, blend_weights, tile_starts

# tiles read ahead in a background thread while onnxruntime runs (0: read in line, no overlap);
# a dense model reads at most one batch ahead, a patch model one tile (its windows are large)
PREFETCH = True


@dataclass
class ClassifyRequest:
    inputs: Dict[str, str]               # modality -> raster path; any subset the model accepts
    model_path: str
    output_path: str
    extent: Optional[tuple] = None       # (xmin, ymin, xmax, ymax, crs_wkt)
    aoi: Optional[tuple] = None          # (polygon_wkt, crs_wkt): its bbox, masked outside
    tile_size: Optional[int] = None      # output cells; default from the model card
    overlap: Optional[int] = None
    batch_size: int = 4
    device: str = "auto"                 # auto | cpu | cuda
    confidence: bool = False
    probabilities: bool = False          # also write <stem>_probabilities.tif (float32 per class)
    optional_outputs: bool = False       # also the card's optional graph outputs (e.g. gates)
    overwrite: bool = False
    patch_mode: Optional[str] = None     # patch classifiers: fast | accurate | windows (None:
                                         # the card's default; see core.shared_trunk)


@dataclass(frozen=True)
class ClassArea:
    code: int
    name: str
    label: str
    color: str
    cells: int
    area_m2: float


@dataclass
class ClassifyResult:
    output_path: str
    manifest_path: str
    provider: str
    providers: list
    seconds: float
    class_areas: list
    card: object
    grid: object
    timings: dict = field(default_factory=dict)
    messages: list = field(default_factory=list)
    extra_outputs: dict = field(default_factory=dict)   # name -> path (probabilities, derived)
    patch_mode: Optional[str] = None    # patch classifiers: the mode that ran


MIN_GRID_CELLS = 4   # a map of fewer cells across says nothing (a 1 x 1 pixel input, a sliver)


def check_big_enough(grid):
    """The grid needs a few cells across (each input is checked on its own when it is opened);
    an extent or area of interest can still cut a sliver."""
    if min(grid.width, grid.height) < MIN_GRID_CELLS:
        raise InputError(
            f"The area to process is only {grid.width} x {grid.height} cells of {grid.cell:g} m: "
            f"too small to map (at least {MIN_GRID_CELLS} x {MIN_GRID_CELLS} cells). Check the "
            "extent or area of interest.")


class TimeLeft:
    """"; N cells/s; about N s/min left" from the time so far and the fraction done."""

    def __init__(self, cells):
        self.t0 = time.perf_counter()
        self.cells = cells

    def text(self, fraction):
        elapsed = time.perf_counter() - self.t0
        if fraction <= 0.002 or elapsed < 2.0:
            return ""
        left = elapsed * (1.0 - fraction) / fraction
        rate = f"; {fraction * self.cells / elapsed:,.0f} cells/s"
        return rate + (f"; about {left:.0f} s left" if left < 90 else
                       f"; about {left / 60:.0f} min left")


def manifest_path_for(output_path):
    return os.path.splitext(output_path)[0] + ".manifest.json"


def side_files(output_path):
    """Files written beside the class map: the run manifest, and the QGIS style (.qml) that
    the plugin saves as the map's default style. Never replaced unless overwriting is asked."""
    stem = os.path.splitext(output_path)[0]
    return [stem + ".manifest.json", stem + ".qml"]


def extra_output_paths(request, card):
    """name -> path of the rasters written beside the class map."""
    stem = os.path.splitext(request.output_path)[0]
    names = (["probabilities"] if request.probabilities else []) + \
        [d.name for d in written_derived(request, card)]
    return {name: f"{stem}_{name}.tif" for name in names}


def written_derived(request, card):
    """The card's derived outputs this run writes (optional graph outputs only on request)."""
    return [d for d in card.derived_outputs if not d.optional or request.optional_outputs]


def _extra_writers(request, card, grid, paths):
    """name -> (writer, (probs [C, n, W], graph outputs {name: [B, n, W]}) -> what it writes)."""
    index = {c.code: i for i, c in enumerate(card.classes)}
    writers = {}
    try:
        if request.probabilities:
            writers["probabilities"] = (ValueRasterWriter(
                paths["probabilities"], grid, [f"P({c.label})" for c in card.classes],
                f"Class probabilities by {card.name}"), lambda p, g: p)
        for d in written_derived(request, card):
            if d.kind == "class_sum":
                idx = [index[c] for c in d.codes]
                writers[d.name] = (ValueRasterWriter(paths[d.name], grid, [d.label], d.description),
                                   lambda p, g, idx=idx: p[idx].sum(axis=0, keepdims=True))
            elif d.kind == "graph_output":
                writers[d.name] = (ValueRasterWriter(paths[d.name], grid, list(d.bands),
                                                     d.description or d.label),
                                   lambda p, g, name=d.name: g[name])
            else:
                groups = [[index[c] for c in src] for _, src in d.groups]
                writers[d.name] = (ClassRasterWriter(
                    paths[d.name], grid, [g for g, _ in d.groups], description=d.description,
                    band_name=d.label), lambda p, g, groups=groups: np.stack(
                        [p[i].sum(axis=0) for i in groups]))
    except BaseException:
        for writer, _ in writers.values():
            writer.discard()
        raise
    return writers


def resolve_tiling(card, grid, tile_size, overlap, log):
    """Tile and overlap in output cells, rounded to what the model's grids allow."""
    m = card.tile_multiple()
    tile = int(tile_size or card.output.default_tile)
    ov = int(card.output.default_overlap if overlap is None else overlap)
    if tile <= 0 or ov < 0:
        raise InputError("Tile size must be positive and overlap not negative.")
    rounded = max(m, int(math.ceil(tile / m)) * m)
    if rounded != tile:
        log(f"Tile size {tile} rounded up to {rounded} (the model needs multiples of {m}).")
    tile = rounded
    ov = int(math.ceil(ov / m)) * m
    if ov >= tile:
        raise InputError(f"Overlap ({ov}) must be smaller than the tile size ({tile}).")
    return tile, ov


def _fresh_cells(rows, cols, ri, ci, th, tw):
    """[th, tw] bool: the cells of tile (ri, ci) that no earlier tile (above or to the left)
    covers."""
    fresh = np.ones((th, tw), bool)
    if ci > 0:
        fresh[:, :max(0, cols[ci - 1] + tw - cols[ci])] = False
    if ri > 0:
        fresh[:max(0, rows[ri - 1] + th - rows[ri]), :] = False
    return fresh


def _check_session(session, card):
    expected = card.onnx_inputs
    if set(session.input_names) != expected:
        raise ModelError(f"The ONNX graph's inputs {sorted(session.input_names)} do not match its "
                         f"card {sorted(expected)}; the model file is inconsistent.")


def run_classification(request: ClassifyRequest, progress: Optional[Callable] = None,
                       is_cancelled: Optional[Callable] = None,
                       log: Optional[Callable] = None) -> ClassifyResult:
    """Run the whole job; raises UrbanFunctionsError subclasses with user-facing messages."""
    t_start = time.perf_counter()
    messages = []

    def say(msg):
        messages.append(msg)
        if log:
            log(msg)

    progress = progress or (lambda fraction, message: None)
    is_cancelled = is_cancelled or (lambda: False)
    inputs = {m: p for m, p in request.inputs.items() if p}
    protected = list(inputs.values()) + ([request.model_path] if request.model_path else [])
    check_output_path(request.output_path, request.overwrite, protected)
    check_geotiff_path(request.output_path)
    if not request.model_path or not os.path.isfile(request.model_path):
        raise ModelError(f"Model file not found: {request.model_path!r}.")
    card = read_card(request.model_path)
    extra_paths = extra_output_paths(request, card)
    for path in list(extra_paths.values()) + side_files(request.output_path):
        check_output_path(path, request.overwrite, protected)
    for path in [request.output_path] + list(extra_paths.values()) + \
            [manifest_path_for(request.output_path)]:
        remove_stale_partials(path, say)
    ignored = [m for m in card.ignored_inputs if m in inputs]
    if ignored:
        kept = [m for m in inputs if m not in ignored]
        if not kept:
            raise InputError(
                f"The model {card.name} leaves out {', '.join(ignored)}: on the held-out blocks "
                "of its training the map was better without it. Give it the other inputs it "
                f"was trained on ({', '.join(m for m in card.modalities if m not in ignored)}).")
        say(f"Left out {', '.join(ignored)}: the model's held-out blocks scored better "
            "without it (see the card's input check).")
        inputs = {m: inputs[m] for m in kept}
    if request.batch_size < 1:
        raise InputError("Batch size must be at least 1.")
    grid = plan_grid(card, inputs, request.extent, request.aoi)
    check_big_enough(grid)
    tile, overlap = resolve_tiling(card, grid, request.tile_size, request.overlap, say)
    patch_task = card.patch is not None
    if patch_task and overlap:
        say("Overlap is not needed by a patch classifier (every cell has its own patch): 0.")
        overlap = 0
    th, tw = min(tile, grid.height), min(tile, grid.width)
    rows = tile_starts(grid.height, th, th - overlap if th < grid.height else th)
    cols = tile_starts(grid.width, tw, tw - overlap if tw < grid.width else tw)
    weights = blend_weights(th, tw, overlap)
    total = len(rows) * len(cols)
    say(f"Grid {grid.width} x {grid.height} cells of {grid.cell:g} m; {total} tiles of "
        f"{tw} x {th} cells, overlap {overlap}.")

    session = InferenceSession(request.model_path, request.device)
    _check_session(session, card)
    say(f"onnxruntime provider: {session.provider} (requested {', '.join(session.requested)}).")
    timings = {"read_s": 0.0, "infer_s": 0.0, "blend_s": 0.0, "write_s": 0.0}
    progress(0.0, "Reading inputs")

    writer = None
    extras = {}
    patch_mode = None
    eta = TimeLeft(grid.width * grid.height)
    try:
        if patch_task:
            reader = PatchReader(card, inputs, grid, request.aoi, request.patch_mode)
        else:
            reader = FeedReader(card, inputs, grid, request.aoi)
        with reader:
            for source in reader.sources.values():
                for note in source.notes:
                    say(note)
            if patch_task:
                if reader.mode_note:
                    say(reader.mode_note)
                say(f"Patch mode: {MODE_LABELS[reader.mode]}.")
                patch_mode = reader.mode
            writer = ClassRasterWriter(request.output_path, grid, card.classes,
                                       confidence=request.confidence,
                                       description=f"Urban functions by {card.name} {card.version}")
            extras = _extra_writers(request, card, grid, extra_paths)
            acc = StripAccumulator(len(card.classes), grid.width, th)
            # the network's other outputs, blended over tiles with the same weights
            graph_accs = {d.name: (d.output, StripAccumulator(len(d.bands), grid.width, th))
                          for d in written_derived(request, card) if d.kind == "graph_output"}
            done = 0
            depth = (1 if patch_task else max(1, request.batch_size)) if PREFETCH else 0
            windows = [(col, row, tw, th) for row in rows for col in cols]
            with TilePrefetcher(reader.read, windows, depth) as tiles:
                tile_stream = iter(tiles)
                for ri, row in enumerate(rows):
                    batch = []
                    for ci, col in enumerate(cols):
                        if is_cancelled():
                            raise Cancelled("Cancelled by the user; no output was written.")
                        (data, valid), seconds = next(tile_stream)
                        timings["read_s"] += seconds
                        if not valid.any():  # skip inference where no input has data
                            acc.add(np.zeros((len(card.classes), th, tw), np.float32),
                                    weights, col, row, valid)
                            for _, gacc in graph_accs.values():
                                gacc.add(np.zeros((gacc.n_classes, th, tw), np.float32),
                                         weights, col, row, valid)
                        elif patch_task:
                            # the last tile of a row/column is shifted back to end flush with
                            # the grid; its cells that an earlier tile already classified (same
                            # window, same result) are not classified again
                            fresh = _fresh_cells(rows, cols, ri, ci, th, tw)
                            t = time.perf_counter()

                            def on_chunk(k, of, done=done):
                                if is_cancelled():
                                    raise Cancelled("Cancelled by the user; no output was "
                                                    "written.")
                                progress((done + k / max(of, 1)) / total,
                                         f"Tile {done + 1} of {total}: {k} of {of} cells"
                                         + eta.text((done + k / max(of, 1)) / total))
                            probs = reader.infer(session, data, th, tw,
                                                 chunk=64 * request.batch_size, only=fresh,
                                                 on_chunk=on_chunk)
                            timings["infer_s"] += time.perf_counter() - t
                            t = time.perf_counter()
                            acc.add(probs, weights * fresh, col, row, valid)
                            timings["blend_s"] += time.perf_counter() - t
                        else:
                            batch.append((col, data, valid))
                        if len(batch) == request.batch_size or (col == cols[-1] and batch):
                            _infer(session, card, batch, acc, weights, row, timings, graph_accs)
                            batch = []
                        done += 1
                        progress(done / total, f"Tile {done} of {total}" + eta.text(done / total))
                    next_row = rows[ri + 1] if ri + 1 < len(rows) else grid.height
                    t = time.perf_counter()
                    first, probs, valid = acc.flush_until(next_row)
                    writer.write_rows(first, probs, valid)
                    graph = {name: gacc.flush_until(next_row)[1]
                             for name, (_, gacc) in graph_accs.items()}
                    for extra, derive in extras.values():
                        extra.write_rows(first, derive(probs, graph), valid)
                    timings["write_s"] += time.perf_counter() - t
            # read_s is the reading itself (overlapped with inference when read ahead);
            # read_wait_s what inference waited for it
            timings["read_wait_s"] = tiles.waited_s if depth else timings["read_s"]
            if is_cancelled():
                raise Cancelled("Cancelled by the user; no output was written.")
            if not writer.counts.any():
                raise InputError(
                    "No cell of the map has data from any input (all nodata, an extent or area "
                    "of interest that misses the data, or inputs smaller than one "
                    f"{grid.cell:g} m cell): nothing was written.")
            if patch_task:
                timings["patches"] = reader.patches_classified
                timings["network_pixels"] = reader.trunk_pixels
            progress(1.0, "Writing overviews")
            t = time.perf_counter()
            areas = [ClassArea(c.code, c.name, c.label, c.color, int(n),
                               float(n) * grid.cell * grid.cell)
                     for c, n in zip(card.classes, writer.counts)]
            seconds = time.perf_counter() - t_start
            mpath = manifest_path_for(request.output_path)
            text = run_manifest.build(request, card, grid, session, tile, overlap, total,
                                      timings, seconds, areas, messages, extra_paths, patch_mode)
            # everything is finished and read back before anything is published, so a full
            # disk or a failed extra output leaves no file under any final name
            for extra, _ in extras.values():
                extra.finish()
            writer.finish()
            staged_manifest = stage_text(mpath, text)
            published = []
            try:
                while extras:  # beside files first: the class map appearing means the run is done
                    _, (extra, _) = extras.popitem()
                    published.append(extra.publish(request.overwrite))
                published.append(writer.publish(request.overwrite))
                writer = None
                publish(staged_manifest, mpath, request.overwrite)
            except BaseException:
                for path in published:
                    for p in (path, path + ".aux.xml"):
                        if os.path.exists(p):
                            os.remove(p)
                raise
            finally:
                if os.path.exists(staged_manifest):
                    os.remove(staged_manifest)
            timings["write_s"] += time.perf_counter() - t
    except BaseException:
        for extra, _ in extras.values():
            extra.discard()
        if writer is not None:
            writer.discard()
        raise
    return ClassifyResult(os.path.abspath(request.output_path), mpath, session.provider,
                          session.providers, time.perf_counter() - t_start, areas, card, grid,
                          timings, messages, {k: os.path.abspath(v) for k, v in extra_paths.items()},
                          patch_mode)


def _infer(session, card, batch, acc, weights, row, timings, graph_accs=None):
    feed = {name: np.concatenate([b[1][name] for b in batch]) for name in batch[0][1]}
    graph_accs = graph_accs or {}
    names = [card.output.name] + [output for output, _ in graph_accs.values()]
    t = time.perf_counter()
    outs = session.run(names, feed)
    timings["infer_s"] += time.perf_counter() - t
    t = time.perf_counter()
    for k, (col, _, valid) in enumerate(batch):
        acc.add(outs[0][k], weights, col, row, valid)
        for out, (_, gacc) in zip(outs[1:], graph_accs.values()):
            gacc.add(out[k], weights, col, row, valid)
    timings["blend_s"] += time.perf_counter() - t
