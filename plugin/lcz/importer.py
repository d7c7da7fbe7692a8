"""Install the pretrained So2Sat LCZ42 Sentinel-2 ResNet20 from its original Keras ``.h5`` file.

    python -m plugin.lcz.importer S2_RESNET20_..._2019-06-27.h5 MODELS_DIR [--overwrite]

:func:`import_so2sat_weights` checks the file (sha256, then every layer's name and shape), builds
the ONNX graph (:mod:`.so2sat_onnx`, no torch), verifies it in onnxruntime against an independent
float64 NumPy forward pass of the same h5 tensors (:mod:`.so2sat_numpy`), then writes
``<stem>.onnx`` and ``<stem>.LICENSE.txt`` (MIT notice of the So2Sat authors) atomically into the
models folder.  An existing model is never replaced unless ``overwrite=True`` (re-importing the
same file is a no-op).  Needs numpy, h5py, onnx and onnxruntime.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from ..core.errors import ModelError, OutputError
from ..core.model_card import METADATA_KEY
from . import so2sat_h5 as h5
from .card import FILE_STEM, licence_filename, lcz_card
from .preprocess import scale_dn
from .so2sat_numpy import forward as numpy_forward
from .so2sat_onnx import build_model, model_bytes

LICENCE_SOURCE_NAME = "LICENSE-So2Sat-demo.txt"   # next to the h5 in the data folder
# The MIT notice of the source repository (used when no licence file sits next to the h5).
MIT_NOTICE = """MIT License

Copyright (c) 2021 ERC starting grant So2Sat project team

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

SELF_CHECK_PATCHES = 4
SELF_CHECK_SEED = 20190627
SELF_CHECK_TOL = 1e-4       # probs; logits/features: 1e-4 x max(1, max |value|)


def self_check_input(n=SELF_CHECK_PATCHES, seed=SELF_CHECK_SEED):
    """Deterministic synthetic patches (N, 32, 32, 10), channels-last, scaled like real input:
    per-patch, per-band DN levels of 200..4000 with pixel noise, through :func:`scale_dn`."""
    rng = np.random.RandomState(seed)
    level = rng.uniform(200, 4000, size=(n, 1, 1, h5.BANDS))
    dn = np.clip(level + rng.normal(0, 300, size=(n, h5.PATCH, h5.PATCH, h5.BANDS)), 1, 12000)
    return scale_dn(np.round(dn).astype(np.uint16))


def self_check(onnx_bytes, weights, n=SELF_CHECK_PATCHES):
    """Run the ONNX model in onnxruntime and compare with the NumPy float64 forward pass on
    :func:`self_check_input`; also at batch size 1.  Returns {output: max |diff|}; raises
    :class:`ModelError` when anything is off."""
    from ..core.runtime import import_onnxruntime
    ort = import_onnxruntime()
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    if names != ["probs", "logits", "features"] or sess.get_inputs()[0].name != "s2":
        raise ModelError(f"Converted So2Sat model has inputs/outputs "
                         f"{[i.name for i in sess.get_inputs()]} -> {names}.")
    x = self_check_input(n)
    got = dict(zip(names, sess.run(names, {"s2": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})))
    ref = numpy_forward(weights, x)
    diffs = {}
    for k, shape in (("probs", (n, h5.N_CLASSES)), ("logits", (n, h5.N_CLASSES)),
                     ("features", (n, h5.N_FEATURES))):
        if got[k].shape != shape:
            raise ModelError(f"Converted So2Sat model: '{k}' has shape {got[k].shape}, "
                             f"expected {shape}.")
        diffs[k] = float(np.abs(got[k] - ref[k]).max())
        tol = SELF_CHECK_TOL * (1.0 if k == "probs" else max(1.0, float(np.abs(ref[k]).max())))
        if not diffs[k] <= tol:
            raise ModelError(f"Converted So2Sat model fails its self-check: max |onnxruntime - "
                             f"numpy| on '{k}' is {diffs[k]:.3g} (tolerance {tol:.3g}).")
    one = sess.run(["probs"], {"s2": np.ascontiguousarray(x[:1].transpose(0, 3, 1, 2))})[0]
    diffs["batch1_vs_batchN"] = float(np.abs(one - got["probs"][:1]).max())
    diffs["sum_probs_minus_1"] = float(np.abs(got["probs"].sum(axis=1) - 1).max())
    if diffs["batch1_vs_batchN"] > 1e-5 or diffs["sum_probs_minus_1"] > 1e-5:
        raise ModelError(f"Converted So2Sat model fails its self-check: {diffs}.")
    return diffs


