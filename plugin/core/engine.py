"""Classify urban functions: the one job every front end (dialog, Processing, CLI) runs.

Inputs are co-registered on the fly (``feeds``), inferred tile by tile with overlap
(``tiling``), blended, and streamed into a GeoTIFF that appears atomically (``class_raster``),
with a run manifest beside it (``manifest``).
"""
import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, Optional

import numpy as np

from . import manifest as run_manifest
from .class_raster import ClassRasterWriter, ValueRasterWriter, encode_classes, encode_values
from .publication import (check_geotiff_path, check_output_path, publish, remove_stale_partials,
                          stage_text)
from .errors import Cancelled, InputError, ModelError
from .feeds import FeedReader
from .grid import plan_grid
from .map_layout import main_map_note, map_layout
from .model_card import read_card
from .patches import PatchReader
from .prefetch import TilePrefetcher
from .runtime import CUDA, InferenceSession, batch_for_memory, gpu_free_bytes
from .inference_modes import MODE_LABELS, apply_view, segmentation_views
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
    batch_size: int = 0                  # 0 = automatic: 4 on CPU, from free memory on a GPU
    device: str = "auto"                 # auto | cpu | cuda
    precision: str = "fp32"              # fp32 | fp16 (GPU only; checked against fp32)
    confidence: bool = False
    probabilities: bool = False          # also write <stem>_probabilities.tif (float32 per class)
    optional_outputs: bool = False       # also the card's optional graph outputs (e.g. gates)
    overwrite: bool = False
    inference_mode: Optional[str] = None  # fast | accurate | windows (patch classifiers) (None:
                                         # the card's default; see core.inference_modes)
    dask_scheduler: Optional[str] = None  # "tcp://host:8786" or "local:N": run on Dask
    dask_block_rows: int = 4             # tile rows per Dask task


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
    inference_mode: Optional[str] = None    # the mode that ran (core.inference_modes)
    cluster: Optional[dict] = None      # Dask runs: scheduler, workers, per-block timings
    # what the map at output_path holds and what is beside it (core.map_layout): urban
    # functions, also when the model's own classes are another scheme (So2Sat LCZ)
    classes: tuple = ()
    derived_outputs: tuple = ()


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


def stale_extra_outputs(request, card, written):
    """Files beside the output under the name of an extra output this run does not write
    (e.g. the probabilities of an earlier run asked for them): never deleted, but said."""
    stem = os.path.splitext(request.output_path)[0]
    names = ["probabilities"] + [d.name for d in map_layout(card).derived]
    return [f"{stem}_{n}.tif" for n in names
            if n not in written and os.path.exists(f"{stem}_{n}.tif")]


def written_derived(request, card):
    """The derived outputs this run writes beside the map (optional graph outputs only on
    request; for a model whose map is derived functions, its own classes: core.map_layout)."""
    return [d for d in map_layout(card).derived if not d.optional or request.optional_outputs]


def extra_output_specs(request, card):
    """name -> (kind, derive, codes, make_writer) of the rasters written beside the class map:
    ``derive`` maps (probs [C, n, W], graph outputs {name: [B, n, W]}) to what the raster
    holds; kind ``values`` (float32 bands) or ``classes`` (codes ``codes``); ``make_writer(path,
    grid)`` opens its writer. A pure function of the request and card, so a cluster worker
    derives exactly what an in-process run does."""
    index = {c.code: i for i, c in enumerate(card.classes)}
    specs = {}
    if request.probabilities:
        specs["probabilities"] = ("values", _probabilities, None, lambda path, grid: (
            ValueRasterWriter(path, grid, [f"P({c.label})" for c in card.classes],
                              f"Class probabilities by {card.name}")))
    for d in written_derived(request, card):
        if d.kind == "class_sum":
            specs[d.name] = ("values", _ClassSum([index[c] for c in d.codes]), None,
                             lambda path, grid, d=d: ValueRasterWriter(
                                 path, grid, [d.label], d.description))
        elif d.kind == "graph_output":
            specs[d.name] = ("values", _GraphOutput(d.name), None,
                             lambda path, grid, d=d: ValueRasterWriter(
                                 path, grid, list(d.bands), d.description or d.label))
        else:
            specs[d.name] = ("classes", _ClassGroups([[index[c] for c in src]
                                                      for _, src in d.groups]),
                             np.array([g.code for g, _ in d.groups], np.uint8),
                             lambda path, grid, d=d: ClassRasterWriter(
                                 path, grid, [g for g, _ in d.groups],
                                 description=d.description, band_name=d.label))
    return specs


