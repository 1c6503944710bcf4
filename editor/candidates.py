"""Several versions of one edit, side by side: pick one (one undo step) or discard them all."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPushButton, QToolButton, QVBoxLayout

from editor.qtimage import to_qimage

THUMB = 220


class CandidatesDialog(QDialog):
    chosen = Signal(int)

    def __init__(self, candidates: tuple[np.ndarray, ...], seeds: list[int], parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("candidates")
        self.setWindowTitle("Choose a version")
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Click the version to keep. Each was made with its own seed."))
        row = QHBoxLayout()
        self.buttons = []
        for i, (image, seed) in enumerate(zip(candidates, seeds)):
            button = QToolButton(objectName=f"candidate{i}")
            pixmap = QPixmap.fromImage(to_qimage(image)).scaled(THUMB, THUMB, Qt.KeepAspectRatio, Qt.SmoothTransformation)
            button.setIcon(QIcon(pixmap))
            button.setIconSize(QSize(THUMB, THUMB))
            button.setText(f"Seed {seed}")
            button.setToolButtonStyle(Qt.ToolButtonTextUnderIcon)
            button.clicked.connect(lambda _=False, index=i: self.choose(index))
            row.addWidget(button)
            self.buttons.append(button)
        layout.addLayout(row)
        discard = QPushButton("Discard all", objectName="discardCandidates", clicked=self.reject)
        layout.addWidget(discard, alignment=Qt.AlignRight)

    def choose(self, index: int) -> None:
        self.chosen.emit(index)
        self.accept()
