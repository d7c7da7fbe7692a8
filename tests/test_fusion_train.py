"""The fusion training pipeline (plugin/learning/fusion/train.py) end to end with the tiny
network: 2 training scenes, 1 validation scene of 32 cells, 1 epoch, into a temporary folder.
Checks that the card in the ONNX file validates, that the graph has the three outputs the card
names, that every input subset was scored on the exported model, and that the Markdown card is
generated from the same dict. Also: the card on its own, and the receptive-field bound against a
measurement.

The end-to-end run needs the scene images in ``<repo>/../shared/data/vhr_scenes`` (third-party
data, never committed) and is skipped with a reason when they are absent.
"""
import json
import math
import os
import subprocess
import sys

import pytest

from conftest import ROOT

SCENES = os.path.join(ROOT, "..", "shared", "data", "vhr_scenes")
needs_scenes = pytest.mark.skipif(
    not os.path.isfile(os.path.join(SCENES, "manifest.csv")),
    reason="../shared/data/vhr_scenes (AID / UC Merced / RSSCN7 scene images, third-party data "
           "that is never committed) is not available in this checkout")

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from plugin.core.model_card import parse_card  # noqa: E402
from plugin.learning.fusion import card as cardlib  # noqa: E402
from plugin.learning.fusion import train as T  # noqa: E402
from plugin.learning.fusion.net import MODALITY_ORDER, UrbanFusionNet  # noqa: E402


def test_stand_in_card_validates():
    card = cardlib.build_card()
    parsed = parse_card(card)
    assert parsed.modalities == MODALITY_ORDER
    temporal = parsed.input_for("temporal")
    assert temporal.bands == tuple(f"m{m:02d}" for m in range(1, 13))
    assert (temporal.gsd_m, temporal.transform, temporal.dtype) == (40.0, "log1p", "float32")
    vhr = parsed.input_for("vhr")
    assert (vhr.dtype, vhr.gsd_m, vhr.resampling, vhr.scale) == ("uint8", 2.0, "average", 1 / 255)
    assert parsed.input_for("s2_winter").scale == 1e-4
    assert parsed.mask_input == "valid" and parsed.output.name == "probs"
    assert parsed.output.default_overlap >= parsed.output.context_cells
    d = {o.name: o for o in parsed.derived_outputs}
    assert (d["built_up"].output, d["built_up"].style, d["built_up"].optional) == \
        ("built_up", "fraction", False)
    assert (d["gates"].output, d["gates"].style, d["gates"].optional) == \
        ("gates", "weights", True)
    assert d["gates"].bands == ("VHR", "Night-time light", "Sentinel-2", "Temporal signature")
    ablation = cardlib.build_card(ablation="no_align")
    assert ablation["name"] == "urban-fusion-no-align" and "ablation" in ablation["title"]


