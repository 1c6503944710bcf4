"""Screenshots for the README, taken from the real window with the demo models.

    Xvfb :99 & DISPLAY=:99 python tools/readme_screenshots.py edit [inpaint]

Each is grabbed in the middle of a generation, so the preview is forming on the canvas. The demo
models have random weights: their pictures are noise, the interface around them is what is shown.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "resources" / "screenshots"


def pump(app, seconds: float) -> None:
    end = time.time() + seconds
    while time.time() < end:
        app.processEvents()
        time.sleep(0.01)


def shoot(task: str) -> None:
    from PIL import Image
    from PySide6.QtWidgets import QApplication
    from skimage import data

    import main

    app = QApplication.instance() or QApplication([])
    picture = Path(tempfile.mkdtemp()) / "astronaut.png"
    Image.fromarray(data.astronaut()).save(picture)
    win = main.build([str(picture), "--demo"])
    win.files.confirm_discard = lambda: True
    win.resize(1400, 900)
    win.show()
    win.panel.task.setCurrentIndex(win.panel.task.findData(task))
    deadline = time.time() + 120
    while not (win.panel.generate.isEnabled() and win.panel.spec and win.panel.spec.id == task) and time.time() < deadline:
        pump(app, 0.1)
    from tests.qt.conftest import paint_stroke

    if task == "edit":
        win.panel.prompt.setPlainText("make it a winter evening")
        win.menu_actions.rectangle.trigger()
        paint_stroke(None, win, [(0, 0), (512, 220)])  # the sky and the rocket only
    else:
        win.panel.prompt.setPlainText("a small red door")
        paint_stroke(None, win, [(320, 170), (420, 170), (420, 260)])
    win.panel.steps.setValue(12)
    grabbed = []
    win.generation.preview.connect(lambda job, image, step: step.step >= 6 and not grabbed and grabbed.append(win.grab()))
    win.generation.generate()
    while win.generation.busy and time.time() < deadline:
        pump(app, 0.05)
    grabbed[0].save(str(OUT / f"{task}.png"))
    win.shutdown()
    print("wrote", OUT / f"{task}.png")


if __name__ == "__main__":
    os.environ.setdefault("XDG_DATA_HOME", tempfile.mkdtemp())
    os.environ.setdefault("XDG_CONFIG_HOME", tempfile.mkdtemp())
    for name in sys.argv[1:] or ["edit"]:
        shoot(name)