def _licence_text(h5_path, licence_path=None):
    path = licence_path or os.path.join(os.path.dirname(os.path.abspath(h5_path)),
                                        LICENCE_SOURCE_NAME)
    if licence_path or os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
    else:
        text = MIT_NOTICE
    header = (f"{FILE_STEM}.onnx is converted from {h5.FILENAME}\n"
              f"({h5.SOURCE_URL}, sha256 {h5.SHA256})\n"
              f"by the Urban Functions So2Sat importer. The weights are covered by this "
              f"licence:\n\n")
    return header + text


def _write_atomic(path, data, folder, replace):
    """Write ``data`` to ``path`` via a temporary file in ``folder``; without ``replace`` an
    existing ``path`` is never clobbered (hard link, which fails if the name exists)."""
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".part", dir=folder)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp creates 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise OutputError(f"{path} already exists; not replaced.") from None
            except OSError:  # no hard links on this file system
                if os.path.exists(path):
                    raise OutputError(f"{path} already exists; not replaced.") from None
                os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def import_so2sat_weights(h5_path, models_dir, overwrite=False, licence_path=None,
                          feedback=None, report=None):
    """Check ``h5_path``, convert it and install it into ``models_dir``; returns the path of the
    installed ``.onnx``.  ``feedback``: optional callable(str) for progress messages.
    ``report``: optional dict that receives sha256, self-check differences and timings.

    Raises :class:`ModelError` (wrong/corrupt file, failed self-check), :class:`OutputError`
    (a different model of that name is installed and ``overwrite`` is False; folder not
    writable), :class:`MissingDependencyError` (h5py / onnx / onnxruntime missing)."""
    say = feedback or (lambda msg: None)
    t0 = time.perf_counter()
    say(f"Checking {os.path.basename(h5_path)} (sha256, layers and shapes)")
    weights = h5.read_weights(h5_path, verify_hash=True)
    say("Building the ONNX graph")
    card = lcz_card(sha256=weights.sha256, size=weights.size, keras_version=weights.keras_version)
    data = model_bytes(build_model(weights, card))
    say("Checking the ONNX model in onnxruntime against a NumPy forward pass")
    diffs = self_check(data, weights)
    target = os.path.join(os.fspath(models_dir), FILE_STEM + ".onnx")
    licence = os.path.join(os.fspath(models_dir), licence_filename())
    try:
        os.makedirs(models_dir, exist_ok=True)
        same = False
        if os.path.exists(target):
            with open(target, "rb") as f:
                same = f.read() == data
            if not same and not overwrite:
                raise OutputError(f"A So2Sat model is already installed at {target} and differs "
                                  f"from this import; remove it or import with overwrite.")
        _write_atomic(licence, _licence_text(h5_path, licence_path).encode("utf-8"),
                      models_dir, replace=True)
        if not same:
            _write_atomic(target, data, models_dir, replace=overwrite)
    except OSError as exc:
        raise OutputError(f"Cannot install the So2Sat model into {models_dir}: {exc}") from exc
    if report is not None:
        report.update({"path": target, "licence": licence, "sha256": weights.sha256,
                       "onnx_bytes": len(data), "self_check": diffs, "unchanged": same,
                       "seconds": round(time.perf_counter() - t0, 3)})
    say(f"Installed {target}")
    return target


def installed_card(onnx_path):
    """The raw card dict stored in an installed model (JSON, parsed; not schema-validated)."""
    import onnx
    model = onnx.load(onnx_path, load_external_data=False)
    for p in model.metadata_props:
        if p.key == METADATA_KEY:
            return json.loads(p.value)
    raise ModelError(f"{onnx_path} has no model card.")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("h5", help=f"the original weights file {h5.FILENAME}")
    ap.add_argument("models_dir", nargs="?", default=os.environ.get("URBAN_FUNCTIONS_MODELS"),
                    help="models folder (default: $URBAN_FUNCTIONS_MODELS)")
    ap.add_argument("--overwrite", action="store_true", help="replace an installed model")
    ap.add_argument("--licence",
                    help=f"licence file (default: {LICENCE_SOURCE_NAME} next to the h5)")
    args = ap.parse_args(argv)
    if not args.models_dir:
        ap.error("give MODELS_DIR or set URBAN_FUNCTIONS_MODELS")
    report = {}
    try:
        import_so2sat_weights(args.h5, args.models_dir, overwrite=args.overwrite,
                              licence_path=args.licence,
                              feedback=lambda m: print(m, file=sys.stderr), report=report)
    except Exception as exc:  # noqa: BLE001  (message for the command line)
        from ..core.errors import UrbanFunctionsError
        if isinstance(exc, UrbanFunctionsError):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
