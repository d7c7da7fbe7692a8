"""Classify on a Dask cluster (``dask.distributed``): the same engine, distributed, with the
same map bit for bit.

The output grid is cut into blocks of whole tile rows (``dask_block_rows``, full width). A block
is one task: a worker opens the inputs and the model by path, plans the same grid and tiles as
the client (:func:`.engine.plan_job`), and runs the engine's own tile loop
(:func:`.engine.run_tile_rows`) over its tile rows plus the tile rows above that overlap them
(the blending halo, computed again), so every cell it returns got exactly the tiles, in the same
order, as in-process. It returns compact strips (class codes, confidence, the extra outputs'
bands; :class:`.engine.StripEncoder`). The client keeps a bounded number of blocks in flight and
writes the strips in order into the same atomic writers as an in-process run: memory stays
bounded, and a cancel or an error cancels the futures and leaves no file.

Inputs and model are read by path on the workers: a shared file system, or GDAL paths every
worker can open (``/vsis3/``, ``/vsicurl/``). The workers need the same plugin version
importable (checked) and GDAL, numpy and onnxruntime; not QGIS.

``dask_scheduler``: a scheduler address (``tcp://host:8786``) or ``local:N`` for a
``LocalCluster`` of N worker processes on this machine. Dask reruns the blocks of a worker that
dies; the result is still the same.
"""
import dataclasses
import os
import socket
import sys
import threading
import time
import uuid

from .engine import halo_start
from .errors import Cancelled, InputError

POLL_S = 0.1   # cancel is checked this often while waiting for a block
CONNECT_TIMEOUT_S = 30
WORKERS_TIMEOUT_S = 60
PROGRESS_EVERY_S = 0.5   # a worker reports the tiles done in its block this often


def plan_blocks(plan, block_rows):
    """[(first tile row, stop)] of the blocks: ``block_rows`` tile rows each."""
    n = len(plan.rows)
    step = max(1, int(block_rows))
    return [(i, min(i + step, n)) for i in range(0, n, step)]


def _plugin_version():
    from .manifest import plugin_version
    return plugin_version()


_SESSIONS = {}   # worker process: (model, device, threads) -> InferenceSession


