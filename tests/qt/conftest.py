import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch, tmp_path):
    """Each test starts with no settings file and an empty data folder of its own."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))


def open_window(qtbot, tmp_path, photo, *args, steps=4):
    """The real main window built by main.build with `args`, a picture loaded and the engine ready."""
    import main

    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    win = main.build([str(path), *args])
    win.files.confirm_discard = lambda: True  # no modal question when the test closes the window
    qtbot.addWidget(win)
    win.resize(1100, 760)
    win.show()
    qtbot.waitUntil(lambda: win.panel.generate.isEnabled(), timeout=60000)
    win.panel.steps.setValue(steps)
    return win


@pytest.fixture
def window(qtbot, model_dir, tmp_path, photo):
    """The window with the tiny inpainting model given on the command line."""
    win = open_window(qtbot, tmp_path, photo, "--model", str(model_dir("inpaint")))
    yield win
    win.shutdown()


def pixmap_array(pixmap):
    from editor.qtimage import from_qimage

    return from_qimage(pixmap.toImage())


def paint_stroke(qtbot, win, points):
    """Drag with the left button across `points` (picture coordinates) on the canvas."""
    from PySide6.QtCore import Qt
    from PySide6.QtTest import QTest

    view = win.canvas
    vp = view.viewport()
    at = [view.mapFromScene(x, y) for x, y in points]
    QTest.mousePress(vp, Qt.LeftButton, Qt.NoModifier, at[0])
    for p in at[1:]:
        QTest.mouseMove(vp, p)
    QTest.mouseRelease(vp, Qt.LeftButton, Qt.NoModifier, at[-1])


@pytest.fixture
def original(photo):
    return np.array(photo)
