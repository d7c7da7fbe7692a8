"""UrbanFusionNet (plugin/learning/fusion): shapes, gates, alignment warp, S2 decision fusion,
temporal encoders, losses, modality dropout, a tiny overfit, and the ONNX export (in a
subprocess, as the pipeline runs it) with onnxruntime parity for every input subset.

Real torch and onnxruntime, one torch thread (torch is a training extra: skipped without it).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from plugin.learning.fusion import losses as L  # noqa: E402
from plugin.learning.fusion.export import OUTPUT_NAMES, parity_subsets  # noqa: E402
from plugin.learning.fusion.modules import flow_warp  # noqa: E402
from plugin.learning.fusion.net import (GATE_ORDER, INPUT_NAMES, MODALITY_ORDER,  # noqa: E402
                                        FusionProbabilityModel, UrbanFusionNet,
                                        count_parameters, example_inputs)
from plugin.learning.fusion.temporal import BiLSTMEncoder, SPP1dEncoder  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEASONS = MODALITY_ORDER[2:6]
TINY = dict(width=16, vhr_texture=8, vhr_low=8, vhr_blocks=1, ntl_hidden=8, s2_hidden=8,
            temporal_channels=(8, 8, 8, 8, 8), aspp_branch=8, low_proj=8, builtup_hidden=8)


def randomise(net, seed=0):
    """Non-trivial BN statistics, season embedding and offset head (the offset head starts at
    zero), so the checks see real values rather than an identity-initialised network."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        net.season_embedding.copy_(torch.randn(net.season_embedding.shape, generator=g) * 0.5)
        if net.config["align"]:
            w = net.align.offset[-1].weight
            w.copy_(torch.randn(w.shape, generator=g) * 0.05)
    return net.eval()


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return randomise(UrbanFusionNet())


def group_present(present):
    """[4] floats: which GATE_ORDER groups ``present`` (input names) covers."""
    return [float("vhr" in present), float("ntl" in present),
            float(any(s in present for s in SEASONS)), float("temporal" in present)]


# ------------------------------------------------------------------ architecture

def test_shapes_and_size(net):
    x = example_inputs(2, 32, 24, seed=1)
    with torch.no_grad():
        logits, built_up, gates, aux = net(*x, return_aux=True)
    assert logits.shape == (2, 8, 32, 24)
    assert built_up.shape == (2, 1, 32, 24)
    assert gates.shape == (2, len(GATE_ORDER), 32, 24)
    assert float(built_up.min()) >= 0.0 and float(built_up.max()) <= 1.0
    for k in ("inv_vhr", "inv_ntl", "feat_vhr", "feat_ntl", "feat_s2", "feat_temporal"):
        assert aux[k].shape == (2, 64, 32, 24), k
    assert aux["flow"].shape == (2, 2, 32, 24)
    assert aux["s2_probs"].shape == (2, 8, 32, 24) and len(aux["season_logits"]) == 4
    assert count_parameters(net) < 3_000_000
    # train mode (batch statistics) too
    net.train()
    try:
        out = net(*example_inputs(2, 16, 20, seed=2))
        assert all(torch.isfinite(o).all() for o in out)
    finally:
        net.eval()


@pytest.mark.parametrize("name,present", parity_subsets() + [("none", ())])
def test_gates_and_outputs_for_every_subset(net, name, present):
    x = example_inputs(1, 20, 16, seed=3, present=present)
    with torch.no_grad():
        logits, built_up, gates = net(*x)
    assert torch.isfinite(logits).all() and torch.isfinite(built_up).all()
    assert torch.isfinite(gates).all()
    expect = torch.tensor(group_present(present)).view(1, 4, 1, 1)
    assert torch.all(gates[expect.expand_as(gates) == 0] == 0)          # absent: exactly 0
    total = gates.sum(dim=1)
    target = 1.0 if present else 0.0
    assert torch.allclose(total, torch.full_like(total, target), atol=1e-5)


