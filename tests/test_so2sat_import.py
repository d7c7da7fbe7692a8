"""Import of the pretrained So2Sat LCZ42 Sentinel-2 ResNet20 (plugin/lcz): file checks, parity
with the original Keras model (``parity.npz``), the ONNX graph, the installer, float16 scaling.

The third-party weights and reference outputs live in ``<repo>/../shared/data/so2sat`` and are
never copied into the repository; tests that need them are skipped when that folder is absent.
"""
import json
import os
import shutil

import numpy as np
import pytest

from plugin.core.errors import ModelError, OutputError
from plugin.core.model_card import parse_card
from plugin.lcz import classes as lcz_classes
from plugin.lcz import preprocess as pp
from plugin.lcz.card import FILE_STEM, lcz_card

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "so2sat"))
S2_STACK = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "s2",
                                         "ketzin_20170216_s2l1c_10band.tif"))
OUTPUTS = ("probs", "logits", "features")
TOL = {"probs": 1e-4, "features": 1e-4, "logits": 5e-4}   # logits reach |79|: 6e-6 relative

needs_data = pytest.mark.skipif(
    not os.path.isdir(DATA), reason=f"So2Sat weights/parity data not available ({DATA} is absent; "
                                    f"it is never part of the repository)")


def _h5_path():
    from plugin.lcz.so2sat_h5 import FILENAME
    return os.path.join(DATA, FILENAME)


@pytest.fixture(scope="module")
def weights():
    pytest.importorskip("h5py", reason="h5py is missing (Debian: apt install python3-h5py; "
                                       "scripts/setup.sh installs it)")
    from plugin.lcz.so2sat_h5 import read_weights
    return read_weights(_h5_path())


@pytest.fixture(scope="module")
def parity():
    with np.load(os.path.join(DATA, "parity.npz")) as f:
        data = {k: f[k] for k in f.files}
    assert set(OUTPUTS) | {"x"} <= set(data), f"parity.npz holds {sorted(data)}"
    assert data["x"].shape == (64, 32, 32, 10) and data["probs"].shape == (64, 17)
    return data


@pytest.fixture(scope="module")
def onnx_bytes(weights):
    from plugin.lcz.so2sat_onnx import build_model, model_bytes
    return model_bytes(build_model(weights, lcz_card(weights.sha256)))