def _probabilities(p, g):
    return p


class _ClassSum:
    def __init__(self, idx):
        self.idx = idx

    def __call__(self, p, g):
        # a sum of float32 probabilities can pass 1 by a rounding step
        return np.minimum(p[self.idx].sum(axis=0, keepdims=True), 1.0)


class _GraphOutput:
    def __init__(self, name):
        self.name = name

    def __call__(self, p, g):
        return g[self.name]


class _ClassGroups:
    def __init__(self, groups):
        self.groups = groups

    def __call__(self, p, g):
        return np.stack([p[i].sum(axis=0) for i in self.groups])


def _extra_writers(request, card, grid, paths):
    """name -> writer of the rasters written beside the class map (see extra_output_specs)."""
    writers = {}
    try:
        for name, (_, _, _, make_writer) in extra_output_specs(request, card).items():
            writers[name] = make_writer(paths[name], grid)
    except BaseException:
        for writer in writers.values():
            writer.discard()
        raise
    return writers


class StripEncoder:
    """Blended rows -> what the rasters store (:func:`encode_classes` / :func:`encode_values`):
    the same code in-process and on a cluster worker, whose payload is compact (class codes,
    confidence, the extra outputs' bands) and is written by :func:`write_strip`."""

    def __init__(self, request, card):
        layout = map_layout(card)
        self.codes = np.array([c.code for c in layout.classes], np.uint8)
        self.main = (_ClassGroups([list(g) for g in layout.groups]) if layout.derives_functions
                     else _probabilities)
        self.confidence = bool(request.confidence)
        self.extras = extra_output_specs(request, card)

    def __call__(self, first, probs, valid, graph):
        extras = {}
        for name, (kind, derive, codes, _) in self.extras.items():
            values = derive(probs, graph)
            extras[name] = (encode_values(values, valid) if kind == "values" else
                            encode_classes(codes, values, valid, False))
        return {"row": first,
                "main": encode_classes(self.codes, self.main(probs, graph), valid,
                                       self.confidence),
                "extras": extras}


def write_strip(writer, extra_writers, payload):
    writer.write_encoded(payload["row"], payload["main"])
    for name, extra in extra_writers.items():
        extra.write_encoded(payload["row"], payload["extras"][name])


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


@dataclass
class TilePlan:
    """What every part of a run (in-process or a cluster worker) derives alike from the request:
    the card, the inputs used, the grid and the tiles."""
    card: object
    inputs: dict
    grid: object
    tile: int
    overlap: int
    th: int
    tw: int
    rows: list
    cols: list
    weights: object
    patch_task: bool
    # segmentation: the inference mode, its test-time views and why it differs from the
    # request (patch classifiers resolve theirs in the PatchReader)
    mode: Optional[str] = None
    views: tuple = ("identity",)
    mode_note: Optional[str] = None

    @property
    def total(self):
        return len(self.rows) * len(self.cols)


CPU_BATCH = 4


def tile_input_bytes(plan):
    """Bytes of float32 input of one batch unit: a tile of every input (a fusion network), or
    the 64 windows of a patch classifier's chunk."""
    card = plan.card
    if plan.patch_task:
        p = card.patch
        return 64 * len(card.inputs[0].bands) * p.patch_px * p.patch_px * 4
    cell = plan.grid.cell
    return sum(len(spec.bands) * math.ceil(plan.th * cell / spec.gsd_m)
               * math.ceil(plan.tw * cell / spec.gsd_m) * 4
               for spec in card.inputs if spec.modality in plan.inputs)


