"""Export a fine-tuned So2Sat patch classifier to ONNX (one model per process) and check it.

    python -m plugin.learning.so2sat_patch_export CHECKPOINT.pt OUT.onnx

The graph takes windows ``[N, 10, 32, 32]`` (input ``io.input``, dynamic batch) and gives the
function probabilities ``[N, 8]`` (output ``io.output``, softmax in the graph), as the imported
So2Sat graph does for its 17 LCZs. The parity check runs onnxruntime at batches other than the
exported one against the torch module. As in :mod:`.export`, the exporter's optimiser is left off
so that every weight stays an initializer ``net.*`` (see :mod:`.onnx_io`).
"""
import sys

from . import onnx_io
from .onnx_io import OPSET

EXPORT_BATCH = 2
CHECK_BATCHES = (1, 5, 37)
PARITY_TOL = 1e-4


def load_checkpoint(path):
    from .so2sat_patch import So2SatPatchNet
    return onnx_io.load_checkpoint(path, So2SatPatchNet)


def export(net, out_path, input_name, output_name):
    import warnings

    import torch
    from torch.export import Dim
    from .so2sat_patch import BANDS, PATCH_PX, ProbabilityNet
    model = ProbabilityNet(net).eval()
    x = torch.rand(EXPORT_BATCH, BANDS, PATCH_PX, PATCH_PX,
                   generator=torch.Generator().manual_seed(1)) * 0.3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), out_path, input_names=[input_name],
                          output_names=[output_name],
                          dynamic_shapes={"x": {0: Dim("batch", min=1, max=65536)}},
                          dynamo=True, external_data=False, opset_version=OPSET,
                          optimize=False, verbose=False)
    onnx_io.lower_ir_version(out_path)
    return model


def check_parity(model, onnx_path, input_name, batches=CHECK_BATCHES):
    """Max |onnxruntime - torch| over random windows at batches other than the exported one."""
    import onnxruntime as ort
    import torch
    from .so2sat_patch import BANDS, PATCH_PX
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    worst = 0.0
    for b in batches:
        x = torch.rand(b, BANDS, PATCH_PX, PATCH_PX,
                       generator=torch.Generator().manual_seed(b)) * 0.3
        with torch.no_grad():
            ref = model(x).numpy()
        out = sess.run(None, {input_name: x.numpy()})[0]
        worst = max(worst, onnx_io.max_abs_diff(out, ref))
    return worst


def _export_and_check(args):
    net, ckpt = load_checkpoint(args.checkpoint)
    io = ckpt["io"]
    model = export(net, args.out, io["input"], io["output"])
    diff = check_parity(model, args.out, io["input"])
    return diff, {"parity_batches": list(CHECK_BATCHES), "graph": "windows"}


def main(argv=None):
    return onnx_io.export_main(__doc__, _export_and_check, argv, PARITY_TOL, threads=2)


if __name__ == "__main__":
    sys.exit(main())
