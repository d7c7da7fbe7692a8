"""Urban Functions QGIS plugin entry point.

QGIS imports this folder as a package (``urban_functions``) and calls :func:`classFactory`.
QGIS embeds the system Python, so before anything needs onnxruntime the venvs that can hold it
are added to ``sys.path``: ``$URBAN_FUNCTIONS_VENV``, the venv "Install dependencies" makes in the
QGIS profile (``<profile>/urban_functions/venv``) and a source checkout's ``.venv``.  If a
dependency is still missing the plugin loads anyway, says what is missing and offers to install
it (message bar, dialog, Plugins menu, Processing).
"""


def classFactory(iface):  # noqa: N802 (QGIS API name)
    from .plugin.core.environment import missing_dependencies
    from .plugin.qgis_common.plugin_venv import activate_plugin_venv

    activate_plugin_venv()
    missing = missing_dependencies()
    from .plugin.qgis_plugin import UrbanFunctionsPlugin

    return UrbanFunctionsPlugin(iface, missing)
