"""The So2Sat LCZ42 Sentinel-2 ResNet20 weights file: its layer table, and a checked reader.

The file is Keras 2.1.5 ``save_weights`` output: one HDF5 group per layer, tensors at
``<layer>/<layer>/<var>:0``, channels-last (conv kernel ``(kh, kw, c_in, c_out)``, dense kernel
``(in, out)``), all float32.  It holds no architecture, so :data:`LAYERS` below is the network,
transcribed from the original ``resnet_v2.py`` as documented in the data folder's
``ARCHITECTURE.md`` (section 3).

**Load by name, never by position.**  Keras' own ``load_weights`` matches by position in the
topological order of the file's ``layer_names``, where the projection shortcut of each stage's
first unit comes *before* the last conv of its branch (``conv2d_5`` before ``conv2d_4``,
``conv2d_12`` before ``conv2d_11``, ``conv2d_19`` before ``conv2d_18``).  Each pair has the same
shape, so a positional loader with another layer order swaps them silently.  Every consumer here
(:mod:`.so2sat_onnx`, :mod:`.so2sat_numpy`, :mod:`.reference_torch`) looks tensors up by layer name.

Pure Python + numpy; ``h5py`` is imported only when a file is read.
"""
import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..core.errors import MissingDependencyError, ModelError

FILENAME = "S2_RESNET20_BS16_LR2e-4_IN32-32-10_PRO-52-0R12_2019-06-27.h5"
SHA256 = "a4348f55e21039b81aec6f57b1c943c851dc70c5b79e025fb9e93438cc1e730f"
FILE_BYTES = 2473440
SOURCE_REPO = "https://github.com/zhu-xlab/So2Sat-LCZ-Classification-Demo"
SOURCE_COMMIT = "867c2a10b2e166236bb9adaef43d5e88e4c79a19"
SOURCE_PATH = "Modules/3_classification/model/" + FILENAME
SOURCE_URL = f"{SOURCE_REPO}/blob/{SOURCE_COMMIT}/{SOURCE_PATH}"
DOWNLOAD_URL = f"{SOURCE_REPO}/raw/{SOURCE_COMMIT}/{SOURCE_PATH}"
N_PARAMS = 576897

PATCH = 32          # input patch, pixels
BANDS = 10          # B2 B3 B4 B5 B6 B7 B8 B8A B11 B12
N_CLASSES = 17
N_FEATURES = 256
BN_EPSILON = 1e-3   # Keras default; PyTorch's default 1e-5 would be wrong
CONV_VARS = ("kernel", "bias")
BN_VARS = ("gamma", "beta", "moving_mean", "moving_variance")
DENSE_VARS = ("kernel", "bias")