def with_batch_size(request, session, plan, say):
    """The request with its batch size resolved: as given, else 4 on the CPU and, on a GPU,
    as many tiles as fit in half of its free memory (:func:`.runtime.batch_for_memory`)."""
    if request.batch_size:
        return request
    batch = CPU_BATCH
    if session.provider == CUDA:
        free = gpu_free_bytes()
        if free is None:
            say(f"Batch size {batch}: the GPU's free memory could not be read.")
        else:
            batch = batch_for_memory(free, tile_input_bytes(plan))
            say(f"Batch size {batch}, from the GPU's free memory ({free / 2 ** 30:.1f} GiB).")
    return replace(request, batch_size=batch)


def plan_job(request, say=lambda msg: None, card=None):
    """:class:`TilePlan` of a request; ``say`` gets the notes a user should read."""
    card = card or read_card(request.model_path)
    inputs = {m: p for m, p in request.inputs.items() if p}
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
    if request.batch_size < 0:
        raise InputError("Batch size must be at least 1 (or 0 for automatic).")
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
    mode, views, note = (None, ("identity",), None) if patch_task else \
        segmentation_views(card.output, request.inference_mode)
    return TilePlan(card, inputs, grid, tile, overlap, th, tw, list(rows), list(cols),
                    blend_weights(th, tw, overlap), patch_task, mode, views, note)


def open_reader(plan, request):
    if plan.patch_task:
        return PatchReader(plan.card, plan.inputs, plan.grid, request.aoi, request.inference_mode)
    return FeedReader(plan.card, plan.inputs, plan.grid, request.aoi)


def halo_start(plan, first_row_index):
    """The first tile row whose tiles reach into the rows of tile row ``first_row_index``:
    a block that starts there runs these tiles too, so its cells get every tile's share."""
    top = plan.rows[first_row_index]
    return next(j for j, r in enumerate(plan.rows) if r + plan.th > top)


def run_tile_rows(plan, request, session, reader, row_range, emit, timings, is_cancelled,
                  progress=None, eta=None):
    """The tile loop over tile rows ``row_range`` (start, stop): read (ahead, in a thread),
    infer, blend; ``emit(first_row, probs, valid, graph)`` for every finished strip of rows.
    Rows above the first tile row of the range (its halo) are blended but not emitted."""
    card, grid, th, tw = plan.card, plan.grid, plan.th, plan.tw
    rows, cols, weights = plan.rows, plan.cols, plan.weights
    progress = progress or (lambda fraction, message: None)
    total = plan.total
    start, stop = row_range
    first = halo_start(plan, start) if start > 0 else 0
    keep_from = rows[start] if start > 0 else 0
    acc = StripAccumulator(len(card.classes), grid.width, th, top=rows[first])
    # the network's other outputs, blended over tiles with the same weights
    graph_accs = {d.name: (d.output, StripAccumulator(len(d.bands), grid.width, th,
                                                      top=rows[first]))
                  for d in written_derived(request, card) if d.kind == "graph_output"}
    done = 0
    read_here = 0.0
    batch_size = request.batch_size or CPU_BATCH

    def batch_now():
        # after a CUDA failure the CPU takes over: not with a batch sized for the GPU's memory
        return min(batch_size, CPU_BATCH) if getattr(session, "fallback", None) else batch_size
    depth = (1 if plan.patch_task else batch_size) if PREFETCH else 0
    windows = [(col, row, tw, th) for row in rows[first:stop] for col in cols]
    with TilePrefetcher(reader.read, windows, depth) as tiles:
        tile_stream = iter(tiles)
        for ri in range(first, stop):
            row = rows[ri]
            batch = []
            for ci, col in enumerate(cols):
                if is_cancelled():
                    raise Cancelled("Cancelled by the user; no output was written.")
                (data, valid), seconds = next(tile_stream)
                timings["read_s"] += seconds
                read_here += seconds
                if not valid.any():  # skip inference where no input has data
                    acc.add(np.zeros((len(card.classes), th, tw), np.float32),
                            weights, col, row, valid)
                    for _, gacc in graph_accs.values():
                        gacc.add(np.zeros((gacc.n_classes, th, tw), np.float32),
                                 weights, col, row, valid)
                elif plan.patch_task:
                    # the last tile of a row/column is shifted back to end flush with the grid;
                    # its cells that an earlier tile already classified (same window, same
                    # result) are not classified again
                    fresh = _fresh_cells(rows, cols, ri, ci, th, tw)
                    t = time.perf_counter()

                    def on_chunk(k, of, done=done):
                        if is_cancelled():
                            raise Cancelled("Cancelled by the user; no output was written.")
                        fraction = (done + k / max(of, 1)) / total
                        progress(fraction, f"Tile {done + 1} of {total}: {k} of {of} cells"
                                 + (eta.text(fraction) if eta else ""))
                    probs = reader.infer(session, data, th, tw, chunk=64 * batch_now(),
                                         only=fresh, on_chunk=on_chunk)
                    timings["infer_s"] += time.perf_counter() - t
                    t = time.perf_counter()
                    acc.add(probs, weights * fresh, col, row, valid)
                    timings["blend_s"] += time.perf_counter() - t
                else:
                    batch.append((col, data, valid))
                if len(batch) >= batch_now() or (col == cols[-1] and batch):
                    _infer(session, card, batch, acc, weights, row, timings, graph_accs,
                           plan.views)
                    batch = []
                done += 1
                progress(done / total, f"Tile {done} of {total}"
                         + (eta.text(done / total) if eta else ""))
            next_row = rows[ri + 1] if ri + 1 < len(rows) else grid.height
            t = time.perf_counter()
            top, probs, valid = acc.flush_until(next_row)
            graph = {name: gacc.flush_until(next_row)[1]
                     for name, (_, gacc) in graph_accs.items()}
            if top >= keep_from:
                emit(top, probs, valid, graph)
            timings["write_s"] += time.perf_counter() - t
    # read_s is the reading itself (overlapped with inference when read ahead); read_wait_s
    # what inference waited for it
    timings["read_wait_s"] = timings.get("read_wait_s", 0.0) + (
        tiles.waited_s if depth else read_here)
    return done