@pytest.fixture(scope="module")
def session(onnx_bytes):
    ort = pytest.importorskip("onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])


def nchw(x_nhwc):
    return np.ascontiguousarray(np.asarray(x_nhwc, np.float32).transpose(0, 3, 1, 2))


def run_ort(session, x_nhwc):
    return dict(zip(OUTPUTS, session.run(list(OUTPUTS), {"s2": nchw(x_nhwc)})))


def assert_parity(got, ref, what):
    for k in OUTPUTS:
        diff = float(np.abs(got[k] - ref[k]).max())
        assert diff <= TOL[k], f"{what}: max |Δ {k}| = {diff:.3g} > {TOL[k]}"
    assert (got["probs"].argmax(1) == ref["probs"].argmax(1)).all()


# --- classes and card (no third-party data needed) ---------------------------------------------

def test_lcz_classes_colours_and_function_mapping():
    cls = lcz_classes.LCZ_CLASSES
    assert [c.code for c in cls] == list(range(1, 18))
    assert [c.lcz for c in cls] == [str(i) for i in range(1, 11)] + list("ABCDEFG")
    assert cls[16].key == "water" and cls[0].label == "Compact high-rise"
    assert all(len(c.color) == 7 and c.color.startswith("#") for c in cls)
    assert len({c.color for c in cls}) == 17
    assert [m.lcz for m in lcz_classes.LCZ_TO_FUNCTION] == [c.lcz for c in cls]
    assert all(m.rationale for m in lcz_classes.LCZ_TO_FUNCTION)
    lut = lcz_classes.function_lut()
    assert lut[0] == 0 and lut[17] == 7 and lut[11] == 6 and lut[10] == 3  # water, trees, industry
    assert 5 not in lut  # public services have no LCZ form
    p = np.random.default_rng(0).dirichlet(np.ones(17), size=(5, 3))
    f = lcz_classes.function_probabilities(p)
    assert f.shape == (5, 3, 8) and np.allclose(f.sum(-1), 1.0)
    fc = lcz_classes.function_probabilities(np.moveaxis(p, -1, 0), axis=0)
    assert np.allclose(np.moveaxis(fc, 0, -1), f)


def test_card_is_schema_valid_apart_from_the_new_task():
    card = lcz_card()
    json.loads(json.dumps(card))
    assert card["task"] == "patch_classification"
    assert card["patch"]["patch_px"] == 32 and card["patch"]["stride_px"] == 10
    assert card["patch"]["gsd_m"] == 10 and card["output"]["gsd_m"] == 100
    assert card["licence"] == "MIT" and len(card["citation"]) == 3
    assert card["provenance"]["weights_sha256"] == \
        "a4348f55e21039b81aec6f57b1c943c851dc70c5b79e025fb9e93438cc1e730f"
    assert card["provenance"]["converted_by"].startswith("Urban Functions So2Sat importer ")
    for spec in card["inputs"]:
        assert spec["bands"] == ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"]
        assert spec["onnx_input"] == "s2" and spec["rounding"] == "float16"
    # everything but the task already parses with today's reader
    parsed = parse_card(dict(card, task="segmentation"))
    assert len(parsed.classes) == 17 and parsed.classes[16].color == "#6a6aff"
    assert parsed.modalities == ("s2_spring", "s2_summer", "s2_autumn", "s2_winter")
    assert parsed.cells_per_input(parsed.inputs[0]) == 10


def test_card_derives_settlement_extent_and_function_map():
    from plugin.core.classes import FUNCTION_CLASSES
    parsed = parse_card(lcz_card())
    derived = {d.name: d for d in parsed.derived_outputs}
    assert list(derived) == ["settlement_extent", "urban_functions"]
    settlement = derived["settlement_extent"]
    assert settlement.kind == "class_sum" and settlement.codes == tuple(range(1, 11))
    assert "not a trained regression" in settlement.label
    groups = derived["urban_functions"].groups
    assert derived["urban_functions"].kind == "class_groups"
    # every LCZ in exactly one group, each group in our function's code, colour and label
    assert sorted(c for _, src in groups for c in src) == list(range(1, 18))
    lut = lcz_classes.function_lut()
    by_code = {f.code: f for f in FUNCTION_CLASSES}
    for info, src in groups:
        f = by_code[info.code]
        assert (info.name, info.label, info.color) == (f.key, f.label, f.color)
        assert all(lut[c] == info.code for c in src)
    assert "public_services" not in [info.name for info, _ in groups]


# --- float16 scaling and the patch grid (no third-party data needed) ---------------------------

def test_scale_dn_reproduces_the_original_float16_step_for_every_uint16():
    dn = np.arange(65536, dtype=np.uint16)
    original = np.empty(dn.shape, np.float16)        # sen2 reader: float16 array, / 10000.0
    with np.errstate(over="ignore"):
        original[:] = dn.astype(np.float16) / 10000.0
    original = original.astype(np.float32)           # patches are copied into float32
    got = pp.scale_dn(dn)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, original)      # bit for bit, inf above 65504 included
    assert np.isinf(got[65520:]).all() and np.isfinite(got[:65504]).all()
    dev = np.abs(got[:10001].astype(np.float64) - dn[:10001] / 1e4)
    assert dev[:2049].max() <= 6.2e-5    # reflectance < 0.2: float16 spacing 1.2e-4
    assert dev.max() <= 6.5e-4           # up to reflectance 1 (DN rounded to multiples of 8)
    assert dev.max() > 1e-4              # i.e. the rounding is real and must not be skipped


