"""Run by tests/qt/test_real_desktop.py inside Xvfb with Qt's real xcb platform (a stock Linux desktop
at 1366×768): opens the window in demo mode with a photo, checks what a person sees and presses the
keys a person presses, and prints one JSON line of findings. Offscreen tests cannot see these: the
platform's own key bindings, the window manager's screen size, shortcut clashes.

    python tests/qt/xcb_probe.py PHOTO SCREENSHOT_FOLDER
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PySide6.QtCore import QEventLoop, QObject, Qt, QTimer
from PySide6.QtGui import QGuiApplication, QKeySequence
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def wait(milliseconds: int) -> None:
    """Let the event loop run: QTest.qWait keeps Python's lock while it sleeps, which starves the worker
    thread that loads the engines (a real event loop lets it go)."""
    loop = QEventLoop()
    QTimer.singleShot(milliseconds, loop.quit)
    loop.exec()


class Messages(QObject):
    """Qt's own warnings (an ambiguous shortcut is only ever reported there)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def __call__(self, mode, context, text) -> None:
        self.lines.append(text)


def main() -> None:
    photo, shots = sys.argv[1], Path(sys.argv[2])
    from PySide6.QtCore import qInstallMessageHandler

    messages = Messages()
    qInstallMessageHandler(messages)
    app = QApplication([sys.argv[0]])
    import main as entry

    win = entry.build([photo, "--demo"])
    win.show()
    screen = QGuiApplication.primaryScreen().availableGeometry()
    found: dict = {"platform": QGuiApplication.platformName(), "screen": [screen.width(), screen.height()], "tasks": {}}

    def fits(widget) -> bool:
        top_left = widget.mapToGlobal(widget.rect().topLeft())
        bottom_right = widget.mapToGlobal(widget.rect().bottomRight())
        return widget.isVisible() and screen.contains(top_left) and screen.contains(bottom_right)

    def check_tasks() -> None:
        panel = win.panel
        for index in range(panel.task.count()):
            panel.task.setCurrentIndex(index)
            task = panel.task.currentData()
            deadline = 1200
            while (panel.spec is None or panel.spec.id != task) and deadline:  # the engine's settings arrive from the worker
                wait(50)
                deadline -= 1
            wait(200)
            frame = win.frameGeometry()
            found["tasks"][task] = {
                "window": [frame.width(), frame.height()],
                "generate_on_screen": fits(panel.generate), "cancel_on_screen": fits(panel.cancel), "progress_on_screen": fits(panel.progress),
                "window_on_screen": screen.contains(frame.topLeft()) and frame.bottom() <= screen.bottom() + 1,
            }
            win.grab().save(str(shots / f"{task}.png"))
        panel.task.setCurrentIndex(panel.task.findData("inpaint"))
        QTimer.singleShot(0, check_keys)

    def check_keys() -> None:
        win.activateWindow()
        win.canvas.setFocus()
        wait(100)
        stack = win.document.undo_stack
        win.document.invert_mask()  # one undo step to walk back and forth
        keys = {}
        QTest.keyClick(win.canvas, Qt.Key_Z, Qt.ControlModifier)
        keys["ctrl+z undoes"] = stack.index() == 0
        QTest.keyClick(win.canvas, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
        keys["ctrl+shift+z redoes"] = stack.index() == 1
        stack.undo()
        QTest.keyClick(win.canvas, Qt.Key_Y, Qt.ControlModifier)
        keys["ctrl+y redoes"] = stack.index() == 1
        # Tool keys from wherever the focus is, except a text field.
        win.panel.task.setFocus()
        wait(50)
        QTest.keyClick(win.panel.task, Qt.Key_E)
        keys["E from the task list picks the eraser"] = win.menu_actions.eraser.isChecked()
        size = win.canvas.brush_size
        QTest.keyClick(win.panel.generate, Qt.Key_BracketRight)
        keys["] from the Generate button enlarges the brush"] = win.canvas.brush_size > size
        win.panel.prompt.setFocus()
        wait(50)
        QTest.keyClick(win.panel.prompt, Qt.Key_B)
        keys["B in the prompt is a letter"] = win.panel.prompt.toPlainText().endswith("b") and win.menu_actions.eraser.isChecked()
        found["keys"] = keys
        found["redo_keys"] = [s.toString(QKeySequence.PortableText) for s in win.menu_actions.redo.shortcuts()]
        shortcuts: dict[str, list[str]] = {}
        for action in win.findChildren(type(win.menu_actions.redo)):
            for sequence in action.shortcuts():
                shortcuts.setdefault(sequence.toString(QKeySequence.PortableText), []).append(action.text())
        found["clashes"] = {key: names for key, names in shortcuts.items() if len(names) > 1}
        found["ambiguous"] = [line for line in messages.lines if "Ambiguous" in line]
        print(json.dumps(found), flush=True)
        win.document.undo_stack.setClean()  # nothing to save: quitting must not ask
        app.quit()

    QTimer.singleShot(500, check_tasks)
    app.exec()
    win.shutdown()


if __name__ == "__main__":
    main()
