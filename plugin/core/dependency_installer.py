"""Installing the plugin's Python packages into a venv the plugin owns.

QGIS embeds the system Python, and Debian/Ubuntu refuse ``pip install`` into it
(externally-managed-environment). So the plugin makes its own venv on that same Python, with
the system site packages (QGIS's numpy and GDAL stay visible, and numpy is held below 2 because
Debian's GDAL bindings are built against numpy 1), and pip-installs onnxruntime there, or
onnxruntime-gpu when an NVIDIA driver is present, and optionally torch and scikit-learn for
training. :func:`plugin.core.environment.add_venv_site_packages` then finds the packages without
a restart.

Pure Python (subprocess, no QGIS): the QGIS layer runs :func:`install` in a QgsTask.
"""
import os
import queue as _queue
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field

from .errors import UrbanFunctionsError

# what the plugin needs beyond QGIS; the versions the project is tested with
NUMPY_CONSTRAINT = "numpy<2"
TORCH = "torch==2.13.0"
TRAINING_PACKAGES = (TORCH, "scikit-learn")
ONNXRUNTIME_CPU, ONNXRUNTIME_GPU = "onnxruntime", "onnxruntime-gpu"
# the GPU build with NVIDIA's CUDA and cuDNN runtime wheels, so no system CUDA install is needed
# (onnxruntime's documented extras; loaded by onnxruntime.preload_dlls, see core.runtime)
ONNXRUNTIME_GPU_SPEC = "onnxruntime-gpu[cuda,cudnn]"
# onnxruntime's float16 converter (Precision: float16, GPU only) reads the graph with onnx
FP16_PACKAGES = ("onnx",)
PIP_OPTIONS = ("--disable-pip-version-check", "--no-input", "--progress-bar", "off",
               "--timeout", "30", "--retries", "2")


class InstallError(UrbanFunctionsError):
    """The installation failed; the message says why and what to do."""


class InstallCancelled(InstallError):
    pass


@dataclass
class InstallPlan:
    venv: str
    base_python: str
    packages: list
    gpu: str = ""                  # the NVIDIA GPU's name when one was found
    steps: list = field(default_factory=list)   # [(label, argv)]
    creates_venv: bool = False

    def describe(self):
        lines = [f"Python: {self.base_python}", f"Venv: {self.venv}"
                 + (" (created)" if self.creates_venv else " (exists; packages added)"),
                 f"Packages: {', '.join(self.packages)} (with {NUMPY_CONSTRAINT})"]
        lines.append(f"NVIDIA GPU: {self.gpu}" if self.gpu else
                     "NVIDIA GPU: none found (nvidia-smi); the CPU build of onnxruntime is used")
        return "\n".join(lines)


def venv_python(venv):
    return os.path.join(venv, "Scripts", "python.exe") if os.name == "nt" else \
        os.path.join(venv, "bin", "python")


def _python_version(python):
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def base_python():
    """The interpreter QGIS embeds (inside QGIS ``sys.executable`` is the qgis binary, not
    Python). The candidates are checked to be the same Python version as this one."""
    version = "%d.%d" % sys.version_info[:2]
    names = (f"python{version}", "python3", "python")
    candidates = []
    # inside a venv the base interpreter comes first: the plugin's venv sits on the system one
    base = getattr(sys, "_base_executable", "")
    if base and os.path.basename(base).lower().startswith("python"):
        candidates.append(base)
    if os.path.basename(sys.executable).lower().startswith("python"):
        candidates.append(sys.executable)
    for prefix in (sys.base_exec_prefix, sys.exec_prefix):
        # POSIX: <prefix>/bin/python3.11; Windows/OSGeo4W (untested): <prefix>/python.exe
        candidates += [os.path.join(prefix, "bin", n) for n in names]
        candidates += [os.path.join(prefix, n + ".exe") for n in names]
    candidates += [shutil.which(n) for n in names]
    seen = set()
    for path in candidates:
        if not path or path in seen or not os.path.isfile(path):
            continue
        seen.add(path)
        if _python_version(path) == version:
            return path
    raise InstallError(
        f"Cannot find the Python {version} executable that QGIS runs on (looked in "
        f"{sys.base_exec_prefix} and on PATH). Install the packages by hand into a venv made "
        f"with that Python and set URBAN_FUNCTIONS_VENV to it (see the README).")