def test_patch_grid_and_symmetric_padding():
    assert pp.grid_shape(768, 1536) == (77, 154)
    assert pp.grid_shape(10, 11) == (1, 2)
    assert pp.patch_anchor(2, 153) == (20, 1530)
    stack = np.arange(3 * 40 * 50, dtype=np.float32).reshape(3, 40, 50)
    p = pp.extract_patches(stack)
    assert p.shape == (4 * 5, 3, 32, 32)
    first = p[0]
    np.testing.assert_array_equal(first[:, 16:, 16:], stack[:, :16, :16])   # anchor = pixel (0, 0)
    # numpy 'symmetric' repeats the edge pixel: padded row 15 is image row 0, row 14 is row 1
    np.testing.assert_array_equal(first[:, 15, 16:], stack[:, 0, :16])
    np.testing.assert_array_equal(first[:, 14, 16:], stack[:, 1, :16])
    cell = pp.extract_patches(stack, cells=[(1, 2)])[0]                      # anchor (10, 20)
    np.testing.assert_array_equal(cell[:, 6:, :], stack[:, 0:26, 4:36])
    last = pp.extract_patches(stack, cells=[(3, 4)])[0]                      # anchor (30, 40)
    np.testing.assert_array_equal(last[:, :26, :26], stack[:, 14:40, 24:50])
    np.testing.assert_array_equal(last[:, 26, :26], stack[:, 39, 24:50])    # mirrored past the edge


# --- the h5 file -----------------------------------------------------------------------------

@needs_data
@pytest.mark.shared
def test_published_file_hash_layers_and_shapes(weights):
    import h5py
    from plugin.lcz import so2sat_h5 as h5
    assert weights.sha256 == h5.SHA256 and weights.size == h5.FILE_BYTES
    assert weights.keras_version == "2.1.5" and weights.n_params == h5.N_PARAMS == 576897
    assert len(weights.weights) == 42
    assert sum(layer.op == "conv" for layer in h5.WEIGHTED) == 22
    with h5py.File(_h5_path(), "r") as f:  # our table is the file's own topological order
        assert [n.decode() for n in f.attrs["layer_names"]] == [layer.name for layer in h5.LAYERS]
    assert weights["conv2d_1"]["kernel"].shape == (3, 3, 10, 16)
    assert weights["dense_1"]["kernel"].shape == (256, 17)


@needs_data
@pytest.mark.shared
def test_corrupted_copy_is_rejected_by_hash(tmp_path, weights):
    from plugin.lcz.so2sat_h5 import SHA256, read_weights
    bad = tmp_path / os.path.basename(_h5_path())
    shutil.copyfile(_h5_path(), bad)
    with open(bad, "r+b") as f:
        f.seek(1_000_000)
        byte = f.read(1)
        f.seek(1_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelError, match="sha256") as exc:
        read_weights(bad)
    assert SHA256 in str(exc.value) and "Download" in str(exc.value)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(open(_h5_path(), "rb").read()[:100_000])
    with pytest.raises(ModelError, match="sha256"):
        read_weights(truncated)
    with pytest.raises(ModelError, match="not a readable HDF5"):
        read_weights(truncated, verify_hash=False)
    with pytest.raises(ModelError, match="not found"):
        read_weights(tmp_path / "missing.h5")


@needs_data
@pytest.mark.shared
def test_shape_and_layer_checks_name_the_first_mismatch(tmp_path, weights):
    import h5py
    from plugin.lcz.so2sat_h5 import read_weights
    wrong = tmp_path / "wrong_shape.h5"
    shutil.copyfile(_h5_path(), wrong)
    with h5py.File(wrong, "r+") as f:
        g = f["conv2d_1"]["conv2d_1"]
        del g["kernel:0"]
        g.create_dataset("kernel:0", data=np.zeros((3, 3, 7, 16), np.float32))  # an S1 stem
    with pytest.raises(ModelError, match="sha256"):
        read_weights(wrong)
    with pytest.raises(ModelError, match=r"conv2d_1/conv2d_1/kernel:0' has shape \(3, 3, 7, 16\), "
                                         r"expected \(3, 3, 10, 16\)"):
        read_weights(wrong, verify_hash=False)
    missing = tmp_path / "missing_layer.h5"
    shutil.copyfile(_h5_path(), missing)
    with h5py.File(missing, "r+") as f:
        del f["batch_normalization_7"]
    with pytest.raises(ModelError, match="layer 'batch_normalization_7' is missing"):
        read_weights(missing, verify_hash=False)


# --- parity with the original Keras model ------------------------------------------------------

@needs_data
@pytest.mark.shared
def test_torch_reference_matches_keras(weights, parity):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    from plugin.lcz.reference_torch import run
    assert_parity(run(weights, parity["x"]), parity, "torch")