def test_gates_with_per_cell_masks():
    torch.manual_seed(1)
    for fusion in ("gated", "concat"):
        net = randomise(UrbanFusionNet(fusion=fusion, **TINY))
        x = example_inputs(2, 16, 16, seed=4, valid_prob=0.5)
        with torch.no_grad():
            _, _, gates, aux = net(*x, return_aux=True)
        masks = aux["group_masks"]
        assert torch.all(gates[masks == 0] == 0)
        any_present = masks.sum(dim=1) > 0
        assert torch.allclose(gates.sum(dim=1)[any_present],
                              torch.ones(int(any_present.sum())), atol=1e-5)
        assert torch.all(gates.sum(dim=1)[~any_present] == 0)


# ------------------------------------------------------------------ alignment

@pytest.mark.parametrize("h,w", [(4, 4), (5, 7), (16, 12), (33, 20)])
def test_flow_warp_zero_flow_is_identity(h, w):
    x = torch.randn(2, 5, h, w, generator=torch.Generator().manual_seed(h * w))
    out = flow_warp(x, torch.zeros(2, 2, h, w))
    assert out.shape == x.shape
    assert float((out - x).abs().max()) < 1e-5


@pytest.mark.parametrize("dx,dy", [(2, 0), (0, -3), (1, 2), (-2, -1)])
def test_flow_warp_integer_flow_shifts_by_cells(dx, dy):
    h, w = 12, 16
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(7))
    flow = torch.zeros(1, 2, h, w)
    flow[:, 0], flow[:, 1] = float(dx), float(dy)
    out = flow_warp(x, flow)
    # out[y, x] = in[y + dy, x + dx]; coordinates past the edge clamp to it (border padding)
    ys = torch.arange(h).add(dy).clamp(0, h - 1)
    xs = torch.arange(w).add(dx).clamp(0, w - 1)
    expect = x[:, :, ys][:, :, :, xs]
    assert float((out - expect).abs().max()) < 1e-5


def test_offsets_start_at_zero_and_vanish_where_a_modality_is_missing():
    torch.manual_seed(2)
    fresh = UrbanFusionNet(**TINY).eval()
    x = example_inputs(1, 16, 16, seed=5)
    with torch.no_grad():
        assert float(fresh(*x, return_aux=True)[3]["flow"].abs().max()) == 0.0  # zero init
        net = randomise(UrbanFusionNet(**TINY))
        flow = net(*x, return_aux=True)[3]["flow"]
        assert float(flow.abs().max()) > 0
        assert float(flow.abs().max()) <= net.config["max_offset"]
        valid = x[-1].clone()
        valid[:, 0, :8] = 0      # no VHR in the top half: no offset there
        flow = net(*x[:-1], valid, return_aux=True)[3]["flow"]
        assert float(flow[:, :, :8].abs().max()) == 0.0
        assert float(flow[:, :, 8:].abs().max()) > 0
        off = randomise(UrbanFusionNet(align=False, **TINY))
        assert not hasattr(off.align, "offset")
        out = off(*x, return_aux=True)
        assert float(out[3]["flow"].abs().max()) == 0.0
        assert all(torch.isfinite(o).all() for o in out[:3])


# ------------------------------------------------------------------ Sentinel-2

@pytest.mark.parametrize("seasons", [SEASONS, ("s2_spring", "s2_autumn"), ("s2_winter",), ()])
def test_s2_decision_fusion_is_mean_of_present_season_softmaxes(net, seasons):
    present = ("vhr",) + tuple(seasons)
    x = example_inputs(2, 12, 16, seed=6, present=present)
    with torch.no_grad():
        aux = net(*x, return_aux=True)[3]
    idx = [SEASONS.index(s) for s in seasons]
    if idx:
        expect = sum(torch.softmax(aux["season_logits"][i], dim=1) for i in idx) / len(idx)
    else:
        expect = torch.zeros_like(aux["s2_probs"])
    assert float((aux["s2_probs"] - expect).abs().max()) < 1e-6


def test_s2_decision_fusion_with_per_cell_masks(net):
    x = example_inputs(1, 16, 16, seed=7, valid_prob=0.5)
    with torch.no_grad():
        aux = net(*x, return_aux=True)[3]
    m = x[-1][:, 2:6]                                          # [1, 4, H, W]
    num = sum(torch.softmax(aux["season_logits"][i], dim=1) * m[:, i:i + 1] for i in range(4))
    expect = num / m.sum(dim=1, keepdim=True).clamp(min=1e-6)
    assert float((aux["s2_probs"] - expect).abs().max()) < 1e-6


