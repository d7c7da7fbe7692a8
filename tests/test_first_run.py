"""A planner's first run: the dependency installer (a plugin-owned venv in the QGIS profile),
the dialog on a laptop screen, the sample city's model, the GPU/diagnostics box and the
Processing model drop-down. Real pip, real QGIS widgets, real onnxruntime."""
import os
import shutil
import subprocess
import sys
import textwrap
import threading

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEM_PYTHON = "/usr/bin/python3"
OFFLINE = ("cannot be reached", "offline")


def _offline_env(monkeypatch):
    """pip sees no package source at all: no config file, no local wheels, a dead index."""
    for name in list(os.environ):
        if name.startswith("PIP_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")


# --- the installer's core (no QGIS) -----------------------------------------------------------
def test_plan_picks_the_gpu_build_and_never_both(tmp_path):
    from plugin.core import dependency_installer as di
    cpu = di.plan(str(tmp_path / "venv"), gpu="")
    assert cpu.packages == ["onnxruntime"] and cpu.creates_venv
    assert cpu.steps[0][1][1:] == ["-m", "venv", "--system-site-packages", str(tmp_path / "venv")]
    assert "numpy<2" in cpu.steps[-1][1]   # Debian's GDAL bindings need numpy 1
    gpu = di.plan(str(tmp_path / "venv"), gpu="NVIDIA H200, 143771 MiB", with_training=True)
    # the GPU build brings NVIDIA's CUDA/cuDNN runtime wheels (no system CUDA needed)
    assert gpu.packages == ["onnxruntime-gpu[cuda,cudnn]", "onnx", "torch==2.13.0",
                            "scikit-learn"]
    assert "NVIDIA H200" in gpu.describe()
    # an existing venv: the other build is removed first (same module name, never both)
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    shutil.copy(sys.executable, tmp_path / "venv" / "bin" / "python")
    again = di.plan(str(tmp_path / "venv"), gpu="NVIDIA H200")
    assert not again.creates_venv
    assert again.steps[0][1][-1] == "onnxruntime" and "uninstall" in again.steps[0][1]


def test_base_python_is_the_interpreter_qgis_runs_on():
    from plugin.core import dependency_installer as di
    python = di.base_python()
    out = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == str(tuple(sys.version_info[:2]))


def test_missing_venv_module_names_the_apt_package(tmp_path):
    from plugin.core import dependency_installer as di
    plan = di.plan(str(tmp_path / "venv"), gpu="")
    # what Debian's python3 prints without python3-venv
    debian = ("The virtual environment was not created successfully because ensurepip is not\n"
              "available.  On Debian/Ubuntu systems, you need to install the python3-venv\n")
    assert "sudo apt install python3-venv" in di.diagnose(debian, plan)
    assert "python3.11-venv" in di.diagnose(debian, plan)


def test_offline_install_says_so_and_leaves_no_venv(tmp_path, monkeypatch):
    from plugin.core import dependency_installer as di
    _offline_env(monkeypatch)
    venv = str(tmp_path / "venv")
    plan = di.plan(venv, gpu="")
    lines = []
    with pytest.raises(di.InstallError) as err:
        di.install(plan, on_line=lines.append)
    message = str(err.value)
    assert all(word in message for word in OFFLINE), message
    assert "--no-index --find-links" in message     # how to install without a connection
    assert "was removed again" in message
    assert not os.path.exists(venv)
    assert any(line.startswith("$ ") for line in lines)   # the log shows what ran


def test_cancel_stops_pip_and_leaves_no_venv(tmp_path):
    from plugin.core import dependency_installer as di
    venv = str(tmp_path / "venv")
    plan = di.plan(venv, gpu="")
    started = threading.Event()

    def on_step(index, _count, _label):
        if index == 1:   # pip is starting: cancel while it works
            started.set()

    with pytest.raises(di.InstallCancelled):
        di.install(plan, on_line=lambda _l: None, cancelled=started.is_set, on_step=on_step)
    assert started.is_set() and not os.path.exists(venv)