@pytest.mark.parametrize("config, encoder", [("tiny", "patchify"), ("default", "scene_resnet")])
def test_receptive_bound_covers_measurement(config, encoder):
    """With the offset head randomised (it starts at zero: no warp) the measured radius stays
    within the bound the card uses, for both VHR encoders."""
    torch.manual_seed(3)
    net = UrbanFusionNet(**T.CONFIGS[config])
    assert net.config["vhr_encoder"] == encoder
    with torch.no_grad():
        w = net.align.offset[-1].weight
        w.copy_(torch.randn(w.shape) * 0.5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # small graphs; a second thread only adds waiting on a busy machine
    try:
        measured = T.receptive_radius(net.eval(), cells=80)
    finally:
        torch.set_num_threads(threads)
    bound = T.receptive_bound(net.config)
    assert 0 < measured <= bound, (measured, bound)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fusion_train")
    out = tmp / "urban_fusion.onnx"
    cmd = [sys.executable, "-m", "plugin.learning.fusion.train", "--out", str(out),
           "--scenes", "2", "--val-scenes", "1", "--cells", "32", "--epochs", "1",
           "--config", "tiny", "--threads", "2", "--device", "cpu",
           "--scene-dir", str(tmp / "scenes"), "--workdir", str(tmp / "work")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return out, proc.stdout


@pytest.mark.shared
@needs_scenes
def test_pipeline_end_to_end(pipeline):
    import onnx
    out, log = pipeline
    for step in range(1, 7):
        assert f"{step}/6 " in log
    md_path = out.with_suffix(".md")
    assert out.is_file() and md_path.is_file()

    model = onnx.load(str(out))
    assert [o.name for o in model.graph.output] == ["probs", "built_up", "gates"]
    assert [i.name for i in model.graph.input] == list(MODALITY_ORDER) + ["valid"]
    raw = {p.key: p.value for p in model.metadata_props}["model_card"]
    card = json.loads(raw)
    parsed = parse_card(card)          # raises on any schema problem ("temporal" included)
    assert parsed.name == "urban-fusion" and parsed.modalities == MODALITY_ORDER
    graph_outputs = {d.output for d in parsed.graph_outputs}
    assert graph_outputs == {"built_up", "gates"}
    assert parsed.output.context_cells >= card["architecture"]["receptive_field_radius_cells"][
        "measured"]
    assert parsed.output.default_overlap >= parsed.output.context_cells

    subsets = card["metrics"]["subsets"]
    assert list(subsets) == list(T.SUBSETS)
    for key, m in subsets.items():
        for name in ("overall_accuracy", "miou", "macro_f1", "built_up_mae"):
            assert isinstance(m[name], float) and 0.0 <= m[name] <= 1.0, (key, name, m[name])
        assert m["cells"] == 32 * 32
        gates = m["mean_gates"]
        present = {g for g in T.SUBSETS[key]}
        assert all(gates[g] == 0.0 for g in gates if g not in present), (key, gates)
        assert math.isclose(sum(gates.values()), 1.0, abs_tol=1e-3), (key, gates)

    mis = card["metrics"]["ntl_misregistration"]
    assert set(mis) == {"0px", "2px"} and set(mis["2px"]) == {"all", "vhr_ntl"}
    assert card["architecture"]["vhr_init"] is None      # the tiny config: patchify encoder
    assert parsed.output.size_multiple == 4

    tr = card["training"]
    assert tr["seed"] == 0 and tr["train_scenes"] == 2 and tr["validation_scenes"] == 1
    assert tr["epochs"] == 1 and tr["steps"] >= 1 and tr["hardware"]
    assert tr["time_s"]["total"] > 0
    assert {s["dataset"] for s in card["data"]["sources"]} == {"AID", "UCM", "RSSCN7"}
    assert card["data"]["documentation"] == "docs/fusion_training_data.md"

    with open(md_path, encoding="utf-8") as f:
        assert f.read() == cardlib.card_markdown(card)


@pytest.mark.shared
@needs_scenes
def test_ablation_report_tabulates_finished_runs(pipeline, tmp_path):
    """make fusion-ablations' report: rows from the runs' cards (mean and spread over seeds),
    'not run' for missing variants, and the README block between the markers replaced."""
    import shutil
    from plugin.learning.fusion import ablations as A
    out, _ = pipeline
    steps = A.read_card(str(out))["training"]["steps"]
    runs = tmp_path / "runs"
    for seed, variant in ((0, "base"), (1, "base"), (0, "concat")):
        (runs / f"seed{seed}").mkdir(parents=True, exist_ok=True)
        shutil.copy(out, A.run_path(seed, variant, str(runs)))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{A.MARK_START}\nold table\n{A.MARK_END}\noutro\n")
    md, js = tmp_path / "abl.md", tmp_path / "abl.json"
    result = A.report([0, 1], steps, str(runs), str(md), str(js), str(readme))
    assert set(result) == {"base", "concat"} and set(result["base"]) == {0, 1}
    text = readme.read_text()
    assert "old table" not in text and text.startswith("intro\n") and text.endswith("outro\n")
    base_row = [ln for ln in text.splitlines() if ln.startswith("| Bundled design")][0]
    miou = A.read_card(str(out))["metrics"]["subsets"]["all"]["miou"]
    assert f"{miou:.3f} ± 0.000" in base_row             # two identical runs: no spread
    assert "not run" in [ln for ln in text.splitlines() if ln.startswith("| No NTL")][0]
    data = json.loads(js.read_text())
    assert data["steps"] == steps and set(data["runs"]["base"]) == {"0", "1"}
    assert md.read_text().count("| Concatenation") == 1
    with pytest.raises(SystemExit, match="no finished base runs"):
        A.report([0], steps + 1, str(runs), str(md), str(js), str(readme))