def test_s2_feature_fusion_has_no_decision_output():
    net = UrbanFusionNet(s2_fusion="feature", **TINY).eval()
    with torch.no_grad():
        aux = net(*example_inputs(1, 8, 8), return_aux=True)[3]
    assert aux["s2_probs"] is None and aux["season_logits"] is None


# ------------------------------------------------------------------ temporal encoders

@pytest.mark.parametrize("t", [1, 5, 12, 24, 4032])
def test_spp_encoder_works_for_short_and_long_series(t):
    enc = SPP1dEncoder(t).eval()
    with torch.no_grad():
        y = enc(torch.randn(2, t, 3, 5))
    assert y.shape == (2, enc.out_dim, 3, 5) and torch.isfinite(y).all()
    assert enc.length >= min(t, 3)                   # the 3-bin pyramid sees real steps
    if t == 4032:                                    # the paper's layers, unchanged
        assert [(k, s) for k, s, _, _ in enc.plan] == [(24, 1), (24, 24), (7, 1), (7, 7), (3, 1)]


def test_temporal_encoders_are_per_cell():
    for enc in (SPP1dEncoder(12).eval(), BiLSTMEncoder(12).eval()):
        x = torch.randn(1, 12, 4, 6)
        with torch.no_grad():
            y = enc(x)
            x2 = x.clone()
            x2[:, :, 1, 2] += 5.0
            changed = (enc(x2) - y).abs().amax(dim=(0, 1)) > 0
        assert changed[1, 2] and int(changed.sum()) == 1


# ------------------------------------------------------------------ losses

def test_losses_are_zero_not_nan_without_cells():
    # no labelled cell, and no cell with both VHR and NTL (the consistency loss needs no
    # labels, only co-located features)
    net = randomise(UrbanFusionNet(**TINY))
    x = example_inputs(2, 8, 8, seed=8, present=MODALITY_ORDER[1:])
    out = net(*x, return_aux=True)
    target = torch.full((2, 8, 8), 255, dtype=torch.long)
    total, parts = L.fusion_loss(out, target, builtup_target=torch.rand(2, 1, 8, 8))
    assert float(total.detach()) == 0.0 and all(v == 0.0 for v in parts.values())
    total.backward()                                # the graph is kept


def test_consistency_and_triplet_loss_values():
    g = torch.Generator().manual_seed(9)
    target = torch.randint(0, 8, (2, 6, 6), generator=g)
    # one direction per class, identical across modalities: both losses are 0
    basis = torch.eye(8)
    feat = basis[target].permute(0, 3, 1, 2).contiguous()
    assert float(L.feature_consistency_loss(feat, feat.clone())) < 1e-6
    assert float(L.triplet_loss(feat, feat.clone(), target, generator=g)) == 0.0
    # unrelated features: both positive; masked out entirely: 0
    other = torch.randn(2, 8, 6, 6, generator=g)
    assert float(L.feature_consistency_loss(feat, other)) > 0.1
    assert float(L.triplet_loss(feat, other, target, generator=g)) > 0.0
    none = torch.zeros(2, 1, 6, 6)
    assert float(L.feature_consistency_loss(feat, other, none)) == 0.0
    assert float(L.triplet_loss(feat, other, target, none, generator=g)) == 0.0
    # bounded sampling on a large map
    big_t = torch.randint(0, 8, (2, 128, 128), generator=g)
    big = torch.randn(2, 16, 128, 128, generator=g)
    assert torch.isfinite(L.triplet_loss(big, big.flip(1), big_t, max_cells=64, generator=g))


def test_segmentation_losses_respect_ignore_and_weights():
    g = torch.Generator().manual_seed(10)
    logits = torch.randn(2, 8, 6, 6, generator=g)
    target = torch.randint(0, 8, (2, 6, 6), generator=g)
    masked = target.clone()
    masked[:, :3] = 255
    a = L.seg_loss(logits, masked)
    b = L.seg_loss(logits[:, :, 3:], target[:, 3:])
    assert torch.allclose(a, b, atol=1e-6)          # ignored cells do not count
    perfect = torch.nn.functional.one_hot(target, 8).permute(0, 3, 1, 2).float() * 50
    assert float(L.seg_loss(perfect, target)) < 1e-3
    w = torch.ones(8)
    assert torch.allclose(L.seg_loss(logits, target, w), L.seg_loss(logits, target))


