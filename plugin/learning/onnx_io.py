"""ONNX file plumbing shared by the training pipelines: checkpoints, rebuilding a torch network
from an exported file, the IR version, storing the card and publishing model + Markdown card.

Exporters leave the graph optimiser off, so every weight stays an initializer named
``net.<state_dict key>`` and :func:`torch_net_from_onnx` can rebuild the torch network from the
ONNX file alone (the parity tests use that).
"""
import os

OPSET = 17  # with IR 8: onnxruntime >= 1.13 runs it (QGIS users often have older wheels)


def load_checkpoint(path, net_class):
    """(network in eval mode, checkpoint dict) from a ``torch.save`` of config + state_dict.
    Tensors and plain Python values only: a checkpoint cannot run code when it is loaded."""
    import torch
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    net = net_class(**ckpt["config"])
    net.load_state_dict(ckpt["state_dict"])
    return net.eval(), ckpt


def torch_net_from_onnx(onnx_path, net_class, config):
    """The torch network whose weights are the ONNX file's initializers (``net.*``)."""
    import onnx
    import torch
    from onnx import numpy_helper
    net = net_class(**config)
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


def max_abs_diff(out, ref):
    """max |onnxruntime - torch| of one output (an error when their shapes differ)."""
    import numpy as np
    if out.shape != ref.shape:
        raise RuntimeError(f"onnxruntime output shape {out.shape} != torch {ref.shape}")
    return float(np.abs(out - ref).max())


def weights_sha256(onnx_path):
    """sha256 of the graph's initializers (names and bytes, sorted by name): the identity of the
    weights, unchanged when only the card in the metadata is edited."""
    import hashlib
    import onnx
    h = hashlib.sha256()
    for init in sorted(onnx.load(onnx_path).graph.initializer, key=lambda i: i.name):
        h.update(init.name.encode())
        h.update(onnx.numpy_helper.to_array(init).tobytes())
    return h.hexdigest()


def load_matching_weights(net, onnx_path):
    """Copy the ONNX file's ``net.*`` initializers into ``net`` where name and shape match (a
    network that differs from the file's in some layers); returns (copied, skipped) key lists."""
    import onnx
    import torch
    from onnx import numpy_helper
    weights = {i.name[len("net."):]: numpy_helper.to_array(i)
               for i in onnx.load(onnx_path).graph.initializer if i.name.startswith("net.")}
    state = net.state_dict()
    copied, skipped = [], []
    for key, value in state.items():
        arr = weights.get(key)
        if arr is not None and tuple(arr.shape) == tuple(value.shape):
            state[key] = torch.from_numpy(arr.copy())
            copied.append(key)
        elif not key.endswith("num_batches_tracked"):
            skipped.append(key)
    net.load_state_dict(state)
    return copied, skipped


def lower_ir_version(path, ir_version=8):
    """IR 8 (with opset 17) loads in onnxruntime >= 1.13; the exporter writes IR 10."""
    import onnx
    model = onnx.load(path)
    if model.ir_version > ir_version and all(o.version <= OPSET for o in model.opset_import
                                             if o.domain in ("", "ai.onnx")):
        model.ir_version = ir_version
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, path)


def export_summary(path, **extra):
    """What an export subprocess prints (one JSON line) for the training pipeline."""
    import onnx
    proto = onnx.load(path)
    return dict({"onnx": path, "bytes": os.path.getsize(path), "ir_version": proto.ir_version,
                 "opset": max(o.version for o in proto.opset_import
                              if o.domain in ("", "ai.onnx"))}, **extra)


def set_card(onnx_path, card, out_path=None):
    """Store ``card`` (dict) as JSON in the ONNX ``metadata_props`` under ``model_card``;
    written to a temporary file and renamed, so ``out_path`` appears whole or not at all."""
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


def publish_model(bare_onnx, card, out, markdown):
    """Write ``out`` (the bare export with ``card`` stored in it) and its Markdown card
    (``markdown(card)``) beside it; returns the Markdown path."""
    out = os.path.abspath(out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    set_card(bare_onnx, card, out)
    md = os.path.splitext(out)[0] + ".md"
    tmp = md + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(markdown(card))
    os.replace(tmp, md)
    return md


def publish_and_log(bare_onnx, card, out, markdown, log, t_start):
    """:func:`publish_model`, then the pipeline's last log line; returns 0 (the exit status)."""
    import time
    out = os.path.abspath(out)
    md = publish_model(bare_onnx, card, out, markdown)
    log(f"Wrote {out} ({os.path.getsize(out) / 1e6:.2f} MB) and {md}; total "
        f"{time.perf_counter() - t_start:.0f} s")
    return 0


def export_main(doc, export_and_check, argv=None, tol=1e-4, threads=4, options=()):
    """The command line of an export module (``python -m MODULE CHECKPOINT OUT``): one model per
    process, torch threads capped, the export checked against torch in onnxruntime, one JSON
    summary line printed. ``export_and_check(args)`` -> (max |ort - torch|, extra summary
    fields); ``options``: extra (flag, help) pairs."""
    import argparse
    import json
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    for flag, help_text in options:
        ap.add_argument(flag, help=help_text)
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(max(1, min(threads, os.cpu_count() or 1)))
    diff, extra = export_and_check(args)
    if diff > tol:
        raise SystemExit(f"ONNX parity check failed: max |ort - torch| = {diff:.3g}")
    print(json.dumps(export_summary(args.out, parity_max_abs_diff=diff, **extra)))
    return 0


def export_in_subprocess(module, checkpoint, out, *extra_args, cwd=None):
    """Run ``python -m module checkpoint out [extra_args]`` (one export per process: the
    exporter keeps global state) and return the JSON line it prints last."""
    import json
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-m", module, checkpoint, out, *extra_args],
                         cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stdout + res.stderr)
        raise SystemExit("ONNX export failed")
    return json.loads(res.stdout.strip().splitlines()[-1])