# --- a fresh profile: installer, then the sample city -------------------------------------------
FRESH_PROFILE_SCRIPT = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {tests!r})
    sys.path.append('/usr/share/qgis/python/plugins')
    from qgis.core import QgsApplication
    app = QgsApplication([], True, {profile!r}); app.initQgis()
    from processing.core.Processing import Processing
    Processing.initialize()
    import importlib.util
    pkg = {pkg!r}
    spec = importlib.util.spec_from_file_location(
        'urban_functions', pkg + '/__init__.py', submodule_search_locations=[pkg])
    mod = importlib.util.module_from_spec(spec); sys.modules['urban_functions'] = mod
    spec.loader.exec_module(mod)
    from stub_iface import StubIface
    from qgis.PyQt.QtCore import QCoreApplication

    def wait(pred, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            QCoreApplication.processEvents()
            if pred():
                return True
            time.sleep(0.02)
        return False

    iface = StubIface()
    plugin = mod.classFactory(iface)
    plugin.initGui()
    print('MISSING', plugin.missing)
    print('SETTINGS', QgsApplication.qgisSettingsDirPath())
    dlg = plugin.show_dialog()
    print('RUN_BEFORE', dlg.run_button.isEnabled())
    tdlg = plugin.show_train_dialog()
    print('TRAIN_BEFORE', tdlg.missing_packages(), tdlg.install_button.isVisible(),
          tdlg.train_button.isEnabled())
    tdlg.install_button.click()          # opens the installer with PyTorch ticked
    inst = plugin.install_dialog
    print('TRAINING_TICKED', inst.training.isChecked(), 'torch' in inst.plan.describe())
    inst.training.setChecked(False)      # this test installs onnxruntime only
    print('PLAN', inst.plan.describe().replace(chr(10), ' | '))
    task = inst.start()
    print('STARTED', task is not None)
    print('FINISHED', wait(lambda: inst.task is None, 900))
    print('STATUS', inst.status.text().replace(chr(10), ' | '))
    print('LOG_LINES', inst.log.document().blockCount())
    print('MISSING_AFTER', plugin.missing)
    import onnxruntime
    print('ORT_FILE', onnxruntime.__file__)
    print('RUN_AFTER', dlg.run_button.isEnabled(), dlg.install_button.isVisible())
    print('TRAIN_AFTER', tdlg.missing_packages())
    print('BAR_AFTER', iface.message_texts())
    plugin.load_sample_city(folder={city!r})
    print('CITY', wait(lambda: plugin.sample_task is None, 600))
    path, card = dlg.selected_model()
    print('MODEL', card.name if card else None)
    dlg.output_file.setFilePath({out!r})
    task = dlg.run()
    print('RUN_STARTED', task is not None, dlg.status.text().replace(chr(10), ' | '))
    print('RUN_DONE', wait(lambda: dlg.task is None, 600))
    print('RUN_STATUS', dlg.status.text().replace(chr(10), ' | '))
    from osgeo import gdal
    import numpy as np
    out = gdal.Open({out!r})
    gt = out.GetGeoTransform()
    bounds = (gt[0], gt[3] + gt[5] * out.RasterYSize, gt[0] + gt[1] * out.RasterXSize, gt[3])
    truth = gdal.Warp('', {truth!r}, format='MEM', outputBounds=bounds,
                      dstSRS=out.GetProjection(), width=out.RasterXSize,
                      height=out.RasterYSize, resampleAlg='near')
    a = out.GetRasterBand(1).ReadAsArray(); b = truth.GetRasterBand(1).ReadAsArray()
    nd = out.GetRasterBand(1).GetNoDataValue()
    ok = (a != nd) & (b > 0)
    print('AGREEMENT', float((a[ok] == b[ok]).mean()), int(ok.sum()))
    out = truth = None
    plugin.unload()
    app.exitQgis()
""")


def _install_the_zip(plugins_folder, tmp_path):
    """What a user does: make zip, then Install from ZIP (unpacked into the profile)."""
    import zipfile

    from test_packaging import TEST_EMAIL, _plugin_zip
    pz = _plugin_zip()
    archive = str(tmp_path / "urban_functions.zip")
    pz.build(archive, TEST_EMAIL)
    assert pz.check(archive) == []
    os.makedirs(plugins_folder, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(plugins_folder)
    return os.path.join(plugins_folder, pz.PACKAGE)


def test_fresh_profile_installs_dependencies_then_classifies_the_sample_city(tmp_path,
                                                                             sample_city):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_RUNTIME_DIR=str(tmp_path))
    for name in ("URBAN_FUNCTIONS_VENV", "PYTHONPATH", "URBAN_FUNCTIONS_MODELS"):
        env.pop(name, None)
    check = subprocess.run([SYSTEM_PYTHON, "-c", "import onnxruntime"], env=env,
                           capture_output=True)
    if check.returncode == 0:
        pytest.skip("onnxruntime is installed system-wide; a fresh profile cannot lack it")
    profile = tmp_path / "profile"
    pkg = _install_the_zip(str(profile / "python" / "plugins"), tmp_path)
    assert not os.path.exists(os.path.join(pkg, ".venv"))
    out = tmp_path / "functions.tif"
    script = tmp_path / "first_run.py"
    script.write_text(FRESH_PROFILE_SCRIPT.format(
        tests=os.path.join(ROOT, "tests"), profile=str(profile), pkg=pkg,
        city=os.path.dirname(next(iter(sample_city.inputs.values()))),
        truth=str(sample_city.ground_truth), out=str(out)))
    proc = subprocess.run([SYSTEM_PYTHON, str(script)], env=env, capture_output=True, text=True,
                          timeout=1700, cwd=str(tmp_path))
    text = proc.stdout + proc.stderr
    lines = {line.split(" ", 1)[0]: line for line in proc.stdout.splitlines() if " " in line}
    if "STATUS" in lines and all(w in lines["STATUS"] for w in OFFLINE):
        pytest.skip(f"no Python package index reachable from this machine: {lines['STATUS']}")
    assert proc.returncode == 0, text[-4000:]
    assert "onnxruntime" in lines["MISSING"] and lines["RUN_BEFORE"] == "RUN_BEFORE False"
    venv = os.path.join(lines["SETTINGS"].split(" ", 1)[1], "urban_functions", "venv")
    assert venv.startswith(str(profile)) and f"Venv: {venv} (created)" in lines["PLAN"]
    assert lines["FINISHED"] == "FINISHED True", text[-4000:]
    assert "Urban Functions can classify now" in lines["STATUS"], lines["STATUS"]
    assert lines["MISSING_AFTER"] == "MISSING_AFTER []"
    # found without a restart, from the plugin's own venv in the profile
    assert f" {venv}/" in lines["ORT_FILE"], lines["ORT_FILE"]
    assert lines["RUN_AFTER"] == "RUN_AFTER True False"
    # training: onnxruntime and PyTorch missing before, the installer opens with PyTorch ticked
    assert lines["TRAIN_BEFORE"] == "TRAIN_BEFORE ['onnxruntime', 'PyTorch'] True False"
    assert lines["TRAINING_TICKED"] == "TRAINING_TICKED True True"
    assert lines["TRAIN_AFTER"] == "TRAIN_AFTER ['PyTorch']"
    assert "Dependencies installed" in lines["BAR_AFTER"]
    assert "cannot classify yet" not in lines["BAR_AFTER"]
    assert lines["CITY"] == "CITY True"
    # the sample city gets its own model in the dialog, as in make demo and the README
    assert lines["MODEL"] == "MODEL sample-city-fusion"
    assert lines["RUN_DONE"] == "RUN_DONE True" and out.is_file(), lines.get("RUN_STATUS")
    agreement = float(lines["AGREEMENT"].split()[1])
    assert agreement > 0.9, lines["AGREEMENT"]


# --- the dialog on a laptop screen ------------------------------------------------------------
@pytest.fixture
def classify_dialog(iface, qgis_app):
    from qgis.core import QgsSettings

    from plugin.gui.dialog import ClassifyDialog
    QgsSettings().remove("UrbanFunctions")
    dlg = ClassifyDialog(iface)
    yield dlg
    dlg.close()
    dlg.deleteLater()


@pytest.mark.parametrize("advanced_open", [False, True])
def test_dialog_fits_a_1366x768_screen(classify_dialog, advanced_open):
    """Run, Cancel and Close stay on screen; the settings scroll (Advanced open too)."""
    from qgis.PyQt.QtCore import QCoreApplication, QRect
    dlg = classify_dialog
    dlg.advanced.setCollapsed(not advanced_open)
    free = QRect(0, 0, 1366, 768 - 40)   # a taskbar of 40 px
    dlg.fit_to_screen(free)
    dlg.show()
    for _ in range(5):
        QCoreApplication.processEvents()
    title_bar = 32
    assert dlg.height() + title_bar <= 768 - 40 and dlg.width() <= 1366
    assert dlg.minimumSizeHint().height() + title_bar <= 768 - 40
    inside = dlg.rect()
    for button in (dlg.run_button, dlg.cancel_button, dlg.close_button):
        assert button.isVisible(), button.text()
        assert not dlg.scroll.isAncestorOf(button), button.text()
        corner = button.mapTo(dlg, button.rect().bottomRight())
        assert inside.contains(corner), (button.text(), corner, inside)
    # the settings are reachable by scrolling when they do not fit
    content = dlg.scroll.widget()
    if content.sizeHint().height() > dlg.scroll.viewport().height():
        assert dlg.scroll.verticalScrollBar().maximum() > 0
    last = dlg.device if advanced_open else dlg.advanced   # the lowest setting shown
    dlg.scroll.ensureWidgetVisible(last)
    QCoreApplication.processEvents()
    top = last.mapTo(dlg.scroll.viewport(), last.rect().topLeft())
    assert 0 <= top.y() < dlg.scroll.viewport().height()


def test_old_error_bar_goes_when_the_inputs_are_fixed(classify_dialog, sample_city, tmp_path,
                                                       clean_project):
    from qgis.core import QgsRasterLayer
    dlg = classify_dialog
    dlg.output_file.setFilePath(str(tmp_path / "functions.tif"))
    assert dlg.run() is None                      # no input yet
    assert [i.title() for i in dlg.bar.items()] == ["Cannot run"]
    for modality, path in sample_city.inputs.items():
        layer = QgsRasterLayer(path, modality, "gdal")
        clean_project.addMapLayer(layer)
        dlg.set_input(modality, layer)
    assert dlg.problems() == []
    assert dlg.bar.items() == [] and dlg.status.text() == ""
    assert dlg.selected_model()[1].name == "sample-city-fusion"


def test_demo_model_is_not_kept_for_real_layers(classify_dialog, sample_city, tmp_path,
                                                clean_project):
    """After the sample city, layers that are not the sample city never keep its demo model."""
    from osgeo import gdal
    from qgis.core import QgsRasterLayer
    dlg = classify_dialog
    s2 = sample_city.inputs["s2_summer"]
    layer = QgsRasterLayer(s2, "city s2", "gdal")
    clean_project.addMapLayer(layer)
    dlg.set_input("s2_summer", layer)
    assert dlg.selected_model()[1].name == "sample-city-fusion"
    # the same pixels without the generator's tag: a user's own layer
    plain = str(tmp_path / "my_s2.tif")
    src = gdal.Open(s2)
    copy = gdal.GetDriverByName("GTiff").CreateCopy(plain, src)
    copy.SetMetadata({})
    copy = src = None
    mine = QgsRasterLayer(plain, "my s2", "gdal")
    clean_project.addMapLayer(mine)
    dlg.set_input("s2_summer", mine)
    path, card = dlg.selected_model()
    assert card is None or card.name != "sample-city-fusion"
    if card is None:   # no real-data model for these inputs: the dialog says how to get one
        assert "So2Sat" in dlg.model_info.text() or "train" in dlg.model_info.text().lower()
        assert any("Choose a model" in p or "model" in p.lower() for p in dlg.problems())


# --- GPU and diagnostics ----------------------------------------------------------------------
def test_device_line_and_diagnostics_box(classify_dialog, qgis_app):
    import onnxruntime
    from qgis.PyQt.QtWidgets import QApplication

    from plugin.core.diagnostics import gpu_name
    from plugin.gui.diagnostics_dialog import DiagnosticsDialog
    dlg = classify_dialog
    line = dlg.device_info.text()
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert "GPU" in line and "CUDA" in line
    elif gpu_name():
        assert gpu_name() in line and "onnxruntime-gpu" in line
    else:
        assert line == "Automatic uses the CPU (no NVIDIA GPU found)"
    box = DiagnosticsDialog()
    text = box.text.toPlainText()
    from osgeo import gdal
    from qgis.core import Qgis
    for needed in (f"QGIS: {Qgis.QGIS_VERSION}", f"GDAL: {gdal.__version__}",
                   f"onnxruntime: {onnxruntime.__version__}", "Execution providers: ",
                   "CPUExecutionProvider", "NVIDIA GPU: ", "torch (training): ",
                   "Venvs in use: ", "Urban Functions: 0."):
        assert needed in text, needed
    QApplication.clipboard().clear()
    box.copy_button.click()
    assert QApplication.clipboard().text() == text
    box.deleteLater()


# --- Processing: MODEL is a drop-down that still takes a path ----------------------------------
def test_processing_model_drop_down(provider, tmp_path):
    from processing.gui.AlgorithmDialog import AlgorithmDialog
    from qgis.core import QgsApplication

    from plugin.processing_provider.model_widget import BEST_FIT, ModelWidgetWrapper
    alg = QgsApplication.processingRegistry().createAlgorithmById("urbanfunctions:classify")
    dialog = AlgorithmDialog(alg)
    try:
        wrapper = dialog.mainWidget().wrappers["MODEL"]
        assert isinstance(wrapper, ModelWidgetWrapper)
        items = [wrapper.combo.itemText(i) for i in range(wrapper.combo.count())]
        assert items[0] == BEST_FIT
        for name in ("sample-city-fusion", "urban-fusion", "vhr-scenes-resnet"):
            assert any(t.startswith(name + ": ") for t in items), (name, items)
        assert wrapper.value() == ""                          # empty: best fit
        wrapper.combo.setCurrentIndex(next(i for i, t in enumerate(items)
                                           if t.startswith("urban-fusion: ")))
        assert wrapper.value() == "urban-fusion"              # the name the engine finds
        path = os.path.join(ROOT, "models", "sample_city_fusion.onnx")
        wrapper.setValue(path)
        assert wrapper.value() == path                        # a path still goes through
        wrapper.setValue("vhr-scenes-resnet")
        assert wrapper.combo.currentText().startswith("vhr-scenes-resnet: ")
        params = dialog.mainWidget().createProcessingParameters()
        assert params["MODEL"] == "vhr-scenes-resnet"
    finally:
        dialog.deleteLater()
