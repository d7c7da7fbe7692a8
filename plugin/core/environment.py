"""Finding the Python packages the engine needs.

QGIS and qgis_process embed the system Python, so packages installed into the project's venv
(onnxruntime above all) are invisible to them until we add the venv's site-packages ourselves.
"""
import importlib
import importlib.machinery
import os
import site
import sys

VENV_ENV = "URBAN_FUNCTIONS_VENV"
PLUGIN_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# import name -> how to get it (shown verbatim to the user)
REQUIREMENTS = {
    "numpy": "the system package python3-numpy (QGIS ships it)",
    "osgeo.gdal": "the system package python3-gdal (QGIS ships it)",
    "onnxruntime": "in QGIS, Plugins > Urban Functions > Install dependencies… (it installs "
                   "onnxruntime, or onnxruntime-gpu on an NVIDIA GPU, into a venv the plugin owns "
                   "in your QGIS profile); from a source checkout, `make setup`",
}


# Venvs the QGIS layer knows of (the plugin-owned venv in the QGIS profile); the core cannot ask
# QGIS where its profile is.
_registered_venvs = []


def register_venv(path):
    """Look into this venv too (the QGIS layer registers ``<profile>/urban_functions/venv``)."""
    if path and path not in _registered_venvs:
        _registered_venvs.append(path)


def venv_candidates(plugin_root=PLUGIN_ROOT):
    """Venvs we look into: $URBAN_FUNCTIONS_VENV, the registered ones (the plugin-owned venv of
    the QGIS profile), then <plugin checkout>/.venv (symlinks resolved)."""
    found = []
    if os.environ.get(VENV_ENV):
        found.append(os.environ[VENV_ENV])
    found.extend(_registered_venvs)
    found.append(os.path.join(os.path.realpath(plugin_root), ".venv"))
    return found


def venv_site_packages(venv):
    """The site-packages folder of a venv made by this Python (POSIX or Windows layout)."""
    if os.name == "nt":
        return os.path.join(venv, "Lib", "site-packages")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return os.path.join(venv, "lib", version, "site-packages")


# Pure-Python packages torch needs newer than Debian ships (torch 2.13 wants sympy >= 1.13; Debian 12
# has 1.11, which fails with "cannot import name 'equal_valued'"). These come from the venv even
# though the venv sits after the system folders on sys.path. Everything else keeps the system copy:
# a pip h5py or GDAL-linked wheel loaded inside QGIS clashes with the HDF5/GDAL QGIS already loaded.
PREFER_VENV = ("sympy", "mpmath")


class _VenvFirst:
    """Meta-path finder: the top-level packages in PREFER_VENV resolve from the venv folders.

    Submodules follow their parent's __path__, so only the top level needs redirecting.
    """

    def __init__(self, folders):
        self.folders = list(folders)

    def find_spec(self, name, path=None, target=None):
        if name not in PREFER_VENV:
            return None
        return importlib.machinery.PathFinder.find_spec(name, self.folders)


def add_venv_site_packages(plugin_root=PLUGIN_ROOT):
    """Add matching venv site-packages to sys.path; returns the folders added."""
    added = []
    for venv in venv_candidates(plugin_root):
        sp = venv_site_packages(venv)
        if os.path.isdir(sp) and sp not in sys.path:
            site.addsitedir(sp)
            added.append(sp)
    if added:
        finder = next((f for f in sys.meta_path if isinstance(f, _VenvFirst)), None)
        if finder is None:
            sys.meta_path.insert(0, _VenvFirst(added))
        else:
            finder.folders.extend(added)
        importlib.invalidate_caches()  # packages installed after start-up are found at once
    return added


def active_venvs():
    """The venvs whose site-packages are on sys.path (for diagnostics)."""
    return [v for v in venv_candidates() if venv_site_packages(v) in sys.path]


def missing_dependencies():
    """Human-readable lines, one per package that cannot be imported (empty when all is well)."""
    missing = []
    for module, hint in REQUIREMENTS.items():
        try:
            importlib.import_module(module)
        except Exception as exc:  # ImportError, or a broken binary wheel (OSError)
            missing.append(f"{module} cannot be imported ({exc.__class__.__name__}: {exc}). "
                           f"Install it with: {hint}.")
    return missing
