"""The venv the plugin owns inside the QGIS profile: ``<profile>/urban_functions/venv``.

"Install dependencies" creates it (:mod:`plugin.core.dependency_installer`); at start-up and
right after an install it is put on ``sys.path`` so that onnxruntime is found without a restart.
"""
import os

from qgis.core import QgsApplication


def plugin_venv_dir():
    return os.path.join(QgsApplication.qgisSettingsDirPath(), "urban_functions", "venv")


def activate_plugin_venv():
    """Register the profile's venv and add every known venv's site-packages to ``sys.path``;
    returns the folders added."""
    from ..core.environment import add_venv_site_packages, register_venv
    register_venv(plugin_venv_dir())
    return add_venv_site_packages()
