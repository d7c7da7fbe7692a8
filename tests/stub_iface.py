"""A QgisInterface stand-in made of real Qt/QGIS widgets (main window, Plugins menu, toolbar,
map canvas, message bar): what the plugin's initGui/unload/dialog use. No pytest import, so
subprocess scripts run by the tests can use it with the system Python too."""


class StubIface:
    """What the plugin uses of QgisInterface, backed by real widgets (no mock objects)."""

    def __init__(self):
        from qgis.gui import QgsMapCanvas, QgsMessageBar
        from qgis.PyQt.QtWidgets import QMainWindow, QVBoxLayout, QWidget

        self._main = QMainWindow()
        self._plugins_menu = self._main.menuBar().addMenu("&Plugins")
        self._toolbar = self._main.addToolBar("Plugins")
        central = QWidget()
        layout = QVBoxLayout(central)
        self._bar = QgsMessageBar()
        self._canvas = QgsMapCanvas()
        self._canvas.resize(400, 400)
        layout.addWidget(self._bar)
        layout.addWidget(self._canvas)
        self._main.setCentralWidget(central)
        self._submenus = {}

    def mainWindow(self):
        return self._main

    def addDockWidget(self, area, dock):
        self._main.addDockWidget(area, dock)

    def removeDockWidget(self, dock):
        self._main.removeDockWidget(dock)

    def mapCanvas(self):
        return self._canvas

    def messageBar(self):
        return self._bar

    def pluginMenu(self):
        return self._plugins_menu

    def addPluginToMenu(self, name, action):
        menu = self._submenus.get(name)
        if menu is None:
            menu = self._plugins_menu.addMenu(name)
            self._submenus[name] = menu
        menu.addAction(action)

    def removePluginMenu(self, name, action):
        menu = self._submenus.get(name)
        if menu is None:
            return
        menu.removeAction(action)
        if not menu.actions():
            self._plugins_menu.removeAction(menu.menuAction())
            del self._submenus[name]

    def addToolBarIcon(self, action):
        self._toolbar.addAction(action)

    def removeToolBarIcon(self, action):
        self._toolbar.removeAction(action)

    def plugin_menu_actions(self, name):
        menu = self._submenus.get(name)
        return list(menu.actions()) if menu else []

    def toolbar_actions(self):
        return list(self._toolbar.actions())

    def message_texts(self):
        """(title, text, level) of the items currently on the message bar."""
        out = []
        for item in self._bar.items():
            out.append((item.title(), item.text(), item.level()))
        return out