@needs_data
@pytest.mark.shared
def test_onnxruntime_matches_keras(session, parity):
    assert_parity(run_ort(session, parity["x"]), parity, "onnxruntime")


@needs_data
@pytest.mark.shared
def test_numpy_forward_matches_keras(weights, parity):
    from plugin.lcz.so2sat_numpy import forward
    got = forward(weights, parity["x"][:16])
    assert_parity(got, {k: v[:16] for k, v in parity.items()}, "numpy float64")


@needs_data
@pytest.mark.shared
def test_positional_weight_order_would_break_parity(weights, parity):
    """The trap in ARCHITECTURE.md: swapping each projection conv with the same-shaped last conv
    of its branch (what a positional loader in creation order does) ruins the output."""
    ort = pytest.importorskip("onnxruntime")
    from plugin.lcz.so2sat_onnx import build_model, model_bytes
    swapped = dict(weights.weights)
    for a, b in (("conv2d_4", "conv2d_5"), ("conv2d_11", "conv2d_12"), ("conv2d_18", "conv2d_19")):
        swapped[a], swapped[b] = weights[b], weights[a]
    sess = ort.InferenceSession(model_bytes(build_model(swapped)),
                                providers=["CPUExecutionProvider"])
    got = run_ort(sess, parity["x"][:8])
    assert np.abs(got["features"] - parity["features"][:8]).max() > 0.1


@needs_data
@pytest.mark.shared
def test_onnx_graph_runs_at_batch_1_and_64(session, onnx_bytes, parity):
    import onnx
    model = onnx.load_from_string(onnx_bytes)
    assert model.opset_import[0].version == 17 and model.ir_version == 8
    assert {n.op_type for n in model.graph.node} == {
        "Conv", "BatchNormalization", "Relu", "Add", "GlobalAveragePool", "Flatten", "Gemm",
        "Softmax"}
    assert all(n.attribute[0].f == pytest.approx(1e-3) for n in model.graph.node
               if n.op_type == "BatchNormalization")
    inp = session.get_inputs()[0]
    assert inp.name == "s2" and inp.shape[1:] == [10, 32, 32] and isinstance(inp.shape[0], str)
    assert [o.name for o in session.get_outputs()] == list(OUTPUTS)
    full = run_ort(session, parity["x"])
    assert full["probs"].shape == (64, 17) and full["features"].shape == (64, 256)
    for i in (0, 17, 63):
        one = run_ort(session, parity["x"][i:i + 1])
        assert one["probs"].shape == (1, 17)
        for k in OUTPUTS:
            assert np.abs(one[k][0] - full[k][i]).max() <= 1e-5 * max(1.0, np.abs(full[k][i]).max())


@needs_data
@pytest.mark.shared
def test_float16_rounding_is_outside_the_graph(session, parity):
    """The graph feeds its float32 input as is (no Cast): parity holds on ``x`` that is not
    float16-representable, and rounding the input first (what :func:`scale_dn` does to DNs)
    changes the output, so the engine must apply it."""
    x = parity["x"]
    assert not np.array_equal(x.astype(np.float16).astype(np.float32), x)
    a = run_ort(session, x)["logits"]
    b = run_ort(session, x.astype(np.float16).astype(np.float32))["logits"]
    assert np.abs(a - parity["logits"]).max() <= TOL["logits"]
    assert np.abs(a - b).max() > 1e-3


@needs_data
@pytest.mark.shared
@pytest.mark.skipif(not os.path.isfile(S2_STACK),
                    reason=f"real Sentinel-2 stack absent ({S2_STACK})")
def test_real_sentinel2_water_is_lcz_g(session):
    """Smoke test on real L1C data: windows whose mean NIR (B8) is below 600 DN are lakes and
    rivers of the Havel; the network calls >= 90 % of them LCZ G (water)."""
    from osgeo import gdal
    ds = gdal.Open(S2_STACK)
    dn = ds.ReadAsArray()
    rows, cols = pp.grid_shape(*dn.shape[1:])
    nir = np.pad(dn[6].astype(np.float64), 16, mode="symmetric")
    cells = [(r, c) for r in range(rows) for c in range(cols)
             if nir[10 * r:10 * r + 32, 10 * c:10 * c + 32].mean() < 600]
    assert len(cells) > 100
    patches = pp.extract_patches(pp.scale_dn(dn), cells=cells)
    probs = session.run(["probs"], {"s2": patches})[0]
    assert ((probs.argmax(1) + 1) == 17).mean() >= 0.9


