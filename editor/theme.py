"""Follow the system's light or dark appearance.

Qt takes the palette from the platform theme (Windows 11, macOS, KDE, GNOME with its Qt platform
theme), and then there is nothing to do. Where the platform reports a dark preference but hands
Qt a light palette (plain X11/Wayland sessions without a Qt theme), the Fusion style with a dark
palette stands in, and it follows when the preference changes while Sandcastle runs.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication


def dark_palette() -> QPalette:
    p = QPalette()
    base, window, text, mid = QColor(30, 30, 32), QColor(45, 45, 48), QColor(230, 230, 230), QColor(120, 120, 120)
    for role, colour in ((QPalette.Window, window), (QPalette.WindowText, text), (QPalette.Base, base), (QPalette.AlternateBase, window),
                         (QPalette.ToolTipBase, window), (QPalette.ToolTipText, text), (QPalette.Text, text), (QPalette.Button, window),
                         (QPalette.ButtonText, text), (QPalette.BrightText, QColor(255, 80, 80)), (QPalette.Highlight, QColor(42, 130, 218)),
                         (QPalette.HighlightedText, QColor(255, 255, 255)), (QPalette.Link, QColor(90, 160, 255)),
                         (QPalette.PlaceholderText, mid)):
        p.setColor(role, colour)
    for role in (QPalette.WindowText, QPalette.Text, QPalette.ButtonText):
        p.setColor(QPalette.Disabled, role, mid)
    return p


def is_dark(palette: QPalette) -> bool:
    return palette.color(QPalette.Window).lightness() < 128


def apply_scheme(app: QApplication, scheme: Qt.ColorScheme) -> None:
    if scheme == Qt.ColorScheme.Unknown or (scheme == Qt.ColorScheme.Dark) == is_dark(app.palette()):
        return  # no preference known, or the platform's palette already matches it
    app.setStyle("Fusion")
    app.setPalette(dark_palette() if scheme == Qt.ColorScheme.Dark else app.style().standardPalette())


def follow_system_theme(app: QApplication) -> None:
    hints = app.styleHints()
    apply_scheme(app, hints.colorScheme())
    hints.colorSchemeChanged.connect(lambda scheme: apply_scheme(app, scheme))