def test_modality_dropout_never_drops_everything():
    g = torch.Generator().manual_seed(11)
    valid = torch.ones(64, 7, 4, 4)
    valid[:32, 0] = 0                                  # VHR absent in half the samples
    out = L.modality_dropout(valid, 1.0, g)
    per_sample = out.flatten(2).amax(dim=2)
    assert torch.all(per_sample.sum(dim=1) == 1)       # p=1: exactly one modality kept
    assert torch.all(per_sample[:32, 0] == 0)          # absent stays absent
    assert torch.equal(L.modality_dropout(valid, 0.0, g), valid)
    kept = L.modality_dropout(torch.ones(2000, 7, 1, 1), 0.3, g).mean()
    assert 0.65 < float(kept) < 0.75
    assert torch.equal(L.modality_dropout(torch.zeros(3, 7, 2, 2), 0.5, g),
                       torch.zeros(3, 7, 2, 2))        # nothing present: nothing to keep
    x = example_inputs(64, 4, 4)
    zeroed = L.zero_absent(x[:-1], out)
    for k, t in enumerate(zeroed):
        gone = per_sample[:, k] == 0
        assert float(t[gone].abs().sum()) == 0.0
        assert torch.equal(t[~gone], x[k][~gone])


def test_tiny_overfit_lowers_total_loss():
    torch.manual_seed(12)
    net = UrbanFusionNet(**TINY).train()
    g = torch.Generator().manual_seed(12)
    x = example_inputs(2, 16, 16, seed=12, valid_prob=0.9)
    # blocky labels (4x4 cells) tied to the NTL input so the task is learnable
    target = torch.randint(0, 8, (2, 4, 4), generator=g)
    target = target.repeat_interleave(4, 1).repeat_interleave(4, 2)
    target[:, 0, 0] = 255
    builtup = (target < 4).float().unsqueeze(1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    history = []
    for step in range(30):
        valid = L.modality_dropout(x[-1], 0.2, g) if step % 2 else x[-1]
        out = net(*L.zero_absent(x[:-1], valid), valid, return_aux=True)
        total, parts = L.fusion_loss(out, target, builtup, generator=g)
        assert torch.isfinite(total) and set(parts) == {"seg", "fc", "tri", "builtup", "s2"}
        opt.zero_grad()
        total.backward()
        opt.step()
        if step % 2 == 0:
            history.append(float(total.detach()))
    assert history[-1] < 0.7 * history[0], history


# ------------------------------------------------------------------ ONNX export

def _export(tmp_path_factory, name, config):
    torch.manual_seed(13)
    net = randomise(UrbanFusionNet(**config))
    d = tmp_path_factory.mktemp(name)
    ckpt, onnx_path = str(d / "net.pt"), str(d / "net.onnx")
    torch.save({"config": net.config, "state_dict": net.state_dict()}, ckpt)
    proc = subprocess.run([sys.executable, "-m", "plugin.learning.fusion.export", ckpt,
                           onnx_path, "--threads", "1"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return net, onnx_path, summary


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    # the bundled design: the SceneResNet VHR trunk (tiles in multiples of 8 cells)
    return _export(tmp_path_factory, "default", {"vhr_encoder": "scene_resnet"})


@pytest.fixture(scope="module")
def exported_ablation(tmp_path_factory):
    return _export(tmp_path_factory, "ablation",
                   dict(temporal_encoder="bilstm", align=False, fusion="concat",
                        s2_fusion="feature", **TINY))


def _ort_parity(net, onnx_path, height, width, batch=1):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == list(INPUT_NAMES)
    assert [o.name for o in sess.get_outputs()] == list(OUTPUT_NAMES)
    model = FusionProbabilityModel(net).eval()
    worst = {}
    cases = parity_subsets() + [("random_masks", None)]
    for k, (name, present) in enumerate(cases):
        x = example_inputs(batch, height, width, seed=100 + k, config=net.config,
                           **({"present": present} if present else {"valid_prob": 0.6}))
        with torch.no_grad():
            ref = [t.numpy() for t in model(*x)]
        out = sess.run(None, {n: t.numpy() for n, t in zip(INPUT_NAMES, x)})
        assert [o.shape for o in out] == [r.shape for r in ref], name
        worst[name] = max(float(np.abs(o - r).max()) for o, r in zip(out, ref))
    return worst


def test_onnx_export_default(exported):
    net, onnx_path, summary = exported
    assert summary["opset"] == 17 and summary["ir_version"] == 8
    assert summary["parity_max_abs_diff"] < 1e-4 and summary["parity_cases"] == 40
    assert os.path.getsize(onnx_path) < 20e6
    worst = _ort_parity(net, onnx_path, 40, 16)        # exported at 32 x 32
    assert len(worst) == 20 and max(worst.values()) < 1e-4, worst


def test_onnx_export_bilstm_and_ablations(exported_ablation):
    net, onnx_path, summary = exported_ablation
    assert summary["opset"] == 17 and summary["parity_max_abs_diff"] < 1e-4
    assert os.path.getsize(onnx_path) < 20e6
    worst = _ort_parity(net, onnx_path, 12, 44, batch=3)
    assert max(worst.values()) < 1e-4, worst


# ------------------------------------------------------------------ VHR trunk from the classifier

VHR_MODEL = os.path.join(ROOT, "models", "vhr_scenes_resnet.onnx")


def test_scene_resnet_trunk_shapes_and_tile_multiple():
    torch.manual_seed(3)
    net = randomise(UrbanFusionNet(vhr_encoder="scene_resnet"))
    assert net.size_multiple == 8 and net.config["vhr_low"] == net.config["vhr_scene_width"]
    x = example_inputs(2, 40, 16, seed=2, config=net.config)
    assert x[0].shape[-2:] == (200, 80)
    logits, built_up, gates = net(*x)
    assert logits.shape == (2, 8, 40, 16) and built_up.shape == (2, 1, 40, 16)
    assert torch.allclose(gates.sum(dim=1), torch.ones(2, 40, 16), atol=1e-5)
    s1, s2 = net.vhr_trunk(x[0])
    assert s1.shape[-2:] == (50, 20) and s2.shape[-2:] == (25, 10)    # 8 m and 16 m
    with pytest.raises(ValueError, match="multiples of 8"):
        example_inputs(1, 36, 36, config=net.config)


def test_vhr_trunk_starts_from_the_bundled_vhr_classifier():
    """The trainer's --vhr-init: the trunk computes exactly what the bundled classifier's stem
    and first two stages compute, and the card record names the file and its hash."""
    pytest.importorskip("onnx")
    import hashlib
    from plugin.learning.fusion.train import VHR_LR_MULT, load_vhr_init
    scene_net, record = load_vhr_init(VHR_MODEL)
    with open(VHR_MODEL, "rb") as f:
        assert record["sha256"] == hashlib.sha256(f.read()).hexdigest()
    from plugin.learning.onnx_io import weights_sha256
    assert record["weights_sha256"] == weights_sha256(VHR_MODEL)
    assert record["file"] == "models/vhr_scenes_resnet.onnx" and record["lr_mult"] == VHR_LR_MULT
    assert len(record["mean"]) == 3 and all(0 < v < 1 for v in record["std"])
    net = UrbanFusionNet(vhr_encoder="scene_resnet", vhr_scene_width=record["width"]).eval()
    img = torch.randn(1, 3, 80, 120, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = net.vhr_trunk(img)[1]
        net.vhr_trunk.load_scene_resnet(scene_net)
        s1, s2 = net.vhr_trunk(img)
        ref1 = scene_net.layers[0:2](scene_net.stem(img))
        ref2 = scene_net.layers[2:4](ref1)
    assert torch.equal(s1, ref1) and torch.equal(s2, ref2)
    assert not torch.allclose(before, s2)           # the weights did change
    assert record["parameters_copied"] == count_parameters(net.vhr_trunk)


def test_vhr_init_refuses_a_missing_file(tmp_path):
    from plugin.learning.fusion.train import load_vhr_init
    with pytest.raises(SystemExit, match="make train-vhr"):
        load_vhr_init(str(tmp_path / "nope.onnx"))
