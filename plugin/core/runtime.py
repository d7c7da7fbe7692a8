"""onnxruntime sessions: provider choice and reporting which provider actually runs."""
from .errors import MissingDependencyError, ModelError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "fp16")
# the first batch in float16 is checked against float32: below this share of cells with the same
# class the run goes on in float32, and says so
FP16_MIN_SAME_CLASS = 0.99
FP16_CHECK_CELLS = 4096      # cells compared (over the first batches) before the check ends


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _finite(a):
    import numpy as np
    return bool(np.isfinite(a).all())


def import_onnxruntime():
    try:
        import onnxruntime
    except Exception as exc:
        from .environment import REQUIREMENTS
        raise MissingDependencyError(
            f"onnxruntime is not available to this Python ({exc}). Install it with: "
            f"{REQUIREMENTS['onnxruntime']}.") from exc
    return onnxruntime


def onnxruntime_or_none():
    """The onnxruntime module, or None when it cannot be imported (missing or a broken wheel)."""
    try:
        return import_onnxruntime()
    except MissingDependencyError:
        return None


def requested_providers(device, available):
    """Providers to ask onnxruntime for, in priority order."""
    if device not in DEVICES:
        raise ModelError(f"Unknown device {device!r}; use one of {', '.join(DEVICES)}.")
    if device == "cuda":
        if CUDA not in available:
            raise ModelError("GPU (CUDA) was requested but this onnxruntime has no CUDA provider "
                             f"(available: {', '.join(available)}). Install onnxruntime-gpu instead "
                             "of onnxruntime (not both), or choose CPU/Auto.")
        return [CUDA, CPU]
    if device == "auto" and CUDA in available:
        return [CUDA, CPU]
    return [CPU]


_preloaded = []


def _preload_cuda_libraries(ort):
    """Load the CUDA/cuDNN libraries that pip's nvidia-* wheels put beside onnxruntime-gpu (what
    Install dependencies installs), once. Harmless where they come from the system or torch;
    when none are found the session falls back to CPU and the run reports it."""
    if _preloaded or not hasattr(ort, "preload_dlls"):
        return
    _preloaded.append(True)
    try:
        ort.preload_dlls()
    except Exception:  # noqa: BLE001 - best effort: the provider that ran is reported anyway
        pass


def gpu_free_bytes():
    """Free memory of CUDA device 0 in bytes, or None when it cannot be asked (no GPU, no CUDA
    runtime library). Asked of the CUDA runtime that onnxruntime-gpu loads."""
    import ctypes
    import ctypes.util
    names = ([ctypes.util.find_library("cudart")] + [f"libcudart.so.{v}" for v in (13, 12, 11)]
             + [f"cudart64_{v}.dll" for v in (13, 12, 110)])
    for name in [n for n in names if n]:
        try:
            cudart = ctypes.CDLL(name)
        except OSError:
            continue
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        try:
            if cudart.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)) == 0:
                return int(free.value)
        except AttributeError:
            continue
    return None


# what one tile in a batch may need on the GPU, as a multiple of its input bytes (activations
# of the bundled CNNs at their widest, in float32, with room for onnxruntime's arena); the batch
# takes at most half of the free memory
ACTIVATION_FACTOR = 64
GPU_MEMORY_SHARE = 0.5
MAX_AUTO_BATCH = 64


