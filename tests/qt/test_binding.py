"""Guards against a broken Qt binding: PySide6 6.12.0 on Python 3.11 releases a reference to None
(or True/False) on every call of a method that returns nothing, so a long editing session ends in
'Fatal Python error: none_dealloc'. A binding like that must fail here, not in a person's session."""

import sys

from PySide6.QtCore import QObject, QPointF, Signal
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QApplication, QProgressBar, QPushButton


class Emitter(QObject):
    changed = Signal(int)


def test_void_calls_do_not_leak_or_steal_references(qapp):
    button, bar, emitter = QPushButton(), QProgressBar(), Emitter()
    emitter.changed.connect(bar.setValue)
    image = QImage(8, 8, QImage.Format_ARGB32)

    def paint():
        painter = QPainter(image)
        painter.drawLine(QPointF(0, 0), QPointF(5, 5))
        painter.end()

    calls = {
        "processEvents": QApplication.processEvents,
        "setEnabled": lambda: button.setEnabled(True),
        "isEnabled": button.isEnabled,
        "emit": lambda: emitter.changed.emit(3),
        "setFormat": lambda: bar.setFormat("Step"),
        "paint": paint,
    }
    for name, call in calls.items():
        for _ in range(10):
            call()  # warm-up: caches and first-call allocations
        before = sys.getrefcount(None), sys.getrefcount(True), sys.getrefcount(False)
        for _ in range(2000):
            call()
        after = sys.getrefcount(None), sys.getrefcount(True), sys.getrefcount(False)
        drift = [a - b for a, b in zip(after, before)]
        assert all(abs(d) < 100 for d in drift), f"{name}: None/True/False reference counts moved by {drift}"
