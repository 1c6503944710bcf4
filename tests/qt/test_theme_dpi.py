"""Light and dark appearance, and a window scaled for a high-DPI screen."""

import subprocess
import sys
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from editor.theme import apply_scheme, follow_system_theme, is_dark

ROOT = Path(__file__).resolve().parents[2]


def test_the_palette_follows_a_dark_and_a_light_preference(qtbot, window):
    app = QApplication.instance()
    original_style, original_palette = app.style().name(), app.palette()
    try:
        apply_scheme(app, Qt.ColorScheme.Dark)
        qtbot.wait(20)  # widgets hear of the new palette through the event loop
        assert is_dark(app.palette()) and is_dark(window.panel.palette())
        apply_scheme(app, Qt.ColorScheme.Light)
        assert not is_dark(app.palette())
        apply_scheme(app, Qt.ColorScheme.Unknown)  # no preference: leave it
        assert not is_dark(app.palette())
        follow_system_theme(app)  # connects to the platform's changes (nothing to assert offscreen but that it runs)
    finally:
        app.setStyle(original_style)
        app.setPalette(original_palette)


SCRIPT = """
import numpy as np
from PIL import Image
from PySide6.QtWidgets import QApplication
app = QApplication([])
import main
from tests.qt.conftest import paint_stroke
Image.fromarray(np.zeros((400, 400, 3), np.uint8)).save(r"{path}")
win = main.build([r"{path}"])
win.resize(1000, 700); win.show(); app.processEvents()
class Bot:
    pass
paint_stroke(Bot(), win, [(100, 100), (200, 100)])
m = win.document.mask
print(win.devicePixelRatioF(), int(m[100, 150]), int(m[100, 90]), int(m[300, 150]), win.canvas.viewport().grab().toImage().width())
win.shutdown()
"""


def test_at_twice_the_pixel_density_strokes_land_where_drawn(tmp_path):
    env = {"QT_QPA_PLATFORM": "offscreen", "QT_SCALE_FACTOR": "2", "XDG_CONFIG_HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path),
           "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    import os

    env = {**os.environ, **env}
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(path=tmp_path / "p.png")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    ratio, inside, left_of, elsewhere, grabbed = done.stdout.split()[-5:]
    assert float(ratio) == 2.0 and inside == "255" and elsewhere == "0"
    assert int(left_of) > 0  # the round brush (40 px) reaches 10 px before the stroke's start
    assert int(grabbed) > 1000  # the canvas is drawn with the screen's real pixels