# name, op, inputs, parameters -- one row per Keras layer, in the file's topological order.
# conv: "k<kernel> s<stride> <c_in>><c_out>", padding 'same' (3x3: 1 pixel of zeros on every side;
# 1x1 stride 2 keeps pixels 0, 2, 4, ...), bias, linear.  bn: channels, eps 1e-3.
# add: elementwise sum, no activation after it.  avgpool k8: 8x8 stride 8 'valid' on the 8x8 map
# (= global average).  dense: softmax follows.
LAYER_TABLE = """
input_1                  input                             10
conv2d_1                 conv     input_1                  k3 s1 10>16
batch_normalization_1    bn       conv2d_1                 16
activation_1             relu     batch_normalization_1
conv2d_2                 conv     activation_1             k1 s1 16>16
batch_normalization_2    bn       conv2d_2                 16
activation_2             relu     batch_normalization_2
conv2d_3                 conv     activation_2             k3 s1 16>16
batch_normalization_3    bn       conv2d_3                 16
activation_3             relu     batch_normalization_3
conv2d_5                 conv     activation_1             k1 s1 16>64
conv2d_4                 conv     activation_3             k1 s1 16>64
add_1                    add      conv2d_5 conv2d_4
batch_normalization_4    bn       add_1                    64
activation_4             relu     batch_normalization_4
conv2d_6                 conv     activation_4             k1 s1 64>16
batch_normalization_5    bn       conv2d_6                 16
activation_5             relu     batch_normalization_5
conv2d_7                 conv     activation_5             k3 s1 16>16
batch_normalization_6    bn       conv2d_7                 16
activation_6             relu     batch_normalization_6
conv2d_8                 conv     activation_6             k1 s1 16>64
add_2                    add      add_1 conv2d_8
batch_normalization_7    bn       add_2                    64
activation_7             relu     batch_normalization_7
conv2d_9                 conv     activation_7             k1 s2 64>64
batch_normalization_8    bn       conv2d_9                 64
activation_8             relu     batch_normalization_8
conv2d_10                conv     activation_8             k3 s1 64>64
batch_normalization_9    bn       conv2d_10                64
activation_9             relu     batch_normalization_9
conv2d_12                conv     add_2                    k1 s2 64>128
conv2d_11                conv     activation_9             k1 s1 64>128
add_3                    add      conv2d_12 conv2d_11
batch_normalization_10   bn       add_3                    128
activation_10            relu     batch_normalization_10
conv2d_13                conv     activation_10            k1 s1 128>64
batch_normalization_11   bn       conv2d_13                64
activation_11            relu     batch_normalization_11
conv2d_14                conv     activation_11            k3 s1 64>64
batch_normalization_12   bn       conv2d_14                64
activation_12            relu     batch_normalization_12
conv2d_15                conv     activation_12            k1 s1 64>128
add_4                    add      add_3 conv2d_15
batch_normalization_13   bn       add_4                    128
activation_13            relu     batch_normalization_13
conv2d_16                conv     activation_13            k1 s2 128>128
batch_normalization_14   bn       conv2d_16                128
activation_14            relu     batch_normalization_14
conv2d_17                conv     activation_14            k3 s1 128>128
batch_normalization_15   bn       conv2d_17                128
activation_15            relu     batch_normalization_15
conv2d_19                conv     add_4                    k1 s2 128>256
conv2d_18                conv     activation_15            k1 s1 128>256
add_5                    add      conv2d_19 conv2d_18
batch_normalization_16   bn       add_5                    256
activation_16            relu     batch_normalization_16
conv2d_20                conv     activation_16            k1 s1 256>128
batch_normalization_17   bn       conv2d_20                128
activation_17            relu     batch_normalization_17
conv2d_21                conv     activation_17            k3 s1 128>128
batch_normalization_18   bn       conv2d_21                128
activation_18            relu     batch_normalization_18
conv2d_22                conv     activation_18            k1 s1 128>256
add_6                    add      add_5 conv2d_22
batch_normalization_19   bn       add_6                    256
activation_19            relu     batch_normalization_19
average_pooling2d_1      avgpool  activation_19            k8
flatten_1                flatten  average_pooling2d_1
dense_1                  dense    flatten_1                256>17
"""


@dataclass(frozen=True)
class Layer:
    name: str
    op: str                 # input conv bn relu add avgpool flatten dense
    inputs: tuple
    kernel: int = 0
    stride: int = 1
    c_in: int = 0
    c_out: int = 0

    def weight_shapes(self):
        """{var: shape} of the layer's tensors in the h5 file (channels-last)."""
        if self.op == "conv":
            return OrderedDict(kernel=(self.kernel, self.kernel, self.c_in, self.c_out),
                               bias=(self.c_out,))
        if self.op == "bn":
            return OrderedDict((v, (self.c_out,)) for v in BN_VARS)
        if self.op == "dense":
            return OrderedDict(kernel=(self.c_in, self.c_out), bias=(self.c_out,))
        return OrderedDict()


def _parse_table(text):
    layers = []
    for line in text.strip().splitlines():
        parts = line.split()
        name, op = parts[0], parts[1]
        if op == "input":
            layers.append(Layer(name, op, (), c_out=int(parts[2])))
        elif op == "conv":
            *ins, k, s, ch = parts[2:]
            c_in, c_out = ch.split(">")
            layers.append(Layer(name, op, tuple(ins), int(k[1:]), int(s[1:]), int(c_in),
                                int(c_out)))
        elif op == "bn":
            layers.append(Layer(name, op, (parts[2],), c_in=int(parts[3]), c_out=int(parts[3])))
        elif op == "avgpool":
            layers.append(Layer(name, op, (parts[2],), kernel=int(parts[3][1:]),
                                stride=int(parts[3][1:])))
        elif op == "dense":
            c_in, c_out = parts[3].split(">")
            layers.append(Layer(name, op, (parts[2],), c_in=int(c_in), c_out=int(c_out)))
        else:  # relu, add, flatten
            layers.append(Layer(name, op, tuple(parts[2:])))
    return tuple(layers)


LAYERS = _parse_table(LAYER_TABLE)
LAYER_BY_NAME = {layer.name: layer for layer in LAYERS}
WEIGHTED = tuple(layer for layer in LAYERS if layer.weight_shapes())


def expected_shapes():
    """{layer: {var: shape}} for the 42 layers with weights (22 conv, 19 BN, 1 dense)."""
    return OrderedDict((layer.name, layer.weight_shapes()) for layer in WEIGHTED)