def run_classification(request: ClassifyRequest, progress: Optional[Callable] = None,
                       is_cancelled: Optional[Callable] = None,
                       log: Optional[Callable] = None) -> ClassifyResult:
    """Run the whole job; raises UrbanFunctionsError subclasses with user-facing messages.
    With ``request.dask_scheduler`` the tiles run on a Dask cluster (:mod:`.distributed`)
    and the map is the same, bit for bit."""
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
    for path in stale_extra_outputs(request, card, extra_paths):
        say(f"Warning: {path} is from an earlier run and is left as it is: this run does not "
            "write it, so it does not belong to the new map. Delete it, or ask for it again.")
    plan = plan_job(request, say, card)
    grid = plan.grid
    layout = map_layout(card)
    if layout.derives_functions:
        say(main_map_note(card, layout, extra_paths[layout.own_classes]))
    untaught = (card.raw.get("training") or {}).get("classes_not_predicted")
    if untaught:
        say(f"This model never predicts {', '.join(untaught)}: its training labels had none.")
    say(f"Grid {grid.width} x {grid.height} cells of {grid.cell:g} m; {plan.total} tiles of "
        f"{plan.tw} x {plan.th} cells, overlap {plan.overlap}.")

    if request.precision == "fp16" and (card.raw.get("runtime") or {}).get("fp16") is False:
        raise ModelError(f"The card of {card.name} does not allow float16: use float32.")
    session = InferenceSession(request.model_path, request.device, on_fallback=say,
                               precision=request.precision)
    _check_session(session, card)
    say(f"onnxruntime provider: {session.provider} (requested {', '.join(session.requested)})"
        + ("; inputs and outputs through I/O binding." if session.io_binding else "."))
    request = with_batch_size(request, session, plan, say)
    timings = {"read_s": 0.0, "infer_s": 0.0, "blend_s": 0.0, "write_s": 0.0}
    progress(0.0, "Reading inputs")

    writer = None
    extras = {}
    inference_mode = None
    cluster = None
    eta = TimeLeft(grid.width * grid.height)
    try:
        with open_reader(plan, request) as reader:
            for source in reader.sources.values():
                for note in source.notes:
                    say(note)
            mode, note = (reader.mode, reader.mode_note) if plan.patch_task else \
                (plan.mode, plan.mode_note)
            if note:
                say(note)
            views = reader.views if plan.patch_task else plan.views
            say(f"Inference mode: {MODE_LABELS[mode]}."
                + (f" Views: {', '.join(views)}." if len(views) > 1 else ""))
            inference_mode = mode
            writer = ClassRasterWriter(request.output_path, grid, layout.classes,
                                       confidence=request.confidence,
                                       description=f"Urban functions by {card.name} {card.version}"
                                       + (" (derived from its classes)"
                                          if layout.derives_functions else ""),
                                       confidence_name=layout.confidence_name)
            extras = _extra_writers(request, card, grid, extra_paths)
            encode = StripEncoder(request, card)

            def emit(first, probs, valid, graph):
                write_strip(writer, extras, encode(first, probs, valid, graph))
            if request.dask_scheduler:
                from .distributed import run_on_dask
                cluster = run_on_dask(request, plan, lambda p: write_strip(writer, extras, p),
                                      timings, is_cancelled, progress, say)
            else:
                run_tile_rows(plan, request, session, reader, (0, len(plan.rows)), emit, timings,
                              is_cancelled, progress, eta)
            if is_cancelled():
                raise Cancelled("Cancelled by the user; no output was written.")
            if not writer.counts.any():
                raise InputError(
                    "No cell of the map has data from any input (all nodata, an extent or area "
                    "of interest that misses the data, or inputs smaller than one "
                    f"{grid.cell:g} m cell): nothing was written.")
            if plan.patch_task and cluster is None:
                timings["patches"] = reader.patches_classified
                timings["network_pixels"] = reader.trunk_pixels
            progress(1.0, "Writing overviews")
            t = time.perf_counter()
            areas = [ClassArea(c.code, c.name, c.label, c.color, int(n),
                               float(n) * grid.cell * grid.cell)
                     for c, n in zip(layout.classes, writer.counts)]
            seconds = time.perf_counter() - t_start
            mpath = manifest_path_for(request.output_path)
            text = run_manifest.build(request, card, grid, session, plan.tile, plan.overlap,
                                      plan.total, timings, seconds, areas, messages, extra_paths,
                                      inference_mode, cluster, plan.views)
            # everything is finished and read back before anything is published, so a full
            # disk or a failed extra output leaves no file under any final name
            for extra in extras.values():
                extra.finish()
            writer.finish()
            staged_manifest = stage_text(mpath, text)
            published = []
            try:
                while extras:  # beside files first: the class map appearing means the run is done
                    _, extra = extras.popitem()
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
        for extra in extras.values():
            extra.discard()
        if writer is not None:
            writer.discard()
        raise
    return ClassifyResult(os.path.abspath(request.output_path), mpath, session.provider,
                          session.providers, time.perf_counter() - t_start, areas, card, grid,
                          timings, messages, {k: os.path.abspath(v) for k, v in extra_paths.items()},
                          inference_mode, cluster, layout.classes,
                          tuple(written_derived(request, card)))


def _infer(session, card, batch, acc, weights, row, timings, graph_accs=None,
           views=("identity",)):
    feed = {name: np.concatenate([b[1][name] for b in batch]) for name in batch[0][1]}
    graph_accs = graph_accs or {}
    names = [card.output.name] + [output for output, _ in graph_accs.values()]
    t = time.perf_counter()
    outs = None
    for name in views:
        # every input and output is [N, C, H, W] over the same ground: a view of all of them
        # is the same view of the tile
        seen = session.run(names, {k: np.ascontiguousarray(apply_view(v, name))
                                   for k, v in feed.items()})
        seen = [apply_view(o, name) for o in seen]
        outs = seen if outs is None else [a + b for a, b in zip(outs, seen)]
    if len(views) > 1:
        outs = [o * np.float32(1.0 / len(views)) for o in outs]
    timings["infer_s"] += time.perf_counter() - t
    t = time.perf_counter()
    for k, (col, _, valid) in enumerate(batch):
        acc.add(outs[0][k], weights, col, row, valid)
        for out, (_, gacc) in zip(outs[1:], graph_accs.values()):
            gacc.add(out[k], weights, col, row, valid)
    timings["blend_s"] += time.perf_counter() - t
