"""Export a trained VHR scene checkpoint to ONNX (one model per process) and check it.

    python -m plugin.learning.vhr_export CHECKPOINT.pt OUT.onnx

The graph is the shared-trunk form (:class:`.vhr_model.SharedTrunkNet`, see
:mod:`plugin.core.shared_trunk`): a tile of windows ``[N, 3, H, W]`` (H, W multiples of the trunk
stride) and two pooling matrices in, probabilities ``[N, 8, h, w]`` out. Batch, tile and cell
counts are dynamic. The test-time views (``io.views``) are applied by the engine, which flips the
input and averages. Two parity checks in onnxruntime, at shapes other than the exported one:
tiles against the torch module, and windows one by one (uniform pooling) against
:class:`.vhr_model.ProbabilityNet` (the per-window network with its views). As in
:mod:`.export`, the exporter's optimiser is left off (see :mod:`.onnx_io`).
"""
import sys

from . import onnx_io
from .onnx_io import OPSET

EXPORT_BATCH = 2
CHECK_BATCHES = (1, 5, 37)
# (feature rows, feature cols, cell rows, cell cols) of the parity tiles, one per check batch
TILE_SHAPES = ((9, 6, 7, 4), (3, 3, 1, 1), (1, 2, 1, 3))
PARITY_TOL = 1e-4
POOL_ROWS, POOL_COLS = "pool_rows", "pool_cols"


def load_checkpoint(path):
    from .vhr_model import SceneResNet
    return onnx_io.load_checkpoint(path, SceneResNet)


def torch_net_from_onnx(onnx_path, config):
    """The torch network whose weights are the ONNX file's initializers (``net.*``)."""
    from .vhr_model import SceneResNet
    return onnx_io.torch_net_from_onnx(onnx_path, SceneResNet, config)


def export(net, out_path, patch_px, input_name, output_name, views=("identity",)):
    """Write the shared-trunk graph; returns the torch module exported."""
    import warnings

    import torch
    from torch.export import Dim
    from .vhr_model import SharedTrunkNet, trunk_stride
    model = SharedTrunkNet(net).eval()
    stride = trunk_stride(net)
    gen = torch.Generator().manual_seed(1)
    hk, wk = Dim("hk", min=1, max=4096), Dim("wk", min=1, max=4096)
    x = torch.randn(EXPORT_BATCH, net.config["in_bands"], 4 * stride, 5 * stride, generator=gen)
    pool_rows, pool_cols = torch.rand(3, 4, generator=gen), torch.rand(2, 5, generator=gen)
    shapes = {"x": {0: Dim("batch", min=1, max=65536), 2: stride * hk, 3: stride * wk},
              "pool_rows": {0: Dim("rows", min=1, max=65536), 1: hk},
              "pool_cols": {0: Dim("cols", min=1, max=65536), 1: wk}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x, pool_rows, pool_cols), out_path,
                          input_names=[input_name, POOL_ROWS, POOL_COLS],
                          output_names=[output_name], dynamic_shapes=shapes, dynamo=True,
                          external_data=False, opset_version=OPSET, optimize=False, verbose=False)
    onnx_io.lower_ir_version(out_path)
    return model


def check_parity(model, onnx_path, patch_px, input_name, views=("identity",),
                 batches=CHECK_BATCHES):
    """Max |onnxruntime - torch| over random tiles (shapes other than the exported one) and
    over random windows classified one by one with ``views`` against :class:`ProbabilityNet`."""
    import onnxruntime as ort
    import torch
    from ..core.shared_trunk import WindowGraph, classify_windows
    from .vhr_model import ProbabilityNet, trunk_stride
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    output = sess.get_outputs()[0].name
    stride = trunk_stride(model.net)
    worst = 0.0
    for b, (hk, wk, h, w) in zip(batches, TILE_SHAPES):
        gen = torch.Generator().manual_seed(b)
        x = torch.randn(b, 3, hk * stride, wk * stride, generator=gen)
        pr, pc = torch.rand(h, hk, generator=gen), torch.rand(w, wk, generator=gen)
        with torch.no_grad():
            ref = model(x, pr, pc).numpy()
        out = sess.run(None, {input_name: x.numpy(), POOL_ROWS: pr.numpy(),
                              POOL_COLS: pc.numpy()})[0]
        worst = max(worst, onnx_io.max_abs_diff(out, ref))
    patch = WindowGraph(input_name, patch_px, stride, (POOL_ROWS, POOL_COLS))
    per_window = ProbabilityNet(model.net, views).eval()
    for b in batches:
        x = torch.randn(b, 3, patch_px, patch_px, generator=torch.Generator().manual_seed(b))
        with torch.no_grad():
            ref = per_window(x).numpy()
        out = classify_windows(lambda feed: sess.run([output], feed)[0], patch, x.numpy(), views)
        worst = max(worst, onnx_io.max_abs_diff(out, ref))
    return worst


def _export_and_check(args):
    net, ckpt = load_checkpoint(args.checkpoint)
    io = ckpt["io"]
    views = tuple(io.get("views", ("identity",)))
    model = export(net, args.out, io["patch_px"], io["input"], io["output"], views)
    diff = check_parity(model, args.out, io["patch_px"], io["input"], views)
    from .vhr_model import trunk_stride
    return diff, {"parity_batches": list(CHECK_BATCHES), "views": list(views),
                  "graph": "shared_trunk", "trunk_stride_px": trunk_stride(net),
                  "pool_inputs": [POOL_ROWS, POOL_COLS]}


def main(argv=None):
    return onnx_io.export_main(__doc__, _export_and_check, argv, PARITY_TOL, threads=2)


if __name__ == "__main__":
    sys.exit(main())
