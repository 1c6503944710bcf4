"""Application start-up: the QApplication, logging, and the main window."""

from __future__ import annotations

import sys
from typing import Callable

from PySide6.QtWidgets import QApplication

from editor.settings import setup_logging
from editor.theme import follow_system_theme
from editor.window import MainWindow


def create_main_window(image: str | None = None, model: str | None = None, demo: bool = False) -> MainWindow:
    window = MainWindow(model=model, demo=demo)
    if not window.offer_restore() and image:
        window.files.open_path(image)  # a bad file shows its reason in the window instead of stopping the app
    return window


def run_app(argv: list[str], build: Callable[[list[str]], MainWindow]) -> int:
    setup_logging()
    app = QApplication.instance() or QApplication([sys.argv[0], *argv])
    app.setApplicationName("Sandcastle")
    app.setOrganizationName("Sandcastle")
    follow_system_theme(app)
    window = build(argv)
    window.show()
    return app.exec()