def batch_for_memory(free_bytes, input_bytes_per_tile, cap=MAX_AUTO_BATCH):
    """Tiles per inference call that fit in ``GPU_MEMORY_SHARE`` of ``free_bytes``."""
    per_tile = max(1, int(input_bytes_per_tile) * ACTIVATION_FACTOR)
    return int(max(1, min(cap, free_bytes * GPU_MEMORY_SHARE // per_tile)))


def fp16_model_bytes(onnx_path):
    """The model converted to float16 weights and activations, with float32 inputs and outputs
    (onnxruntime's own converter; the ops it knows to be unsafe in float16 stay float32)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    model = onnx.load(str(onnx_path))
    converted = convert_float_to_float16(model, keep_io_types=True)
    return converted.SerializeToString()


class InferenceSession:
    """Thin wrapper: opens the model, knows its input names and the provider that really runs.

    On CUDA the inputs and outputs go through onnxruntime's I/O binding (each input copied to
    the device once, outputs allocated there by onnxruntime and copied back once). With
    ``precision="fp16"`` (CUDA only) the graph runs in float16; its first batch is compared
    with float32 (``parity``) and the run falls back to float32 if the classes differ. When CUDA
    fails, at load or at run time (out of memory, a driver error), the session continues on the
    CPU: ``fallback`` then says why, ``provider`` says CPU, and ``on_fallback`` is told at once.
    """

    def __init__(self, onnx_path, device="auto", threads=0, on_fallback=None, io_binding=None,
                 cuda_options=None, precision="fp32"):
        if precision not in PRECISIONS:
            raise ModelError(f"Unknown precision {precision!r}; use one of "
                             f"{', '.join(PRECISIONS)}.")
        ort = import_onnxruntime()
        self._ort = ort
        self._path = str(onnx_path)
        self._opts = ort.SessionOptions()
        if threads:
            self._opts.intra_op_num_threads = int(threads)
        self.on_fallback = on_fallback
        self.fallback = None
        providers = requested_providers(device, ort.get_available_providers())
        self.requested = providers
        if CUDA in providers:
            _preload_cuda_libraries(ort)
        chosen = [(CUDA, dict(cuda_options)) if p == CUDA and cuda_options else p
                  for p in providers]
        self._chosen = chosen
        self.precision = "fp32"
        self.parity = None       # float16 against float32, over the first batches
        self._fp32_check = None
        self._parity_counts = [0, 0, 0.0]     # cells compared, cells with the same class, max
        model, fp16_problem = self._path, None
        if precision == "fp16":
            if CUDA not in providers:
                raise ModelError("float16 needs a GPU (CUDA) and onnxruntime-gpu: choose "
                                 "float32, or the GPU device.")
            try:
                model = fp16_model_bytes(self._path)
                self.precision = "fp16"
            except ImportError as exc:
                fp16_problem = (f"the float16 converter needs the onnx package ({exc}); "
                                "install onnx beside onnxruntime-gpu")
            except Exception as exc:  # noqa: BLE001 - a graph the converter cannot take
                fp16_problem = f"the model could not be converted ({_first_line(exc)})"
        try:
            self._session = ort.InferenceSession(model, self._opts, providers=chosen)
        except Exception as exc:
            if self.precision == "fp16":    # a float16 graph onnxruntime refuses: float32
                self.precision = "fp32"
                fp16_problem = f"onnxruntime cannot load the float16 graph ({_first_line(exc)})"
                try:
                    self._session = ort.InferenceSession(self._path, self._opts,
                                                         providers=chosen)
                except Exception as exc2:
                    self._session = None
                    self._fall_back(exc2, "loading the model")
            elif CUDA not in providers:
                raise ModelError(f"onnxruntime cannot load {onnx_path}: {exc}") from exc
            else:
                self._session = None
                self._fall_back(exc, "loading the model")
        # onnxruntime silently falls back to CPU when CUDA libraries are missing: report the truth
        self.providers = list(self._session.get_providers())
        self.provider = self.providers[0]
        self.io_binding = (self.provider == CUDA) if io_binding is None else bool(io_binding)
        if fp16_problem:
            self._say_fp32(fp16_problem)
        if self.precision == "fp16":
            if self.provider != CUDA:
                self._to_fp32("CUDA did not start")
            else:   # the first batches are checked against the float32 model
                try:
                    self._fp32_check = ort.InferenceSession(self._path, self._opts,
                                                            providers=chosen)
                except Exception as exc:  # noqa: BLE001 - no room for the check: float32
                    self._to_fp32(f"the float32 model for the check could not be loaded "
                                  f"({_first_line(exc)})")
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.onnxruntime_version = ort.__version__

    def _fall_back(self, exc, when):
        reason = _first_line(exc)
        self.fallback = (f"CUDA failed while {when} ({reason}); the run continues on the CPU, "
                         "which is slower. Free GPU memory (other programs, a smaller batch "
                         "size) or choose CPU.")
        try:
            self._session = self._ort.InferenceSession(self._path, self._opts, providers=[CPU])
        except Exception as err:
            raise ModelError(f"onnxruntime cannot load {self._path}: {err}") from err
        self.providers = list(self._session.get_providers())
        self.provider = self.providers[0]
        self.io_binding = False
        self.precision, self._fp32_check = "fp32", None
        if self.on_fallback:
            self.on_fallback("Warning: " + self.fallback)

    def _say_fp32(self, why):
        if self.on_fallback:
            self.on_fallback(f"Warning: float16 not used ({why}); the run continues in float32.")

    def _to_fp32(self, why, session=None):
        """Float32 from here on, on the same providers (``session``: one already loaded)."""
        self.precision, self._fp32_check = "fp32", None
        self._session = session or self._ort.InferenceSession(self._path, self._opts,
                                                              providers=self._chosen)
        self.providers = list(self._session.get_providers())
        self.provider = self.providers[0]
        self._say_fp32(why)

    def _check_fp16(self, names, feed, outs):
        """Float16 against float32 until ``FP16_CHECK_CELLS`` cells have been compared: the
        largest difference of the first output and the share of cells whose most likely class
        is the same. Too different: the run goes on in float32 (the float32 outputs of this
        batch are used)."""
        import numpy as np
        check = self._fp32_check
        ref = check.run(names, feed)
        a, b = np.asarray(outs[0], np.float32), np.asarray(ref[0], np.float32)
        if a.ndim > 1:                           # class scores along axis 1
            agree = a.argmax(axis=1) == b.argmax(axis=1)
            n, same = int(agree.size), int(agree.sum())
        else:
            n = same = a.shape[0]
        c = self._parity_counts
        c[0], c[1], c[2] = c[0] + n, c[1] + same, max(c[2], float(np.abs(a - b).max()))
        share = c[1] / c[0] if c[0] else 1.0
        self.parity = {"max_abs_diff": c[2], "same_class": share, "cells": c[0]}
        if c[0] >= FP16_CHECK_CELLS and share < FP16_MIN_SAME_CLASS:
            self._to_fp32(f"over the first {c[0]} cells only {share:.1%} kept their class, "
                          f"below {FP16_MIN_SAME_CLASS:.0%}", session=check)
            return ref
        if c[0] >= FP16_CHECK_CELLS:
            self._fp32_check = None            # checked: free the float32 copy
        return outs

    def run(self, output_name, feed):
        """One output (a name) or several (a list of names -> a list of arrays)."""
        names = list(output_name) if isinstance(output_name, (list, tuple)) else [output_name]
        try:
            outs = self._run(names, feed)
            if self._fp32_check is not None:
                outs = self._check_fp16(names, feed, outs)
            elif self.precision == "fp16" and not all(_finite(o) for o in outs):
                # float16 overflow on this batch: float32 from here on, this batch again
                self._to_fp32("a batch gave values float16 cannot hold")
                outs = self._run(names, feed)
        except Exception as exc:
            if self.provider != CUDA or "INVALID_ARGUMENT" in str(exc):
                raise          # not the GPU's fault: a wrong feed fails on the CPU too
            self._fall_back(exc, "running the model")
            outs = self._run(names, feed)
        return outs if isinstance(output_name, (list, tuple)) else outs[0]

    def _run(self, names, feed):
        if not self.io_binding:
            return self._session.run(names, feed)
        import numpy as np
        binding = self._session.io_binding()
        device = "cuda" if self.provider == CUDA else "cpu"
        for name, value in feed.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in names:
            binding.bind_output(name, device)
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()
