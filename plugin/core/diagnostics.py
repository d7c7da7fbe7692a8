"""What this installation runs on: versions, execution providers, the GPU, the venvs.

Shown next to the Device choice and in the diagnostics box (with a Copy button for bug
reports). Package versions come from the installed metadata, so torch is not imported (seconds)
just to print its version.
"""
import functools
import importlib.metadata
import platform
import sys

from .environment import PLUGIN_ROOT, active_venvs
from .manifest import plugin_version


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


@functools.lru_cache(maxsize=1)
def gpu_name():
    """The NVIDIA GPU nvidia-smi reports ('' without driver/GPU); asked once per session."""
    from .dependency_installer import nvidia_gpu
    return nvidia_gpu()


def providers():
    """(onnxruntime version or '', its available execution providers)."""
    from .runtime import onnxruntime_or_none
    ort = onnxruntime_or_none()
    if ort is None:
        return "", []
    return ort.__version__, list(ort.get_available_providers())


def device_summary():
    """One line for the Device choice: what Automatic will use, and why."""
    from .runtime import CUDA
    version, available = providers()
    gpu = gpu_name()
    if not version:
        return "onnxruntime is not installed yet" + (f" (GPU found: {gpu})" if gpu else "")
    if CUDA in available:
        return f"Automatic uses the GPU: CUDA provider, {gpu or 'NVIDIA GPU'}"
    if gpu:
        return (f"Automatic uses the CPU: {gpu} found, but this onnxruntime has no CUDA provider "
                "(install onnxruntime-gpu with Install dependencies)")
    return "Automatic uses the CPU (no NVIDIA GPU found)"


def report_lines(extra=()):
    """Lines for the diagnostics box; ``extra``: (name, value) pairs the caller adds (QGIS)."""
    version, available = providers()
    rows = [("Urban Functions", plugin_version()), *extra,
            ("Python", f"{platform.python_version()} ({sys.executable})"),
            ("Platform", platform.platform())]
    try:
        from osgeo import gdal
        rows.append(("GDAL", gdal.__version__))
    except ImportError as exc:
        rows.append(("GDAL", f"cannot be imported ({exc})"))
    rows += [("numpy", _version("numpy") or "missing"),
             ("onnxruntime", version or "missing"),
             ("onnxruntime build", "onnxruntime-gpu" if _version("onnxruntime-gpu") else
              ("onnxruntime (CPU)" if _version("onnxruntime") else "none")),
             ("Execution providers", ", ".join(available) or "none"),
             ("NVIDIA GPU", gpu_name() or "none found (nvidia-smi)"),
             ("torch (training)", _version("torch") or "not installed"),
             ("scikit-learn (baseline)", _version("scikit-learn") or "not installed"),
             ("Venvs in use", ", ".join(active_venvs()) or "none"),
             ("Plugin folder", PLUGIN_ROOT)]
    return [f"{name}: {value}" for name, value in rows]