def file_sha256(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def import_h5py():
    try:
        import h5py
    except ImportError as exc:
        raise MissingDependencyError(
            "Reading the So2Sat .h5 weights needs the Python package h5py (Debian/Ubuntu: "
            "'apt install python3-h5py'; elsewhere 'pip install h5py' in QGIS's Python).") from exc
    except (ValueError, OSError, RuntimeError) as exc:
        # a pip h5py wheel carries its own HDF5 library; inside QGIS, where GDAL has already
        # loaded the system HDF5, that copy can fail to initialise ("Not a datatype")
        raise MissingDependencyError(
            f"h5py could not start ({exc.__class__.__name__}: {exc}): its HDF5 library clashes "
            "with the one QGIS/GDAL loaded. Use the h5py built for the system HDF5 (Debian/"
            "Ubuntu: 'apt install python3-h5py'), and start QGIS without an activated "
            "virtualenv that holds a pip-installed h5py (or 'pip uninstall h5py' there).") from exc
    return h5py


@dataclass(frozen=True)
class So2SatWeights:
    path: str
    sha256: str
    size: int
    keras_version: str
    weights: OrderedDict    # layer name -> OrderedDict(var -> float32 ndarray), channels-last

    def __getitem__(self, layer):
        return self.weights[layer]

    @property
    def n_params(self):
        return int(sum(a.size for vs in self.weights.values() for a in vs.values()))


def check_hash(path):
    """sha256 of ``path``; raises :class:`ModelError` unless it is the published file."""
    size = os.path.getsize(path)
    digest = file_sha256(path)
    if digest != SHA256:
        raise ModelError(
            f"{os.path.basename(path)} is not the published So2Sat Sentinel-2 ResNet20 weights "
            f"file: its sha256 is {digest} ({size:,} bytes), expected {SHA256} "
            f"({FILE_BYTES:,} bytes). "
            f"The download is incomplete or corrupt, or it is another model. Download "
            f"{FILENAME} again from {SOURCE_URL}.")
    return digest


def read_weights(path, verify_hash=True):
    """Read and check the h5 file; returns :class:`So2SatWeights` (tensors by layer name).

    Checks, in this order, raising :class:`ModelError` at the first failure: the sha256 (unless
    ``verify_hash`` is False), that the file is an HDF5 weights file, and for every layer of
    :data:`LAYERS` with weights: the group, each tensor, its shape and dtype; and that the file has
    no other layer with weights."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelError(f"So2Sat weights file not found: {path}. Download {FILENAME} from "
                         f"{SOURCE_URL}.")
    digest = check_hash(path) if verify_hash else file_sha256(path)
    h5py = import_h5py()
    name = os.path.basename(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ModelError(f"{name} is not a readable HDF5 file ({exc}); expected the Keras weights "
                         f"file {FILENAME}.") from exc
    with f:
        root = f["model_weights"] if "model_weights" in f else f  # a full-model save also works
        keras_version = root.attrs.get("keras_version", b"?")
        if isinstance(keras_version, bytes):
            keras_version = keras_version.decode()
        keras_version = str(keras_version)
        weights = OrderedDict()
        for layer in WEIGHTED:
            if layer.name not in root:
                raise ModelError(f"{name}: layer '{layer.name}' is missing; this is not the So2Sat "
                                 f"Sentinel-2 ResNet20 weights file.")
            group = root[layer.name]
            tensors = OrderedDict()
            for var, shape in layer.weight_shapes().items():
                key = f"{layer.name}/{var}:0"
                if key not in group:
                    raise ModelError(f"{name}: tensor '{layer.name}/{key}' is missing.")
                ds = group[key]
                if tuple(ds.shape) != shape:
                    raise ModelError(f"{name}: '{layer.name}/{key}' has shape {tuple(ds.shape)}, "
                                     f"expected {shape}; this is not the So2Sat Sentinel-2 "
                                     f"ResNet20 (10 bands, 17 classes) weights file.")
                if ds.dtype != np.float32:
                    raise ModelError(f"{name}: '{layer.name}/{key}' is {ds.dtype}, "
                                     f"expected float32.")
                arr = np.asarray(ds[()], dtype=np.float32)
                if not np.all(np.isfinite(arr)):
                    raise ModelError(f"{name}: '{layer.name}/{key}' contains NaN or "
                                     f"infinite values.")
                tensors[var] = arr
            weights[layer.name] = tensors
        extra = []
        for key in root.keys():
            if key not in LAYER_BY_NAME and len(root[key].attrs.get("weight_names", [])):
                extra.append(key)
        if extra:
            raise ModelError(f"{name}: unexpected layers with weights {sorted(extra)}; this is not "
                             f"the So2Sat Sentinel-2 ResNet20 weights file.")
    result = So2SatWeights(path, digest, os.path.getsize(path), keras_version, weights)
    if result.n_params != N_PARAMS:  # cannot happen once every shape matched; kept as a guard
        raise ModelError(f"{name}: {result.n_params} parameters, expected {N_PARAMS}.")
    return result