# --- the importer --------------------------------------------------------------------------------

@needs_data
@pytest.mark.shared
def test_importer_installs_checks_and_never_overwrites_silently(tmp_path, weights):
    pytest.importorskip("onnxruntime")
    import onnx
    from plugin.lcz.importer import import_so2sat_weights, installed_card
    models = tmp_path / "models"
    report = {}
    path = import_so2sat_weights(_h5_path(), str(models), report=report)
    assert path == str(models / (FILE_STEM + ".onnx")) and os.path.isfile(path)
    assert sorted(os.listdir(models)) == [FILE_STEM + ".LICENSE.txt", FILE_STEM + ".onnx"]
    licence = (models / (FILE_STEM + ".LICENSE.txt")).read_text(encoding="utf-8")
    assert "MIT License" in licence and "So2Sat project team" in licence
    assert report["self_check"]["probs"] <= 1e-4 and not report["unchanged"]

    card = installed_card(path)                   # JSON in metadata_props['model_card']
    assert len(card["classes"]) == 17 and card["classes"][16]["name"] == "water"
    assert card["classes"][0]["color"] == "#8c0000" and card["licence"] == "MIT"
    assert card["provenance"]["weights_sha256"] == weights.sha256
    model = onnx.load(path)                       # one self-contained file
    assert all(not t.external_data for t in model.graph.initializer)

    again = {}
    assert import_so2sat_weights(_h5_path(), str(models), report=again) == path
    assert again["unchanged"]                     # same input -> same bytes -> nothing written
    with open(path, "ab") as f:                   # a different model under that name
        f.write(b"\0")
    size = os.path.getsize(path)
    with pytest.raises(OutputError, match="already installed"):
        import_so2sat_weights(_h5_path(), str(models))
    assert os.path.getsize(path) == size
    import_so2sat_weights(_h5_path(), str(models), overwrite=True)
    assert os.path.getsize(path) == size - 1
    assert not [n for n in os.listdir(models) if n.endswith(".part")]


@needs_data
@pytest.mark.shared
def test_importer_refuses_a_corrupted_file(tmp_path):
    from plugin.lcz.importer import import_so2sat_weights
    bad = tmp_path / "bad.h5"
    data = bytearray(open(_h5_path(), "rb").read())
    data[123456] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        import_so2sat_weights(str(bad), str(tmp_path / "models"))
    assert not (tmp_path / "models").exists()


@needs_data
@pytest.mark.shared
def test_installed_model_does_not_break_the_model_list(tmp_path):
    """Until the engine supports ``patch_classification`` the models list reports the model as
    unsupported instead of failing; once it does, the model is listed."""
    pytest.importorskip("onnxruntime")
    from plugin.core.models import list_models
    from plugin.lcz.importer import import_so2sat_weights
    import_so2sat_weights(_h5_path(), str(tmp_path))
    errors = []
    entries = list_models(extra_dirs=[str(tmp_path)], errors=errors)
    listed = [e for e in entries if e.card.name == "so2sat-lcz42-s2-resnet20"]
    assert listed or any("patch_classification" in e for e in errors)


def test_lcz_package_needs_no_torch_or_qgis_and_loads_heavy_packages_lazily():
    """Only ``reference_torch`` (tests) may import torch; importing the rest pulls in neither
    torch, qgis/Qt nor h5py/onnx/onnxruntime (they are imported when a model is imported)."""
    import pkgutil
    import subprocess
    import sys
    folder = os.path.join(ROOT, "plugin", "lcz")
    names = [f"plugin.lcz.{m.name}" for m in pkgutil.iter_modules([folder])
             if m.name != "reference_torch"]
    assert "plugin.lcz.importer" in names and "plugin.lcz.so2sat_onnx" in names
    heavy = ("torch", "qgis", "PyQt5", "h5py", "onnx", "onnxruntime")
    code = ("import sys, importlib\n"
            f"for m in {names!r}: importlib.import_module(m)\n"
            f"print(','.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"plugin.lcz pulled in: {out.stdout.strip()}"
