"""The command line without QGIS, and classify on a Dask cluster (``plugin/core/distributed.py``):
a LocalCluster of 2 worker processes gives the in-process map bit for bit (classes, confidence,
probabilities, derived outputs) with block boundaries inside tile overlaps, also when a worker
is killed mid-run; cancel leaves no file. Real GDAL, onnxruntime and dask.distributed."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from osgeo import gdal

from conftest import ROOT

distributed = pytest.importorskip("distributed", reason="dask[distributed] is not installed "
                                  "(requirements-dev.txt): the cluster tests need it")

MODELS = os.path.join(ROOT, "models")


def _bands(path):
    ds = gdal.Open(path)
    out = ds.ReadAsArray()
    ds = None
    return out


def _all_outputs(res):
    """Every raster the run wrote: name -> array."""
    out = {"map": _bands(res.output_path)}
    for name, path in res.extra_outputs.items():
        out[name] = _bands(path)
    return out


def _same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        # NaN (no data) compares equal to NaN: bit for bit
        assert np.array_equal(a[name], b[name], equal_nan=a[name].dtype.kind == "f"), name


@pytest.fixture(scope="module")
def cluster():
    from dask.distributed import LocalCluster
    c = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    yield c
    c.close()


def _run(tmp_path, name, **kw):
    from plugin.core.engine import ClassifyRequest, run_classification
    request = ClassifyRequest(output_path=str(tmp_path / f"{name}.tif"), **kw)
    return run_classification(request)


CASES = {
    # dense fusion model: confidence, probabilities, its derived built-up and input weights
    "urban-fusion": dict(model="urban_fusion.onnx", tile_size=64, overlap=16,
                         confidence=True, probabilities=True, optional_outputs=True),
    "sample-city-fusion": dict(model="sample_city_fusion.onnx", tile_size=48, overlap=16,
                               confidence=True, probabilities=True),
    # patch model (shared trunk), the last tile shifted back over its neighbour
    "vhr-scenes-resnet": dict(model="vhr_scenes_resnet.onnx", tile_size=24, confidence=True,
                              probabilities=True, inputs=("vhr",)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_local_cluster_gives_the_same_map_bit_for_bit(sample_city, cluster, tmp_path, case):
    spec = dict(CASES[case])
    model = os.path.join(MODELS, spec.pop("model"))
    keep = spec.pop("inputs", None)
    inputs = {m: p for m, p in sample_city.inputs.items() if keep is None or m in keep}
    here = _run(tmp_path, "here", inputs=inputs, model_path=model, **spec)
    there = _run(tmp_path, "there", inputs=inputs, model_path=model,
                 dask_scheduler=cluster.scheduler_address, dask_block_rows=1, **spec)
    _same(_all_outputs(here), _all_outputs(there))
    assert len(here.extra_outputs) >= 1
    with open(there.manifest_path, encoding="utf-8") as f:
        dask = json.load(f)["execution"]["dask"]
    assert dask["scheduler"] == cluster.scheduler_address and len(dask["workers"]) == 2
    blocks = dask["blocks"]
    assert len(blocks) >= 3 and {b["range"][1] - b["range"][0] for b in blocks} == {1}
    assert len({b["worker"] for b in blocks}) == 2, "both workers took blocks"
    if spec.get("overlap"):   # block boundaries inside tile overlaps: halo tiles ran twice
        assert dask["halo_tiles_recomputed"] > 0
    assert any("Dask: 2 worker(s)" in m for m in there.messages)


def test_a_killed_worker_is_replaced_and_the_map_is_the_same(sample_city, tmp_path):
    """SIGKILL one worker process after the first block is written: Dask reruns its blocks on
    the others (and the restarted one); the map is still the in-process map."""
    from dask.distributed import Client, LocalCluster
    from plugin.core.engine import ClassifyRequest, run_classification
    model = os.path.join(MODELS, "sample_city_fusion.onnx")
    spec = dict(inputs=sample_city.inputs, model_path=model, tile_size=24, overlap=8,
                probabilities=True)
    here = run_classification(ClassifyRequest(output_path=str(tmp_path / "here.tif"), **spec))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as c, Client(c) as probe:
        pids = probe.run(os.getpid)
        killed = []

        def progress(fraction, message):
            if message.startswith("Block") and not killed:
                victim = sorted(pids.values())[0]
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
        there = run_classification(
            ClassifyRequest(output_path=str(tmp_path / "there.tif"),
                            dask_scheduler=c.scheduler_address, dask_block_rows=1, **spec),
            progress=progress)
    assert killed
    _same(_all_outputs(here), _all_outputs(there))


def test_cancel_on_the_cluster_writes_nothing(sample_city, cluster, tmp_path):
    from plugin.core.engine import ClassifyRequest, run_classification
    from plugin.core.errors import Cancelled
    seen = []
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(Cancelled):
        run_classification(
            ClassifyRequest(sample_city.inputs, os.path.join(MODELS, "sample_city_fusion.onnx"),
                            str(out / "map.tif"), tile_size=24, overlap=8, probabilities=True,
                            dask_scheduler=cluster.scheduler_address, dask_block_rows=1),
            progress=lambda f, m: seen.append(m), is_cancelled=lambda: any(
                m.startswith("Block") for m in seen))
    assert not list(out.iterdir())


def test_progress_within_a_block_comes_from_the_workers(sample_city, cluster, tmp_path):
    """Workers report the tiles done in their block (Dask events), so progress moves while
    one long block runs, as it does tile by tile in-process."""
    from plugin.core.engine import ClassifyRequest, run_classification
    seen = []
    run_classification(
        ClassifyRequest(sample_city.inputs, os.path.join(MODELS, "urban_fusion.onnx"),
                        str(tmp_path / "map.tif"), tile_size=64, overlap=16,
                        dask_scheduler=cluster.scheduler_address, dask_block_rows=100),
        progress=lambda f, m: seen.append((f, m)))
    inside = [(f, m) for f, m in seen if m.endswith(" tiles (halo included)")
              and m.startswith("Block 1 of 1")]
    assert inside, seen
    assert all(0 < f < 1 for f, _ in inside)
    assert [f for f, _ in inside] == sorted(f for f, _ in inside)


def test_unreachable_scheduler_is_a_clear_error(sample_city, tmp_path):
    from plugin.core.engine import ClassifyRequest, run_classification
    from plugin.core.errors import InputError
    with pytest.raises(InputError, match="Cannot reach the Dask scheduler"):
        run_classification(ClassifyRequest(
            {"s2_summer": sample_city.inputs["s2_summer"]},
            os.path.join(MODELS, "sample_city_fusion.onnx"), str(tmp_path / "m.tif"),
            dask_scheduler="tcp://127.0.0.1:9"))
    assert not list(tmp_path.iterdir())


@pytest.mark.usefixtures("provider")
def test_processing_runs_on_the_cluster(sample_city, cluster, tmp_path):
    """DASK_SCHEDULER (advanced): the same map as the algorithm run here."""
    import processing
    params = {"S2_SUMMER": sample_city.inputs["s2_summer"], "MODEL": "sample-city-fusion",
              "TILE_SIZE": 48, "CONFIDENCE": True}
    here = processing.run("urbanfunctions:classify", dict(params, OUTPUT=str(tmp_path / "a.tif")))
    there = processing.run("urbanfunctions:classify", dict(
        params, OUTPUT=str(tmp_path / "b.tif"), DASK_SCHEDULER=cluster.scheduler_address))
    assert np.array_equal(_bands(here["OUTPUT"]), _bands(there["OUTPUT"]))
    with open(there["MANIFEST"], encoding="utf-8") as f:
        assert json.load(f)["execution"]["dask"]["scheduler"] == cluster.scheduler_address
    with open(here["MANIFEST"], encoding="utf-8") as f:
        assert "dask" not in json.load(f)["execution"]


# ----------------------------------------------------------------------- the command line
def _no_qgis_env(tmp_path):
    """An environment in which ``import qgis`` (and PyQt) fails: the CLI must not need it."""
    block = tmp_path / "block"
    for name in ("qgis", "PyQt5"):
        (block / name).mkdir(parents=True, exist_ok=True)
        (block / name / "__init__.py").write_text(
            f"raise ImportError('{name} is blocked: the command line must run without it')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(block), ROOT])
    return env


def test_cli_help_lists_the_processing_options(tmp_path):
    res = subprocess.run([sys.executable, "-m", "plugin.cli", "classify", "--help"], cwd=ROOT,
                         env=_no_qgis_env(tmp_path), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    for option in ("--vhr", "--ntl", "--s2-spring", "--s2-winter", "--temporal", "--model",
                   "--extent", "--aoi", "--tile-size", "--overlap", "--batch-size", "--device",
                   "--precision", "--confidence", "--probabilities", "--optional-outputs", "--inference-mode",
                   "--overwrite", "--dask"):
        assert option in res.stdout, option


def test_cli_classifies_without_qgis_like_the_engine(sample_city, tmp_path):
    from plugin.core.engine import ClassifyRequest, run_classification
    out = tmp_path / "cli.tif"
    cmd = [sys.executable, "-m", "plugin.cli", "classify", "--s2-summer",
           sample_city.inputs["s2_summer"], "--s2-winter", sample_city.inputs["s2_winter"],
           "--model", "sample-city-fusion", "--confidence", "--out", str(out)]
    res = subprocess.run(cmd, cwd=str(tmp_path), env=_no_qgis_env(tmp_path),
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["output"] == str(out) and summary["model"] == "sample-city-fusion"
    assert summary["provider"] == "CPUExecutionProvider" and summary["dask"] is None
    assert "%" in res.stderr and "Model:" in res.stderr        # progress and notes on stderr
    ref = run_classification(ClassifyRequest(
        {m: sample_city.inputs[m] for m in ("s2_summer", "s2_winter")},
        os.path.join(MODELS, "sample_city_fusion.onnx"), str(tmp_path / "ref.tif"),
        confidence=True))
    assert np.array_equal(_bands(str(out)), _bands(ref.output_path))
    # the output exists now: a second run refuses (exit 2) and says why
    again = subprocess.run(cmd, cwd=str(tmp_path), env=_no_qgis_env(tmp_path),
                           capture_output=True, text=True)
    assert again.returncode == 2 and "exists" in again.stderr


def test_cli_with_a_local_cluster(sample_city, tmp_path):
    """``--dask local:2``: a LocalCluster of two processes started and stopped by the run."""
    out = tmp_path / "dask.tif"
    res = subprocess.run(
        [sys.executable, "-m", "plugin.cli", "classify", "--s2-summer",
         sample_city.inputs["s2_summer"], "--model", "sample-city-fusion", "--tile-size", "48",
         "--dask", "local:2", "--dask-block-rows", "1", "--quiet", "--out", str(out)],
        cwd=ROOT, env=_no_qgis_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["dask"]["scheduler"] == "local:2" and summary["dask"]["workers"] == 2
    assert os.path.exists(out)


def test_cli_bad_arguments_exit_2(tmp_path):
    res = subprocess.run([sys.executable, "-m", "plugin.cli", "classify", "--out",
                          str(tmp_path / "x.tif"), "--extent", "1,2,3"], cwd=ROOT,
                         env=_no_qgis_env(tmp_path), capture_output=True, text=True)
    assert res.returncode == 2 and "xmin,ymin,xmax,ymax" in res.stderr


def test_cli_extent_and_aoi_like_processing(sample_city, tmp_path):
    """--extent with a CRS and --aoi (a vector file in another CRS): the grid is cut to the
    extent and cells outside the polygon are nodata."""
    from osgeo import ogr, osr
    ds = gdal.Open(sample_city.inputs["s2_summer"])
    x0, px, _, y0, _, py = ds.GetGeoTransform()
    epsg = osr.SpatialReference(wkt=ds.GetProjection()).GetAuthorityCode(None)
    ds = None
    # AOI: the western half of the extent, written in WGS 84
    src = osr.SpatialReference()
    src.ImportFromEPSG(int(epsg))
    dst = osr.SpatialReference()
    dst.ImportFromEPSG(4326)
    dst.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    src.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ring = ogr.Geometry(ogr.wkbLinearRing)
    for x, y in ((x0, y0), (x0 + 600, y0), (x0 + 600, y0 - 1200), (x0, y0 - 1200), (x0, y0)):
        ring.AddPoint_2D(x, y)
    poly = ogr.Geometry(ogr.wkbPolygon)
    poly.AddGeometry(ring)
    poly.Transform(osr.CoordinateTransformation(src, dst))
    aoi = str(tmp_path / "aoi.gpkg")
    vds = ogr.GetDriverByName("GPKG").CreateDataSource(aoi)
    layer = vds.CreateLayer("aoi", dst, ogr.wkbPolygon)
    feat = ogr.Feature(layer.GetLayerDefn())
    feat.SetGeometry(poly)
    layer.CreateFeature(feat)
    vds = None
    out = tmp_path / "cut.tif"
    res = subprocess.run(
        [sys.executable, "-m", "plugin.cli", "classify", "--s2-summer",
         sample_city.inputs["s2_summer"], "--model", "sample-city-fusion", "--quiet",
         "--extent", f"{x0},{y0 - 1200},{x0 + 1200},{y0},EPSG:{epsg}", "--aoi", aoi,
         "--out", str(out)], cwd=ROOT, env=_no_qgis_env(tmp_path), capture_output=True,
        text=True)
    assert res.returncode == 0, res.stderr
    classes = _bands(str(out))
    assert classes.shape == (120, 120)
    assert (classes[:, :55] > 0).all() and (classes[:, 65:] == 0).all()


def test_paths_sent_to_workers_are_absolute(tmp_path, monkeypatch):
    """A worker's working folder is another: relative local paths are made absolute, GDAL
    virtual paths and URLs are kept."""
    from plugin.core.distributed import _portable
    from plugin.core.engine import ClassifyRequest
    monkeypatch.chdir(tmp_path)
    r = _portable(ClassifyRequest({"vhr": "ortho.tif", "s2_summer": "/vsis3/bucket/s2.tif",
                                   "ntl": "https://example.org/ntl.tif"}, "m.onnx", "out.tif",
                                  dask_scheduler="tcp://h:8786"))
    assert r.inputs == {"vhr": str(tmp_path / "ortho.tif"), "s2_summer": "/vsis3/bucket/s2.tif",
                        "ntl": "https://example.org/ntl.tif"}
    assert r.model_path == str(tmp_path / "m.onnx") and r.dask_scheduler is None


def test_a_scheduler_without_workers_can_be_cancelled(sample_city, tmp_path):
    from dask.distributed import LocalCluster
    from plugin.core.engine import ClassifyRequest, run_classification
    from plugin.core.errors import Cancelled
    out = tmp_path / "out"
    out.mkdir()
    with LocalCluster(n_workers=0, processes=True, dashboard_address=":0") as empty:
        with pytest.raises(Cancelled):
            run_classification(
                ClassifyRequest({"s2_summer": sample_city.inputs["s2_summer"]},
                                os.path.join(MODELS, "sample_city_fusion.onnx"),
                                str(out / "m.tif"), dask_scheduler=empty.scheduler_address),
                is_cancelled=lambda: True)
    assert not list(out.iterdir())


def test_cli_sigterm_cancels_and_leaves_no_file(sample_city, tmp_path):
    """SIGTERM (what SLURM sends at a cancel or the time limit) cancels like Ctrl-C."""
    import time
    out = tmp_path / "out"
    out.mkdir()
    args = [sys.executable, "-m", "plugin.cli", "classify", "--model", "urban-fusion",
            "--tile-size", "16", "--overlap", "8", "--out", str(out / "map.tif")]
    for m, p in sample_city.inputs.items():
        args += ["--" + m.replace("_", "-"), p]
    proc = subprocess.Popen(args, cwd=ROOT, env=_no_qgis_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = ""
    while "Tile" not in line:          # running: the first tiles are done
        line = proc.stderr.readline()
        assert line or proc.poll() is None, "the run ended before it could be cancelled"
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert not list(out.iterdir())


def test_cli_bad_scheduler_address_exit_2(sample_city, tmp_path):
    res = subprocess.run([sys.executable, "-m", "plugin.cli", "classify", "--s2-summer",
                          sample_city.inputs["s2_summer"], "--model", "sample-city-fusion",
                          "--dask", "foo", "--out", str(tmp_path / "x.tif")], cwd=ROOT,
                         env=_no_qgis_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Cannot reach the Dask scheduler" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "x.tif").exists()


def test_a_port_that_never_answers_can_be_cancelled(sample_city, tmp_path):
    """A listening socket that never speaks Dask (like the dashboard's HTTP port) would keep
    the connect waiting: cancel still stops the run within seconds, and nothing is written."""
    import socket
    import time
    from plugin.core.engine import ClassifyRequest, run_classification
    from plugin.core.errors import Cancelled
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    port = server.getsockname()[1]
    out = tmp_path / "out"
    out.mkdir()
    t0 = time.perf_counter()
    try:
        with pytest.raises(Cancelled):
            run_classification(
                ClassifyRequest({"s2_summer": sample_city.inputs["s2_summer"]},
                                os.path.join(MODELS, "sample_city_fusion.onnx"),
                                str(out / "m.tif"), dask_scheduler=f"tcp://127.0.0.1:{port}"),
                is_cancelled=lambda: time.perf_counter() - t0 > 2)
    finally:
        server.close()
    assert time.perf_counter() - t0 < 15
    assert not list(out.iterdir())
