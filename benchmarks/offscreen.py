"""The real window for benchmarks, offscreen, with its settings and autosave in a private folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def private_folder(prefix: str) -> Path:
    """A fresh folder that also takes the app's settings and data (the person's own stay untouched)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.setdefault("XDG_DATA_HOME", str(folder))
    os.environ.setdefault("XDG_CONFIG_HOME", str(folder))
    return folder


def open_window(picture: np.ndarray | Path, folder: Path, *args: str, size: tuple[int, int] = (1400, 900)):
    """(QApplication, MainWindow) built by main.build with `picture` (an array is saved into `folder` first) and `args`."""
    from PIL import Image
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    import main

    if isinstance(picture, np.ndarray):
        path = folder / "picture.png"
        Image.fromarray(picture).save(path, compress_level=1)
        picture = path
    win = main.build([str(picture), *args])
    win.files.confirm_discard = lambda: True  # benchmarks never stop to ask about saving
    win.resize(*size)
    win.show()
    app.processEvents()
    return app, win
