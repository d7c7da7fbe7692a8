"""The onnxruntime session (issue 14, GPU path): I/O binding gives the plain run's outputs, the
batch size follows the provider, and a CUDA failure falls back to the CPU with a report. The
CUDA cases need onnxruntime-gpu and a GPU; they are skipped, with the reason, elsewhere."""
import json
import os

import numpy as np
import pytest

from plugin.core.engine import ClassifyRequest, run_classification
from plugin.core.runtime import (CPU, CUDA, MAX_AUTO_BATCH, InferenceSession, batch_for_memory,
                                 gpu_free_bytes)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUSION = os.path.join(ROOT, "models", "sample_city_fusion.onnx")
SCENES = os.path.join(ROOT, "models", "vhr_scenes_resnet.onnx")


def _has_cuda():
    import onnxruntime
    return CUDA in onnxruntime.get_available_providers() and gpu_free_bytes() is not None


needs_cuda = pytest.mark.skipif(not _has_cuda(), reason="no CUDA provider (onnxruntime-gpu) or "
                                "no GPU on this machine")


def _feed(session, rng, size=4, batch=2):
    """Random inputs of the shapes the graph declares, its symbolic sizes set to ``size``."""
    names = {"batch": batch, "rows": 2, "cols": 2}
    feed = {}
    for i in session._session.get_inputs():
        shape = [d if isinstance(d, int) else int(eval(d, {}, dict(  # noqa: S307 - "20*ntl_height"
            names, **{w: size for w in d.replace("*", " ").split() if not w.isdigit()
                      and w not in names}))) for d in i.shape]
        feed[i.name] = rng.random(shape, dtype=np.float32)
    return feed


@pytest.mark.parametrize("model", [FUSION, SCENES])
def test_io_binding_gives_the_plain_runs_outputs(model):
    plain = InferenceSession(model, "cpu")
    bound = InferenceSession(model, "cpu", io_binding=True)
    assert bound.io_binding and not plain.io_binding     # the CPU default: no binding
    feed = _feed(plain, np.random.default_rng(0))
    names = [o.name for o in plain._session.get_outputs()]
    a = plain.run(names, feed)
    b = bound.run(names, feed)
    assert len(a) == len(b) == len(names)
    for x, y in zip(a, b):
        assert x.shape == y.shape and np.array_equal(x, y)


def test_batch_size_follows_the_provider(tmp_path, sample_city):
    # the GPU rule: half of the free memory, 64 x a tile's input bytes each, at most 64 tiles
    tile = 6 * 2 ** 20
    assert batch_for_memory(100 * 2 ** 30, tile) == MAX_AUTO_BATCH
    assert batch_for_memory(4 * 2 ** 30, tile) == 5
    assert batch_for_memory(10 * 2 ** 20, tile) == 1               # never 0
    free = gpu_free_bytes()
    assert free is None or free > 0
    # on the CPU the automatic batch is 4, an explicit one is kept; the manifest says which
    for asked, expect in ((0, 4), (3, 3)):
        out = tmp_path / f"map_{asked}.tif"
        res = run_classification(ClassifyRequest(
            {"s2_summer": sample_city.inputs["s2_summer"]}, FUSION, str(out), device="cpu",
            batch_size=asked))
        with open(res.manifest_path, encoding="utf-8") as f:
            doc = json.load(f)
        assert doc["tiling"]["batch_size"] == expect
        assert doc["execution"]["provider"] == CPU and "fallback" not in doc["execution"]
        assert not any("I/O binding" in m for m in res.messages)


def test_float16_is_refused_without_a_gpu_and_converted_for_one(tmp_path, sample_city):
    import onnx
    from plugin.core.errors import ModelError
    from plugin.core.runtime import fp16_model_bytes
    if not _has_cuda():
        with pytest.raises(ModelError, match="float16 needs a GPU"):
            run_classification(ClassifyRequest(sample_city.inputs, FUSION,
                                               str(tmp_path / "h.tif"), precision="fp16"))
        assert not os.listdir(tmp_path)                    # nothing written
    # the converted graph: float16 weights, float32 inputs and outputs (what the engine feeds)
    model = onnx.load_from_string(fp16_model_bytes(FUSION))
    f16 = onnx.TensorProto.FLOAT16
    assert sum(t.data_type == f16 for t in model.graph.initializer) > 10
    for io in list(model.graph.input) + list(model.graph.output):
        assert io.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


@needs_cuda
def test_float16_on_the_gpu_is_checked_against_float32(tmp_path, sample_city):
    res = run_classification(ClassifyRequest(sample_city.inputs, FUSION,
                                             str(tmp_path / "h.tif"), device="cuda",
                                             precision="fp16"))
    with open(res.manifest_path, encoding="utf-8") as f:
        ex = json.load(f)["execution"]
    assert ex["provider"] == CUDA and ex["fp16_parity"]["same_class"] >= 0.99
    assert ex["precision"] == "fp16"


@needs_cuda
def test_cuda_runs_with_io_binding_and_a_batch_from_free_memory(tmp_path, sample_city):
    res = run_classification(ClassifyRequest(sample_city.inputs, FUSION, str(tmp_path / "g.tif"),
                                             device="cuda"))
    assert res.provider == CUDA
    assert any("I/O binding" in m for m in res.messages)
    assert any("from the GPU's free memory" in m for m in res.messages)
    cpu = run_classification(ClassifyRequest(sample_city.inputs, FUSION,
                                             str(tmp_path / "c.tif"), device="cpu"))
    from osgeo import gdal
    g = gdal.Open(res.output_path).ReadAsArray()
    c = gdal.Open(cpu.output_path).ReadAsArray()
    assert (g == c).mean() > 0.999         # float rounding differs between the devices


@needs_cuda
def test_a_cuda_failure_falls_back_to_the_cpu_and_says_so():
    """A real CUDA failure: an arena of 1 MiB cannot hold the activations of a batch."""
    told = []
    s = InferenceSession(FUSION, "cuda", on_fallback=told.append,
                         cuda_options={"gpu_mem_limit": str(2 ** 20)})
    feed = _feed(s, np.random.default_rng(0), size=40, batch=8)
    out = s.run(s._session.get_outputs()[0].name, feed)
    # at load (the weights) or at run time (the activations): either way on the CPU, said
    assert s.provider == CPU and s.fallback and "CUDA failed" in s.fallback
    assert told and told[0].startswith("Warning: CUDA failed")
    assert np.isfinite(out).all()
