"""Export a trained checkpoint to ONNX (one model per process) and check it in onnxruntime.

    python -m plugin.learning.export CHECKPOINT.pt OUT.onnx [--card CARD.json]

The graph keeps batch and spatial sizes dynamic (vhr = 20h, ntl = h, Sentinel-2/mask/output = 4h
for any h); parity with torch is checked at spatial sizes other than the exported one.

The exporter's graph optimiser is left off (see :mod:`.onnx_io`); onnxruntime folds batch norms
and constants itself when it loads the model.
"""
import json
import sys

from . import onnx_io
from .onnx_io import OPSET, set_card

EXPORT_CELLS = 64
CHECK_CELLS = (40, 96)
PARITY_TOL = 1e-4


def load_checkpoint(path):
    from .model import SampleCityFusionNet
    return onnx_io.load_checkpoint(path, SampleCityFusionNet)


def torch_net_from_onnx(onnx_path, config):
    """The torch network whose weights are the ONNX file's initializers (``net.*``)."""
    from .model import SampleCityFusionNet
    return onnx_io.torch_net_from_onnx(onnx_path, SampleCityFusionNet, config)


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
    onnx_io.lower_ir_version(out_path)
    return model


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
        worst = max(worst, onnx_io.max_abs_diff(out, ref))
    return worst


def _export_and_check(args):
    net, ckpt = load_checkpoint(args.checkpoint)
    io = ckpt["io"]
    model = export(net, args.out, io["inputs"], io["output"], io["mask"])
    diff = check_parity(model, args.out, io["inputs"], io["mask"])
    if diff <= PARITY_TOL and args.card:
        with open(args.card, encoding="utf-8") as f:
            set_card(args.out, json.load(f))
    return diff, {}


def main(argv=None):
    return onnx_io.export_main(__doc__, _export_and_check, argv, PARITY_TOL,
                               options=(("--card", "card JSON file to store in the ONNX "
                                                   "metadata"),))


if __name__ == "__main__":
    sys.exit(main())
