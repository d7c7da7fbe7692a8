"""onnxruntime sessions: provider choice and reporting which provider actually runs."""
from .errors import MissingDependencyError, ModelError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")


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


class InferenceSession:
    """Thin wrapper: opens the model, knows its input names and the provider that really runs."""

    def __init__(self, onnx_path, device="auto", threads=0):
        ort = import_onnxruntime()
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        providers = requested_providers(device, ort.get_available_providers())
        if CUDA in providers:
            _preload_cuda_libraries(ort)
        try:
            self._session = ort.InferenceSession(str(onnx_path), opts, providers=providers)
        except Exception as exc:
            raise ModelError(f"onnxruntime cannot load {onnx_path}: {exc}") from exc
        # onnxruntime silently falls back to CPU when CUDA libraries are missing: report the truth
        self.providers = list(self._session.get_providers())
        self.provider = self.providers[0]
        self.requested = providers
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.onnxruntime_version = ort.__version__

    def run(self, output_name, feed):
        """One output (a name) or several (a list of names -> a list of arrays)."""
        if isinstance(output_name, (list, tuple)):
            return self._session.run(list(output_name), feed)
        return self._session.run([output_name], feed)[0]
