"""About / diagnostics: versions, execution providers, GPU and venvs, with Copy for bug reports."""
from qgis.core import Qgis
from qgis.PyQt.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
)

from ..core.diagnostics import report_lines


def diagnostics_text():
    from qgis.core import QgsApplication
    extra = [("QGIS", f"{Qgis.QGIS_VERSION} (profile {QgsApplication.qgisSettingsDirPath()})")]
    return "\n".join(report_lines(extra))


class DiagnosticsDialog(QDialog):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Urban Functions: about and diagnostics")
        self.setMinimumWidth(620)
        root = QVBoxLayout(self)
        note = QLabel("Paste this into a bug report: it says what the plugin runs on.")
        note.setWordWrap(True)
        root.addWidget(note)
        self.text = QPlainTextEdit(diagnostics_text())
        self.text.setReadOnly(True)
        self.text.setMinimumHeight(260)
        root.addWidget(self.text, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        self.copy_button = QPushButton("Copy")
        self.copy_button.clicked.connect(self.copy)
        buttons.addButton(self.copy_button, QDialogButtonBox.ActionRole)
        buttons.rejected.connect(self.reject)
        root.addWidget(buttons)

    def copy(self):
        QApplication.clipboard().setText(self.text.toPlainText())
