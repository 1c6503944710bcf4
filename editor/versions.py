"""Several versions of one edit in a strip of thumbnails under the canvas: click one to see it on the
canvas, Accept keeps it (one undo step), Discard all drops them. Nothing touches the picture before Accept."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget

from editor.qtimage import to_qimage

THUMB = 120


class VersionStrip(QWidget):
    chosen = Signal(int)  # shown on the canvas
    accepted = Signal(int)
    discarded = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("versionStrip")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.thumbs = QListWidget(objectName="versionThumbs")
        self.thumbs.setViewMode(QListWidget.IconMode)
        self.thumbs.setFlow(QListWidget.LeftToRight)
        self.thumbs.setWrapping(False)
        self.thumbs.setIconSize(QSize(THUMB, THUMB))
        self.thumbs.setFixedHeight(THUMB + 44)
        self.thumbs.setMovement(QListWidget.Static)
        self.thumbs.currentRowChanged.connect(lambda row: row >= 0 and self.chosen.emit(row))
        self.thumbs.itemActivated.connect(lambda item: self.accept_current())  # Enter or a double click keeps it
        layout.addWidget(self.thumbs, 1)
        column = QVBoxLayout()
        self.label = QLabel()
        self.accept_button = QPushButton("Accept", objectName="acceptVersion", clicked=self.accept_current)
        self.accept_button.setToolTip("Keep the version shown (Enter)")
        self.discard_button = QPushButton("Discard all", objectName="discardVersions", clicked=self.discard)
        column.addWidget(self.label)
        column.addWidget(self.accept_button)
        column.addWidget(self.discard_button)
        column.addStretch(1)
        layout.addLayout(column)
        self.clear()

    def add(self, thumbnail: np.ndarray, text: str) -> None:
        pixmap = QPixmap.fromImage(to_qimage(thumbnail)).scaled(THUMB, THUMB, Qt.KeepAspectRatio, Qt.SmoothTransformation)
        item = QListWidgetItem(QIcon(pixmap), text)
        item.setToolTip(f"{text}: the same seed and settings make this version again (lock the seed beside Generate)")
        self.thumbs.addItem(item)
        self.label.setText(f"{self.thumbs.count()} versions")
        self.accept_button.setEnabled(self.thumbs.currentRow() >= 0)
        self.setVisible(True)
        if self.thumbs.currentRow() < 0:
            self.thumbs.setCurrentRow(0)
            self.accept_button.setEnabled(True)

    def count(self) -> int:
        return self.thumbs.count()

    def accept_current(self) -> None:
        if self.thumbs.currentRow() >= 0:
            self.accepted.emit(self.thumbs.currentRow())

    def discard(self) -> None:
        self.discarded.emit()

    def clear(self) -> None:
        self.thumbs.blockSignals(True)
        self.thumbs.clear()
        self.thumbs.blockSignals(False)
        self.accept_button.setEnabled(False)
        self.setVisible(False)
