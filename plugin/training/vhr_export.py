"""Export a trained VHR scene checkpoint to ONNX (one model per process) and check it.

    python -m plugin.training.vhr_export CHECKPOINT.pt OUT.onnx

The graph maps patches ``[N, 3, P, P]`` (normalised) to probabilities ``[N, 8]``; the batch is
dynamic, the patch size fixed (the card's ``patch_px``). Parity with torch is checked in
onnxruntime at batch sizes other than the exported one. As in :mod:`.export`, the exporter's
optimiser is left off, so every weight stays an initializer named ``net.<state_dict key>`` and
the torch network can be rebuilt from the ONNX file alone (:func:`torch_net_from_onnx`).
"""
import argparse
import json
import os
import sys

import numpy as np

from .export import OPSET, _lower_ir_version

EXPORT_BATCH = 2
CHECK_BATCHES = (1, 5, 37)
PARITY_TOL = 1e-4


def load_checkpoint(path):
    import torch
    from .vhr_model import SceneResNet
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    net = SceneResNet(**ckpt["config"])
    net.load_state_dict(ckpt["state_dict"])
    return net.eval(), ckpt


def torch_net_from_onnx(onnx_path, config):
    """The torch network whose weights are the ONNX file's initializers (``net.*``)."""
    import onnx
    import torch
    from onnx import numpy_helper
    from .vhr_model import SceneResNet
    net = SceneResNet(**config)
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


def export(net, out_path, patch_px, input_name, output_name):
    import warnings

    import torch
    from torch.export import Dim
    from .vhr_model import ProbabilityNet
    model = ProbabilityNet(net).eval()
    x = torch.randn(EXPORT_BATCH, net.config["in_bands"], patch_px, patch_px,
                    generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), out_path, input_names=[input_name],
                          output_names=[output_name],
                          dynamic_shapes={"x": {0: Dim("batch", min=1, max=65536)}},
                          dynamo=True, external_data=False, opset_version=OPSET, optimize=False,
                          verbose=False)
    _lower_ir_version(out_path)
    return model


def check_parity(model, onnx_path, patch_px, input_name, batches=CHECK_BATCHES):
    """Max |onnxruntime - torch| over random patches at other batch sizes."""
    import onnxruntime as ort
    import torch
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    worst = 0.0
    for b in batches:
        x = torch.randn(b, 3, patch_px, patch_px, generator=torch.Generator().manual_seed(b))
        with torch.no_grad():
            ref = model(x).numpy()
        out = sess.run(None, {input_name: x.numpy()})[0]
        if out.shape != ref.shape:
            raise RuntimeError(f"onnxruntime output shape {out.shape} != torch {ref.shape}")
        worst = max(worst, float(np.abs(out - ref).max()))
    return worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    net, ckpt = load_checkpoint(args.checkpoint)
    io = ckpt["io"]
    model = export(net, args.out, io["patch_px"], io["input"], io["output"])
    diff = check_parity(model, args.out, io["patch_px"], io["input"])
    if diff > PARITY_TOL:
        raise SystemExit(f"ONNX parity check failed: max |ort - torch| = {diff:.3g}")
    import onnx
    proto = onnx.load(args.out)
    print(json.dumps({"onnx": args.out, "parity_max_abs_diff": diff,
                      "parity_batches": list(CHECK_BATCHES),
                      "bytes": os.path.getsize(args.out), "ir_version": proto.ir_version,
                      "opset": max(o.version for o in proto.opset_import
                                   if o.domain in ("", "ai.onnx"))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
