"""Export a trained VHR scene checkpoint to ONNX (one model per process) and check it.

    python -m plugin.learning.vhr_export CHECKPOINT.pt OUT.onnx

The graph maps patches ``[N, 3, P, P]`` (normalised) to probabilities ``[N, 8]`` averaged over
the checkpoint's test-time views (``io.views``, see :class:`.vhr_model.ProbabilityNet`); the batch is
dynamic, the patch size fixed (the card's ``patch_px``). Parity with torch is checked in
onnxruntime at batch sizes other than the exported one. As in :mod:`.export`, the exporter's
optimiser is left off (see :mod:`.onnx_io`).
"""
import sys

import numpy as np

from . import onnx_io
from .onnx_io import OPSET

EXPORT_BATCH = 2
CHECK_BATCHES = (1, 5, 37)
PARITY_TOL = 1e-4


def load_checkpoint(path):
    from .vhr_model import SceneResNet
    return onnx_io.load_checkpoint(path, SceneResNet)


def torch_net_from_onnx(onnx_path, config):
    """The torch network whose weights are the ONNX file's initializers (``net.*``)."""
    from .vhr_model import SceneResNet
    return onnx_io.torch_net_from_onnx(onnx_path, SceneResNet, config)


def export(net, out_path, patch_px, input_name, output_name, views=("identity",)):
    import warnings

    import torch
    from torch.export import Dim
    from .vhr_model import ProbabilityNet
    model = ProbabilityNet(net, views).eval()
    x = torch.randn(EXPORT_BATCH, net.config["in_bands"], patch_px, patch_px,
                    generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), out_path, input_names=[input_name],
                          output_names=[output_name],
                          dynamic_shapes={"x": {0: Dim("batch", min=1, max=65536)}},
                          dynamo=True, external_data=False, opset_version=OPSET, optimize=False,
                          verbose=False)
    onnx_io.lower_ir_version(out_path)
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


def _export_and_check(args):
    net, ckpt = load_checkpoint(args.checkpoint)
    io = ckpt["io"]
    views = tuple(io.get("views", ("identity",)))
    model = export(net, args.out, io["patch_px"], io["input"], io["output"], views)
    diff = check_parity(model, args.out, io["patch_px"], io["input"])
    return diff, {"parity_batches": list(CHECK_BATCHES), "views": list(views)}


def main(argv=None):
    return onnx_io.export_main(__doc__, _export_and_check, argv, PARITY_TOL, threads=2)


if __name__ == "__main__":
    sys.exit(main())
