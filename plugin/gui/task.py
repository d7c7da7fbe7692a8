"""Background run of the engine as a :class:`QgsTask` (progress + cancel in QGIS's task manager)."""
import traceback

from qgis.core import Qgis, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from ..core.errors import Cancelled, UrbanFunctionsError

LOG_TAG = "Urban Functions"


class ClassifyTask(QgsTask):
    """Runs ``run_classification(request)`` in a worker thread.

    Signals (delivered in the main thread): ``progressText(str)`` for the engine's messages,
    ``succeeded(result)`` and ``failed(message, cancelled)`` once the task is over.
    ``finished()`` runs in the main thread, so receivers may touch the project and widgets.
    """

    progressText = pyqtSignal(str)
    succeeded = pyqtSignal(object)
    failed = pyqtSignal(str, bool)

    def __init__(self, request, description="Classifying urban functions"):
        super().__init__(description, QgsTask.CanCancel)
        self.request = request
        self.result = None
        self.error = None
        self.cancelled = False
        self._last_text = None

    # worker thread ----------------------------------------------------------------------------
    def _progress(self, fraction, message=""):
        try:
            self.setProgress(max(0.0, min(100.0, 100.0 * float(fraction))))
        except (TypeError, ValueError):
            pass
        if message and message != self._last_text:
            self._last_text = message
            self.progressText.emit(str(message))

    def _log(self, message):
        QgsMessageLog.logMessage(str(message), LOG_TAG, Qgis.Info)

    def run(self):
        try:
            from ..core.engine import run_classification
            self.result = run_classification(self.request, progress=self._progress,
                                             is_cancelled=self.isCanceled, log=self._log)
            return True
        except Cancelled as exc:
            self.cancelled = True
            self.error = str(exc) or "Cancelled; nothing was written."
        except UrbanFunctionsError as exc:
            self.error = str(exc)
        except Exception as exc:  # a bug, not a user error: keep the traceback for the log
            self.error = f"Unexpected error: {exc.__class__.__name__}: {exc}"
            QgsMessageLog.logMessage(traceback.format_exc(), LOG_TAG, Qgis.Critical)
        if self.isCanceled():
            self.cancelled = True
        return False

    # main thread -------------------------------------------------------------------------------
    def finished(self, ok):
        if ok and self.result is not None:
            self.succeeded.emit(self.result)
            return
        if self.error is None:  # cancelled before run() started, or terminated
            self.cancelled = True
            self.error = "Cancelled; nothing was written."
        self.failed.emit(self.error, self.cancelled)
