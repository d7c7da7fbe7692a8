"""The "Install dependencies" window: a plugin-owned venv with onnxruntime (and optionally torch).

The work runs as a :class:`InstallTask` in QGIS's task manager with its log in the window; on
success the venv is put on ``sys.path`` at once, so the plugin classifies without a restart.
"""
from qgis.core import Qgis, QgsApplication, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from ..core import dependency_installer as installer
from ..qgis_common.plugin_venv import activate_plugin_venv, plugin_venv_dir

LOG_TAG = "Urban Functions"
INTRO = ("Urban Functions runs its networks with onnxruntime, which QGIS does not ship. This "
         "installs it into a folder of its own in your QGIS profile (a Python venv on the "
         "Python QGIS runs on, seeing QGIS's numpy and GDAL), never into the system Python. "
         "With an NVIDIA GPU the GPU build (onnxruntime-gpu) is installed instead. Nothing "
         "needs a restart.")


class InstallTask(QgsTask):
    """Runs :func:`plugin.core.dependency_installer.install` in a worker thread."""

    line = pyqtSignal(str)
    done = pyqtSignal(bool, str)   # ok, message

    def __init__(self, plan):
        super().__init__("Installing Urban Functions dependencies", QgsTask.CanCancel)
        self.plan = plan
        self.message = ""
        self._step = (0, 1)

    def _on_step(self, index, count, _label):
        self._step = (index, count)
        self.setProgress(100.0 * index / count)

    def _on_line(self, text):
        self.line.emit(text)
        # pip's phases move the bar inside the current step
        index, count = self._step
        for word, share in (("Collecting", 0.2), ("Downloading", 0.4), ("Installing", 0.8),
                            ("Successfully", 0.95)):
            if text.startswith(word):
                self.setProgress(100.0 * (index + share) / count)

    def run(self):
        try:
            installer.install(self.plan, on_line=self._on_line, cancelled=self.isCanceled,
                              on_step=self._on_step)
        except installer.InstallError as exc:
            self.message = str(exc)
            return False
        except Exception as exc:  # a bug: say so instead of failing silently
            import traceback
            QgsMessageLog.logMessage(traceback.format_exc(), LOG_TAG, Qgis.Critical)
            self.message = f"Unexpected error: {exc.__class__.__name__}: {exc}"
            return False
        return True

    def finished(self, ok):
        if ok:
            activate_plugin_venv()
            from ..core.environment import missing_dependencies
            still = missing_dependencies()
            if still:
                ok, self.message = False, "Installed, but still missing: " + " ".join(still)
            else:
                self.message = (f"Installed {', '.join(self.plan.packages)} into "
                                f"{self.plan.venv}. Urban Functions can classify now.")
        elif not self.message:
            self.message = "Cancelled."
        self.done.emit(ok, self.message)


class InstallDialog(QDialog):
    installed = pyqtSignal()   # the packages are importable now

    def __init__(self, parent=None, venv=None):
        super().__init__(parent)
        self.setWindowTitle("Install Urban Functions dependencies")
        self.setMinimumWidth(560)
        self.venv = venv or plugin_venv_dir()
        self.task = None
        root = QVBoxLayout(self)
        intro = QLabel(INTRO)
        intro.setWordWrap(True)
        root.addWidget(intro)
        self.training = QCheckBox("Also PyTorch and scikit-learn (to train on your labels)")
        self.training.setToolTip("Needed only for Train on my area. A large download: over "
                                 "1 GB (PyPI's Linux build of torch brings CUDA libraries).")
        self.training.toggled.connect(self._update_plan)
        root.addWidget(self.training)
        self.plan_label = QLabel("")
        self.plan_label.setWordWrap(True)
        self.plan_label.setStyleSheet("font-family: monospace;")
        root.addWidget(self.plan_label)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        root.addWidget(self.progress)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMinimumHeight(160)
        self.log.setMaximumBlockCount(2000)
        root.addWidget(self.log, 1)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        root.addWidget(self.status)
        self.buttons = QDialogButtonBox()
        self.install_button = QPushButton("Install")
        self.install_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel install")
        self.cancel_button.setEnabled(False)
        self.buttons.addButton(self.install_button, QDialogButtonBox.ActionRole)
        self.buttons.addButton(self.cancel_button, QDialogButtonBox.ActionRole)
        self.buttons.addButton(QDialogButtonBox.Close)
        self.install_button.clicked.connect(lambda _checked=False: self.start())
        self.cancel_button.clicked.connect(self.cancel)
        self.buttons.rejected.connect(self.reject)
        root.addWidget(self.buttons)
        self.plan = None
        # asked once: finding the interpreter and the GPU runs subprocesses
        try:
            self._python = installer.base_python()
        except installer.InstallError as exc:
            self._python, self._python_error = None, str(exc)
        from ..core.diagnostics import gpu_name
        self._gpu = gpu_name()
        self._update_plan()

    def _update_plan(self, *_):
        if self._python is None:
            self.plan = None
            self.plan_label.setText("")
            self.status.setText(self._python_error)
            self.install_button.setEnabled(False)
            return
        self.plan = installer.plan(self.venv, with_training=self.training.isChecked(),
                                   gpu=self._gpu, python=self._python)
        self.plan_label.setText(self.plan.describe())
        self.install_button.setEnabled(self.task is None)

    def start(self):
        """Start the install task; returns it (None when it cannot start)."""
        if self.task is not None or self.plan is None:
            return None
        self.log.clear()
        self.progress.setValue(0)
        self.status.setText("Installing…")
        task = InstallTask(self.plan)
        task.line.connect(self.log.appendPlainText)
        # bound methods of widgets: queued into the GUI thread (a lambda would run in the task's)
        task.progressChanged.connect(self._on_progress)
        task.done.connect(self._done)
        self.task = task
        self.install_button.setEnabled(False)
        self.training.setEnabled(False)
        self.cancel_button.setEnabled(True)
        QgsApplication.taskManager().addTask(task)
        return task

    def _on_progress(self, value):
        self.progress.setValue(int(value))

    def cancel(self):
        if self.task is not None:
            self.status.setText("Cancelling…")
            self.task.cancel()

    def _done(self, ok, message):
        self.task = None
        self.cancel_button.setEnabled(False)
        self.training.setEnabled(True)
        self.progress.setValue(100 if ok else 0)
        self.status.setText(message)
        level = Qgis.Success if ok else Qgis.Critical
        QgsMessageLog.logMessage(message, LOG_TAG, level)
        self._update_plan()
        if ok:
            self.installed.emit()

    def is_running(self):
        return self.task is not None
