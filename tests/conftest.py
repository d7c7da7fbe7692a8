"""Shared fixtures. QGIS is started only by tests that ask for it (marker ``qgis``); core tests
never import qgis.

``qgis_app``: one real QgsApplication per session (offscreen, GUI enabled so widgets work,
hermetic profile in a temporary folder). ``processing_app`` adds QGIS's Processing framework.
``iface``: a small QgisInterface stand-in made of real Qt/QGIS widgets (``stub_iface.py``).
"""
import glob
import importlib.util
import os
import sys

import pytest

from stub_iface import StubIface

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QGIS_PYTHON_PLUGINS = "/usr/share/qgis/python/plugins"
BUNDLED_MODEL = os.path.join(ROOT, "models", "sample_city_fusion.onnx")


def _qgis_environment(profile):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ["QGIS_CUSTOM_CONFIG_PATH"] = str(profile)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(profile))
    if QGIS_PYTHON_PLUGINS not in sys.path:
        sys.path.append(QGIS_PYTHON_PLUGINS)


@pytest.fixture(scope="session")
def qgis_app(tmp_path_factory):
    """A started QgsApplication (session-wide); exits QGIS when the session ends."""
    profile = tmp_path_factory.mktemp("qgis_profile")
    _qgis_environment(profile)
    from qgis.core import QgsApplication

    app = QgsApplication.instance()
    owned = app is None
    if owned:
        app = QgsApplication([], True, str(profile))
        app.initQgis()
    yield app
    if owned:
        import gc

        from qgis.core import QgsProject
        QgsProject.instance().clear()
        gc.collect()  # close GDAL datasets / layers held by Python objects first
        app.exitQgis()


@pytest.fixture(scope="session")
def processing_app(qgis_app):
    from processing.core.Processing import Processing

    Processing.initialize()
    return qgis_app


@pytest.fixture(scope="module")
def provider(processing_app):
    """Our provider registered in the Processing registry for this module."""
    from qgis.core import QgsApplication

    from plugin.processing_provider.provider import UrbanFunctionsProvider

    registry = QgsApplication.processingRegistry()
    existing = registry.providerById("urbanfunctions")
    if existing is not None:
        registry.removeProvider(existing)
    prov = UrbanFunctionsProvider()
    assert registry.addProvider(prov)
    yield prov
    registry.removeProvider(prov)


@pytest.fixture
def iface(qgis_app):
    stub = StubIface()
    yield stub
    stub._bar.clearWidgets()


@pytest.fixture
def clean_project(qgis_app):
    """The QGIS project, emptied before and after the test."""
    from qgis.core import QgsProject
    QgsProject.instance().clear()
    yield QgsProject.instance()
    QgsProject.instance().clear()


@pytest.fixture(scope="session")
def urban_functions_package(qgis_app):
    """The repository imported as QGIS imports it: package ``urban_functions`` (root __init__)."""
    name = "urban_functions"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(ROOT, "__init__.py"), submodule_search_locations=[ROOT])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def model_path():
    """The bundled sample-city model (it is committed: its absence is a failure, not a skip)."""
    assert os.path.isfile(BUNDLED_MODEL), f"bundled model missing: {BUNDLED_MODEL}"
    return BUNDLED_MODEL


@pytest.fixture(scope="session")
def sample_city(tmp_path_factory):
    """The sample city (seed 0): .inputs (modality -> path, different CRSs), .ground_truth."""
    from plugin.samplecity import generate_sample_city
    return generate_sample_city(str(tmp_path_factory.mktemp("sample_city")), seed=0)


@pytest.fixture(scope="session")
def city_inputs(sample_city, model_path):
    """The sample city's inputs that the model accepts (modality -> path)."""
    from plugin.core.model_card import read_card
    card = read_card(model_path)
    return {m: p for m, p in sample_city.inputs.items() if m in card.modalities}


def bundled_models():
    return glob.glob(os.path.join(ROOT, "models", "*.onnx"))
