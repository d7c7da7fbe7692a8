"""Export an UrbanFusionNet checkpoint to ONNX (one model per process) and check it.

    python -m plugin.learning.fusion.export CHECKPOINT.pt OUT.onnx [--threads N]

The checkpoint is ``torch.save({"config": net.config, "state_dict": net.state_dict()})``.
Graph inputs: vhr, ntl, s2_spring, s2_summer, s2_autumn, s2_winter, temporal, valid (see
:mod:`.net`); outputs: ``probs`` [N, 8, H, W] (softmax), ``built_up`` [N, 1, H, W], ``gates``
[N, 4, H, W]. Batch and spatial sizes are dynamic: H and W any multiple of the network's
``size_multiple`` (8 with the SceneResNet VHR trunk, 4 with the patchify one); vhr 5H, ntl and
temporal H/4, Sentinel-2 and valid H.

Parity with torch is checked in onnxruntime at two spatial sizes other than the exported one,
for every non-empty subset of the inputs with the four Sentinel-2 seasons as one group (15) and
for each single season alone (4); absent inputs are zeros with mask 0. The exporter's graph
optimiser is left off (see ..onnx_io), so the file keeps ``net.*`` initializers.
Prints one JSON line (..onnx_io.export_summary).
"""
import argparse
import inspect
import itertools
import json
import os
import sys
import warnings

import numpy as np

from .. import onnx_io
from ..onnx_io import OPSET

EXPORT_CELLS = (32, 32)
CHECK_CELLS = ((24, 40), (40, 16))   # (height, width), both differ from the export size
CHECK_BATCH = 2
PARITY_TOL = 1e-4
OUTPUT_NAMES = ("probs", "built_up", "gates")
GROUPS = {"vhr": ("vhr",), "ntl": ("ntl",),
          "s2": ("s2_spring", "s2_summer", "s2_autumn", "s2_winter"), "temporal": ("temporal",)}


def parity_subsets():
    """[(name, present input names)]: the 15 non-empty subsets of the four groups (vhr, ntl,
    the four S2 seasons together, temporal) and the 4 single-season cases."""
    out = []
    keys = list(GROUPS)
    for r in range(1, len(keys) + 1):
        for combo in itertools.combinations(keys, r):
            out.append(("+".join(combo), sum((GROUPS[k] for k in combo), ())))
    out += [(s, (s,)) for s in GROUPS["s2"]]
    return out


def load_checkpoint(path):
    from .net import UrbanFusionNet
    return onnx_io.load_checkpoint(path, UrbanFusionNet)


def export(net, out_path, cells=EXPORT_CELLS):
    """Export ``net`` (eval mode) wrapped in :class:`.net.FusionProbabilityModel`."""
    import torch
    from torch.export import Dim
    from .net import INPUT_NAMES, FusionProbabilityModel, example_inputs
    model = FusionProbabilityModel(net).eval()
    # batch 2 in the example so torch.export does not specialise the batch dimension to 1
    x = example_inputs(2, *cells, seed=1, config=net.config)
    n = Dim("batch", min=1, max=1024)
    unit = net.size_multiple                         # output cells per size unit
    h = Dim("height_units", min=1, max=8192)
    w = Dim("width_units", min=1, max=8192)
    # sizes in units: vhr 5 * unit px per unit, ntl / temporal unit / 4, the others unit
    factor = {"vhr": 5 * unit, "ntl": unit // 4, "temporal": unit // 4}
    shapes = {nm: {0: n, 2: factor.get(nm, unit) * h, 3: factor.get(nm, unit) * w}
              for nm in INPUT_NAMES}
    params = list(inspect.signature(model.forward).parameters)
    dynamic_shapes = {p: shapes[nm] for p, nm in zip(params, INPUT_NAMES)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, x, out_path, input_names=list(INPUT_NAMES),
                          output_names=list(OUTPUT_NAMES), dynamic_shapes=dynamic_shapes,
                          dynamo=True, external_data=False, opset_version=OPSET, optimize=False,
                          verbose=False)
    onnx_io.lower_ir_version(out_path)
    return model


def check_parity(model, onnx_path, cells=CHECK_CELLS, batch=CHECK_BATCH):
    """{case: max |onnxruntime - torch| over the three outputs} for every subset in
    :func:`parity_subsets` at every size in ``cells``, plus random per-cell masks."""
    import onnxruntime as ort
    import torch
    from .net import INPUT_NAMES, MODALITY_ORDER, example_inputs
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    config = model.net.config
    cases = [(name, present, None) for name, present in parity_subsets()]
    cases.append(("all_random_masks", MODALITY_ORDER, 0.7))
    result = {}
    for hh, ww in cells:
        for k, (name, present, prob) in enumerate(cases):
            x = example_inputs(batch, hh, ww, seed=1000 * hh + ww + k, present=present,
                               config=config, valid_prob=prob)
            with torch.no_grad():
                ref = [t.numpy() for t in model(*x)]
            out = sess.run(list(OUTPUT_NAMES), {nm: t.numpy() for nm, t in zip(INPUT_NAMES, x)})
            for r, o, nm in zip(ref, out, OUTPUT_NAMES):
                if r.shape != o.shape:
                    raise RuntimeError(f"{name} {nm}: onnxruntime {o.shape} != torch {r.shape}")
                if not np.isfinite(o).all():
                    raise RuntimeError(f"{name} {nm}: non-finite onnxruntime output")
            key = f"{name}@{hh}x{ww}"
            result[key] = max(float(np.abs(o - r).max()) for r, o in zip(ref, out))
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    from .net import count_parameters
    net, _ = load_checkpoint(args.checkpoint)
    model = export(net, args.out)
    diffs = check_parity(model, args.out)
    worst = max(diffs.values())
    if worst > PARITY_TOL:
        bad = {k: v for k, v in diffs.items() if v > PARITY_TOL}
        raise SystemExit(f"ONNX parity check failed (max |ort - torch| > {PARITY_TOL}): {bad}")
    print(json.dumps(onnx_io.export_summary(args.out, parity_max_abs_diff=worst,
                                            parity_cases=len(diffs),
                                            parameters=count_parameters(net))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
