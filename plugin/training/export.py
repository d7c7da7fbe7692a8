"""Export a trained checkpoint to ONNX (one model per process) and check it in onnxruntime.

    python -m plugin.training.export CHECKPOINT.pt OUT.onnx [--card CARD.json]

The graph keeps batch and spatial sizes dynamic (vhr = 20h, ntl = h, Sentinel-2/mask/output = 4h
for any h); parity with torch is checked at spatial sizes other than the exported one.

The exporter's graph optimiser is left off: every weight then stays an initializer named
``net.<state_dict key>``, so the torch network can be rebuilt from the ONNX file alone
(:func:`torch_net_from_onnx`, used by the parity test). onnxruntime folds batch norms and
constants itself when it loads the model.
"""
import argparse
import json
import os
import sys

import numpy as np

EXPORT_CELLS = 64
CHECK_CELLS = (40, 96)
PARITY_TOL = 1e-4
OPSET = 17  # with IR 8: onnxruntime >= 1.13 runs it (QGIS users often have older wheels)


def load_checkpoint(path):
    import torch
    from .model import SampleCityFusionNet
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    net = SampleCityFusionNet(**ckpt["config"])
    net.load_state_dict(ckpt["state_dict"])
    return net.eval(), ckpt


def torch_net_from_onnx(onnx_path, config):
    """The torch network whose weights are the ONNX file's initializers (``net.*``)."""
    import onnx
    import torch
    from onnx import numpy_helper
    from .model import SampleCityFusionNet
    net = SampleCityFusionNet(**config)
    model = onnx.load(onnx_path)
    weights = {i.name[len("net."):]: numpy_helper.to_array(i) for i in model.graph.initializer
               if i.name.startswith("net.")}
    state = net.state_dict()
    missing = [k for k in state if k not in weights and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"{onnx_path} lacks weights {missing[:5]}...")
    net.load_state_dict({k: (torch.from_numpy(weights[k].copy()) if k in weights else v)
                         for k, v in state.items()})
    return net.eval()


def set_card(onnx_path, card, out_path=None):
    """Store ``card`` (dict) as JSON in the ONNX ``metadata_props`` under ``model_card``."""
    import onnx
    from ..core.model_card import METADATA_KEY
    from .card import card_json
    model = onnx.load(onnx_path)
    keep = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    for p in keep:
        model.metadata_props.add(key=p.key, value=p.value)
    model.metadata_props.add(key=METADATA_KEY, value=card_json(card))
    model.doc_string = card.get("summary", "")
    onnx.checker.check_model(model)
    tmp = (out_path or onnx_path) + ".tmp"
    onnx.save(model, tmp)
    os.replace(tmp, out_path or onnx_path)


def export(net, out_path, input_names, output_name, mask_name):
    import torch
    from torch.export import Dim
    from .model import ProbabilityModel, example_inputs
    model = ProbabilityModel(net).eval()
    x = example_inputs(1, EXPORT_CELLS, seed=1)
    n = Dim("batch", min=1, max=1024)
    h = Dim("ntl_height", min=1, max=16384)
    w = Dim("ntl_width", min=1, max=16384)
    names = list(input_names) + [mask_name]
    shapes = {}
    for name in names:
        if name == "vhr":
            shapes[name] = {0: n, 2: 20 * h, 3: 20 * w}
        elif name == "ntl":
            shapes[name] = {0: n, 2: h, 3: w}
        else:
            shapes[name] = {0: n, 2: 4 * h, 3: 4 * w}
    # torch.export names the forward arguments; map them to the card's input names by position
    import inspect
    params = list(inspect.signature(model.forward).parameters)
    dynamic_shapes = {p: shapes[nm] for p, nm in zip(params, names)}
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, x, out_path, input_names=names, output_names=[output_name],
                          dynamic_shapes=dynamic_shapes, dynamo=True, external_data=False,
                          opset_version=OPSET, optimize=False, verbose=False)
    _lower_ir_version(out_path)
    return model


def _lower_ir_version(path, ir_version=8):
    """IR 8 (with opset 17) loads in onnxruntime >= 1.13; the exporter writes IR 10."""
    import onnx
    model = onnx.load(path)
    if model.ir_version > ir_version and all(o.version <= OPSET for o in model.opset_import
                                             if o.domain in ("", "ai.onnx")):
        model.ir_version = ir_version
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, path)


def check_parity(model, onnx_path, input_names, mask_name, cells=CHECK_CELLS):
    """Max |onnxruntime - torch| over random inputs at other sizes, with random masks."""
    import onnxruntime as ort
    import torch
    from .model import example_inputs
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    names = list(input_names) + [mask_name]
    worst = 0.0
    for c in cells:
        x = example_inputs(2, c, seed=c)
        with torch.no_grad():
            ref = model(*x).numpy()
        out = sess.run(None, {k: v.numpy() for k, v in zip(names, x)})[0]
        if out.shape != ref.shape:
            raise RuntimeError(f"onnxruntime output shape {out.shape} != torch {ref.shape}")
        worst = max(worst, float(np.abs(out - ref).max()))
    return worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--card", help="card JSON file to store in the ONNX metadata")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    net, ckpt = load_checkpoint(args.checkpoint)
    io = ckpt["io"]
    model = export(net, args.out, io["inputs"], io["output"], io["mask"])
    diff = check_parity(model, args.out, io["inputs"], io["mask"])
    if diff > PARITY_TOL:
        raise SystemExit(f"ONNX parity check failed: max |ort - torch| = {diff:.3g}")
    if args.card:
        with open(args.card, encoding="utf-8") as f:
            set_card(args.out, json.load(f))
    import onnx
    proto = onnx.load(args.out)
    print(json.dumps({"onnx": args.out, "parity_max_abs_diff": diff,
                      "bytes": os.path.getsize(args.out), "ir_version": proto.ir_version,
                      "opset": max(o.version for o in proto.opset_import
                                   if o.domain in ("", "ai.onnx"))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