def nvidia_gpu():
    """The first NVIDIA GPU's name from ``nvidia-smi``, or '' (no driver, no GPU)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return ""
    try:
        out = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return lines[0] if out.returncode == 0 and lines else ""


def plan(venv, with_training=False, gpu=None, python=None):
    """What :func:`install` will run. ``gpu``: None = detect; '' = CPU build."""
    gpu = nvidia_gpu() if gpu is None else gpu
    python = python or base_python()
    packages = [ONNXRUNTIME_GPU_SPEC, *FP16_PACKAGES] if gpu else [ONNXRUNTIME_CPU]
    if with_training:
        packages += list(TRAINING_PACKAGES)
    vpy = venv_python(venv)
    creates = not os.path.isfile(vpy)
    steps = []
    if creates:
        steps.append(("Creating the venv", [python, "-m", "venv", "--system-site-packages", venv]))
    # onnxruntime and onnxruntime-gpu are the same module: never both in one venv
    other = ONNXRUNTIME_CPU if gpu else ONNXRUNTIME_GPU
    if not creates:
        steps.append((f"Removing {other} if present (never both builds)",
                      [vpy, "-m", "pip", "uninstall", "-y", "-q", other]))
    steps.append(("Installing " + ", ".join(packages),
                  [vpy, "-m", "pip", "install", *PIP_OPTIONS, *packages, NUMPY_CONSTRAINT]))
    return InstallPlan(venv=venv, base_python=python, packages=packages, gpu=gpu, steps=steps,
                       creates_venv=creates)


# (pattern in the tool's output, what the user should do) -- most specific first
_DIAGNOSES = (
    (r"ensurepip is not\s+available|No module named venv|No module named ensurepip",
     "This Python has no venv/ensurepip module. On Debian/Ubuntu install it with:\n"
     "    sudo apt install python3-venv\n"
     "(on Debian 12 the package is python3.11-venv), then press Install again."),
    (r"No module named pip",
     "The venv has no pip. On Debian/Ubuntu: sudo apt install python3-venv python3-pip, delete "
     "{venv} and press Install again."),
    (r"Temporary failure in name resolution|Failed to establish a new connection|"
     r"Network is unreachable|Connection refused|Could not fetch URL|ProxyError|"
     r"Read timed out|ConnectTimeoutError|NewConnectionError",
     "The Python package index cannot be reached (offline, or behind a proxy). Connect, or set "
     "HTTPS_PROXY for QGIS, and press Install again. Offline: download the wheels on a "
     "connected machine (pip download {packages} -d wheels) and install them with\n"
     "    {vpy} -m pip install --no-index --find-links wheels {packages}"),
    (r"No matching distribution found|Could not find a version that satisfies",
     "The package index has no build of {packages} for this Python ({version}) and platform. "
     "Install a build by hand into {venv} (see the README), or use a QGIS with a supported "
     "Python."),
    (r"No space left on device",
     "The disk holding {venv} is full: free space and press Install again."),
    (r"Permission denied",
     "No permission to write {venv}: the QGIS profile folder must be writable."),
)


def diagnose(output, plan_):
    """A message telling the user what went wrong and what to run, from the tool's output."""
    fill = dict(venv=plan_.venv, vpy=venv_python(plan_.venv), packages=" ".join(plan_.packages),
                version="%d.%d" % sys.version_info[:2])
    for pattern, advice in _DIAGNOSES:
        if re.search(pattern, output):
            return advice.format(**fill)
    tail = "\n".join(output.strip().splitlines()[-6:])
    return f"The installer failed; its last lines were:\n{tail}"


def install(plan_, on_line=print, cancelled=lambda: False, on_step=None):
    """Run the plan. ``on_line(text)`` gets every output line; ``cancelled()`` is polled.

    A venv this run created is removed again when the run fails or is cancelled, so no half
    venv is left to be found later. Raises :class:`InstallError` / :class:`InstallCancelled`.
    """
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1")
    env.pop("PYTHONPATH", None)     # the venv must not see QGIS's own plugin folders
    env.pop("PIP_REQUIRE_VIRTUALENV", None)
    try:
        for index, (label, argv) in enumerate(plan_.steps):
            if on_step is not None:
                on_step(index, len(plan_.steps), label)
            on_line(f"$ {' '.join(argv)}")
            output = _run(argv, env, on_line, cancelled)
            if output is not None:   # (pip uninstall of an absent package succeeds)
                raise InstallError(diagnose(output, plan_))
        check = subprocess.run([venv_python(plan_.venv), "-c", "import onnxruntime, numpy; "
                                "print(onnxruntime.__version__, numpy.__version__)"],
                               capture_output=True, text=True, env=env, timeout=120)
        if check.returncode != 0:
            raise InstallError("The packages were installed but onnxruntime cannot be imported:\n"
                               + "\n".join(check.stderr.strip().splitlines()[-4:]))
        on_line(f"onnxruntime {check.stdout.split()[0]} with numpy {check.stdout.split()[1]}")
    except BaseException as exc:
        if plan_.creates_venv and os.path.isdir(plan_.venv):
            shutil.rmtree(plan_.venv, ignore_errors=True)
            if isinstance(exc, InstallError):
                raise type(exc)(f"{exc}\n(The new venv {plan_.venv} was removed again.)") from None
        raise


def _run(argv, env, on_line, cancelled):
    """Run one step; None when it succeeded, else its whole output (for :func:`diagnose`).
    Output is read in a thread so that cancel acts within a fraction of a second even while
    pip downloads quietly."""
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, bufsize=1)
    except OSError as exc:
        return f"{argv[0]}: {exc}"
    lines, queue = [], _queue.Queue()

    def pump():
        for line in proc.stdout:
            queue.put(line.rstrip())
        queue.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        while True:
            if cancelled():
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                raise InstallCancelled("Cancelled.")
            try:
                line = queue.get(timeout=0.2)
            except _queue.Empty:
                continue
            if line is None:
                break
            lines.append(line)
            on_line(line)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)
    return None if proc.returncode == 0 else "\n".join(lines)