def _ort_threads(workers_per_host):
    """onnxruntime threads for this worker: the host's cores shared by its worker processes."""
    n = 1
    try:
        from distributed import get_worker
        host = get_worker().address.split("://")[-1].rsplit(":", 1)[0]
        n = workers_per_host.get(host, 1)
    except (ImportError, ValueError):
        pass
    return max(1, (os.cpu_count() or 1) // max(1, n))


def _worker_address():
    """The worker's address as the scheduler lists it (host:pid outside a worker)."""
    try:
        from distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def _tile_reporter(topic, block, total):
    """progress(fraction, message) for the tile loop on a worker: the tiles done in this block
    go to the client as Dask events on ``topic`` (at most every PROGRESS_EVERY_S)."""
    if not topic:
        return None
    try:
        from distributed import get_worker
        worker = get_worker()
    except (ImportError, ValueError):
        return None
    last = [0.0]

    def progress(fraction, message=""):
        now = time.perf_counter()
        if now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            worker.log_event(topic, {"block": block, "tiles": int(round(fraction * total))})
    return progress


def classify_block(request, row_range, workers_per_host=None, progress_topic=None):
    """On a worker: the encoded strips of the tile rows ``row_range`` of ``request``'s map."""
    from .engine import StripEncoder, open_reader, plan_job, run_tile_rows
    from .runtime import InferenceSession
    t0 = time.perf_counter()
    ort_threads = _ort_threads(workers_per_host or {})
    plan = plan_job(request)
    key = (request.model_path, request.device, ort_threads, request.precision)
    if key not in _SESSIONS:
        _SESSIONS[key] = InferenceSession(request.model_path, request.device, ort_threads,
                                          precision=request.precision)
    session = _SESSIONS[key]
    timings = {"read_s": 0.0, "infer_s": 0.0, "blend_s": 0.0, "write_s": 0.0}
    encode = StripEncoder(request, plan.card)
    strips = []
    with open_reader(plan, request) as reader:
        tiles = run_tile_rows(plan, request, session, reader, row_range,
                              lambda *strip: strips.append(encode(*strip)), timings,
                              lambda: False,
                              _tile_reporter(progress_topic, row_range[0], plan.total))
    return {"range": list(row_range), "strips": strips, "tiles": tiles,
            "timings": {k: round(v, 3) for k, v in timings.items()},
            "seconds": round(time.perf_counter() - t0, 3),
            "worker": _worker_address(),
            "provider": session.provider, "plugin_version": _plugin_version()}


def _connect(address, is_cancelled=lambda: False):
    """(client, local cluster or None)."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise InputError("Running on a Dask cluster needs the Python package dask[distributed] "
                         "(pip install 'dask[distributed]'); leave the scheduler empty to run "
                         "here.") from None
    if address.startswith("local:"):
        if not os.path.basename(sys.executable).lower().startswith("python"):
            # inside QGIS sys.executable is the qgis binary: worker processes start Python
            import multiprocessing
            from .dependency_installer import base_python
            multiprocessing.set_executable(base_python())
        try:
            n = int(address.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise InputError(f"Dask scheduler {address!r}: write local:N with N worker "
                             "processes, e.g. local:2.")
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
        try:
            return Client(cluster), cluster
        except BaseException:
            cluster.close()
            raise
    # connected in a thread: a port that accepts but never speaks Dask (the dashboard's) makes
    # Client() wait past its own timeout, and cancel must work meanwhile
    hint = ("Give the scheduler's address (tcp://host:8786, not the dashboard's port), or "
            "local:N; start one with `dask scheduler` and workers with `dask worker ADDRESS`.")
    outcome = {}

    def connect():
        try:
            outcome["client"] = Client(address, timeout=CONNECT_TIMEOUT_S)
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc
    thread = threading.Thread(target=connect, name="dask-connect", daemon=True)
    thread.start()
    deadline = time.perf_counter() + CONNECT_TIMEOUT_S + 5
    while thread.is_alive():
        if is_cancelled():
            raise Cancelled("Cancelled by the user; no output was written.")
        if time.perf_counter() > deadline:
            raise InputError(f"No Dask scheduler answered at {address!r} within "
                             f"{CONNECT_TIMEOUT_S + 5:.0f} s. {hint}")
        thread.join(0.2)
    exc = outcome.get("error")
    if isinstance(exc, (OSError, TimeoutError, ValueError)):
        raise InputError(f"Cannot reach the Dask scheduler at {address!r} ({exc}). {hint}")
    if exc is not None:
        raise exc
    return outcome["client"], None


def _wait_for_workers(client, is_cancelled):
    """The scheduler's workers, waiting up to WORKERS_TIMEOUT_S for the first (cancel works)."""
    deadline = time.perf_counter() + WORKERS_TIMEOUT_S
    while True:
        workers = client.scheduler_info().get("workers", {})
        if workers:
            return workers
        if is_cancelled():
            raise Cancelled("Cancelled by the user; no output was written.")
        if time.perf_counter() > deadline:
            raise InputError(f"The Dask scheduler at {client.scheduler.address} has no worker "
                             f"(waited {WORKERS_TIMEOUT_S:.0f} s): start some with `dask worker "
                             f"{client.scheduler.address}`.")
        time.sleep(0.5)


def _portable(request):
    """The request with every local path absolute (a worker's working folder is another);
    GDAL virtual paths (/vsi...) and URLs are kept as given."""
    def fix(path):
        if not path or "://" in path or path.startswith("/vsi"):
            return path
        return os.path.abspath(path)
    return dataclasses.replace(request, dask_scheduler=None,
                               inputs={m: fix(p) for m, p in request.inputs.items()},
                               model_path=fix(request.model_path),
                               output_path=fix(request.output_path))


def _worker_error(exc):
    """A clear message for what the cluster raises when it cannot run our tasks."""
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "plugin":
        return InputError(
            "The Dask scheduler or a worker cannot import Urban Functions (No module named "
            f"{exc.name!r}): start `dask scheduler` and `dask worker` with the plugin's folder "
            "(the one holding plugin/) on PYTHONPATH, the same version as here.")
    return None


def run_on_dask(request, plan, write, timings, is_cancelled, progress, say):
    """Run the blocks on the cluster and ``write(strip)`` every strip in order; returns the
    record for the run manifest (scheduler, workers, per-block timings)."""
    client, cluster = _connect(request.dask_scheduler, is_cancelled)
    futures = {}
    try:
        workers = _wait_for_workers(client, is_cancelled)
        n_workers = len(workers)
        # worker processes on one host share its cores (onnxruntime threads per worker)
        workers_per_host = {}
        for info in workers.values():
            host = info.get("host") or ""
            workers_per_host[host] = workers_per_host.get(host, 0) + 1
        blocks = plan_blocks(plan, request.dask_block_rows)
        say(f"Dask: {n_workers} worker(s) at {client.scheduler.address}; {len(blocks)} blocks of "
            f"{request.dask_block_rows} tile rows.")
        remote = _portable(request)
        run_id = uuid.uuid4().hex[:8]
        in_flight = max(2, 2 * n_workers)   # backpressure: results wait on the workers
        version = _plugin_version()
        records, submitted, done_tiles = [], 0, 0
        # tiles each block runs (its halo included), and the tiles done as workers report them
        block_tiles = {b[0]: (b[1] - (halo_start(plan, b[0]) if b[0] else 0)) * len(plan.cols)
                       for b in blocks}
        all_tiles = sum(block_tiles.values())
        running = {}
        topic = f"urban-functions-{run_id}-progress"

        def on_event(event):
            msg = event[1] if isinstance(event, (tuple, list)) else event
            running[msg["block"]] = msg["tiles"]
        try:
            client.subscribe_topic(topic, on_event)
        except AttributeError:   # an older distributed: progress per block only
            topic = None
        for index in range(len(blocks)):
            while submitted < len(blocks) and submitted < index + in_flight:
                futures[submitted] = client.submit(
                    classify_block, remote, blocks[submitted], workers_per_host, topic,
                    pure=False,
                    key=f"urban-functions-{run_id}-block-{submitted}")
                submitted += 1
            future = futures[index]
            # polled: Future.result(timeout) can race with its own timeout in distributed
            while not future.done():
                if is_cancelled():
                    raise Cancelled("Cancelled by the user; no output was written.")
                if running:
                    live = sum(min(n, block_tiles[b]) for b, n in list(running.items()))
                    progress(min(1.0, (done_tiles + live) / all_tiles),
                             f"Block {index + 1} of {len(blocks)} (Dask, {n_workers} "
                             f"workers): {done_tiles + live} of {all_tiles} tiles (halo "
                             "included)")
                time.sleep(POLL_S)
            if is_cancelled():
                raise Cancelled("Cancelled by the user; no output was written.")
            result = future.result()
            if result["plugin_version"] != version:
                raise InputError(f"The Dask worker {result['worker']} runs Urban Functions "
                                 f"{result['plugin_version']}, this is {version}: install the "
                                 "same version on the workers.")
            for strip in result["strips"]:
                write(strip)
            del futures[index]
            for k, v in result["timings"].items():
                timings[k] = timings.get(k, 0.0) + v
            done_tiles += block_tiles[result["range"][0]]
            running.pop(result["range"][0], None)
            records.append({k: result[k] for k in ("range", "tiles", "seconds", "worker",
                                                   "timings", "provider")})
            progress(min(1.0, done_tiles / all_tiles),
                     f"Block {index + 1} of {len(blocks)} written (Dask, {n_workers} workers)")
        extra = sum(r["tiles"] for r in records) - plan.total
        return {"scheduler": request.dask_scheduler,
                "scheduler_address": client.scheduler.address,
                "workers": sorted(workers), "blocks": records,
                "block_rows": request.dask_block_rows,
                "halo_tiles_recomputed": extra}
    except Exception as exc:
        clear = _worker_error(exc)
        if clear is None:
            raise
        raise clear from None
    finally:
        if futures:
            client.cancel(list(futures.values()))
        try:
            client.unsubscribe_topic(f"urban-functions-{run_id}-progress")
        except (AttributeError, KeyError, NameError, ValueError):
            pass
        client.close()
        if cluster is not None:
            cluster.close()
