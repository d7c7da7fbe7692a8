"""Urban Functions QGIS plugin entry point.

QGIS imports this folder as a package (``urban_functions``) and calls :func:`classFactory`.
QGIS embeds the system Python, so before anything needs onnxruntime the project's venv
(``<plugin>/.venv`` or ``$URBAN_FUNCTIONS_VENV``) is added to ``sys.path``.  If a dependency is
still missing the plugin loads anyway and says what to install (message bar, dialog, Processing).
"""


def classFactory(iface):  # noqa: N802 (QGIS API name)
    from .plugin.core.environment import add_venv_site_packages, missing_dependencies

    add_venv_site_packages()
    missing = missing_dependencies()
    from .plugin.qgis_plugin import UrbanFunctionsPlugin

    return UrbanFunctionsPlugin(iface, missing)
