"""Export a user-trained fusion checkpoint to ONNX (one model per process) and check it.

    python -m plugin.learning.user_export CHECKPOINT.pt OUT.onnx

The checkpoint is ``torch.save({"config", "state_dict", "present"[, "off_classes"]}, weights
only)``; ``off_classes`` (class indices the training labels never showed) get probability 0.
The graph takes only the trained inputs (``present``, in MODALITY_ORDER) and ``valid``
[N, len(present), H, W]; outputs ``probs``, ``built_up`` and ``gates`` as the bundled fusion
model. Batch and spatial sizes are dynamic; parity with torch is checked in onnxruntime at
two sizes other than the exported one, with random masks. Prints one JSON line.
"""
import inspect
import sys
import warnings

import numpy as np

from . import onnx_io
from .onnx_io import OPSET

EXPORT_CELLS = (32, 32)
CHECK_CELLS = ((24, 40), (48, 16))
PARITY_TOL = 1e-4
OUTPUT_NAMES = ("probs", "built_up", "gates")
MASK_NAME = "valid"


def build_model(config, present, state_dict=None, off_classes=()):
    import torch
    from .fusion.net import UrbanFusionNet
    from .fusion.subset import SubsetFusionModel
    net = UrbanFusionNet(**config)
    if state_dict is not None:
        net.load_state_dict({k: torch.as_tensor(v) for k, v in state_dict.items()})
    return SubsetFusionModel(net, present, off_classes=off_classes).eval()


def example_inputs(model, n, h, w, seed=0, valid_prob=None):
    """Random inputs for the present modalities and a mask (random per cell with valid_prob)."""
    import torch
    from .fusion.net import NTL_FACTOR, VHR_FACTOR
    cfg = model.net.config
    g = torch.Generator().manual_seed(seed)
    xs = []
    for name in model.present:
        if name == "vhr":
            shape = (cfg["vhr_bands"], h * VHR_FACTOR, w * VHR_FACTOR)
        elif name in ("ntl", "temporal"):
            bands = cfg["ntl_bands"] if name == "ntl" else cfg["temporal_steps"]
            shape = (bands, h // NTL_FACTOR, w // NTL_FACTOR)
        else:
            shape = (cfg["s2_bands"], h, w)
        xs.append(torch.randn((n,) + shape, generator=g))
    valid = torch.ones(n, len(model.present), h, w)
    if valid_prob is not None:
        valid = (torch.rand(n, len(model.present), h, w, generator=g) < valid_prob).float()
    return tuple(xs) + (valid,)


def export(model, out_path, cells=EXPORT_CELLS):
    import torch
    from torch.export import Dim
    from .fusion.net import VHR_FACTOR
    names = list(model.present) + [MASK_NAME]
    x = example_inputs(model, 2, *cells, seed=1)
    unit = model.net.size_multiple
    n = Dim("batch", min=1, max=1024)
    h = Dim("height_units", min=1, max=8192)
    w = Dim("width_units", min=1, max=8192)
    factor = {"vhr": VHR_FACTOR * unit, "ntl": unit // 4, "temporal": unit // 4}
    shapes = {nm: {0: n, 2: factor.get(nm, unit) * h, 3: factor.get(nm, unit) * w}
              for nm in names}
    # torch.export names the forward's *args as one tuple argument
    params = list(inspect.signature(model.forward).parameters)
    dynamic_shapes = {params[0]: tuple(shapes[nm] for nm in names)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, x, out_path, input_names=names, output_names=list(OUTPUT_NAMES),
                          dynamic_shapes=dynamic_shapes, dynamo=True, external_data=False,
                          opset_version=OPSET, optimize=False, verbose=False)
    onnx_io.lower_ir_version(out_path)


def check_parity(model, onnx_path, cells=CHECK_CELLS):
    """Max |onnxruntime - torch| over the outputs at sizes other than the exported one."""
    import onnxruntime as ort
    import torch
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    names = list(model.present) + [MASK_NAME]
    worst = 0.0
    for k, (hh, ww) in enumerate(cells):
        for prob in (None, 0.7):
            x = example_inputs(model, 2, hh, ww, seed=10 * k + (prob is not None),
                               valid_prob=prob)
            with torch.no_grad():
                ref = [t.numpy() for t in model(*x)]
            out = sess.run(list(OUTPUT_NAMES), {nm: t.numpy() for nm, t in zip(names, x)})
            for r, o in zip(ref, out):
                if r.shape != o.shape or not np.isfinite(o).all():
                    raise RuntimeError(f"onnxruntime output {o.shape} differs from torch {r.shape}")
                worst = max(worst, float(np.abs(r - o).max()))
    return worst


def _export_and_check(args):
    import torch
    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    model = build_model(ckpt["config"], tuple(ckpt["present"]), ckpt["state_dict"],
                        tuple(ckpt.get("off_classes", ())))
    export(model, args.out)
    return check_parity(model, args.out), {}


def main(argv=None):
    return onnx_io.export_main(__doc__, _export_and_check, argv, PARITY_TOL)


if __name__ == "__main__":
    sys.exit(main())
