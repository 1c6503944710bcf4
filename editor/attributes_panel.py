"""The Attributes panel: one slider per attribute (searchable), a reset, a note on faces, and the
person's own sliders with the dialog that collects examples for a new one."""

from __future__ import annotations

from typing import Callable

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFileDialog, QGridLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QListWidget,
                               QListWidgetItem, QMessageBox, QPushButton, QScrollArea, QSlider, QToolButton, QVBoxLayout, QWidget)

from editor.qtimage import to_qimage
from engines.api import SandcastleError
from engines.services import load_image

RANGE = 100  # slider steps per unit of amount: ±0.5 is ±50


class AttributesBox(QGroupBox):
    """Emits `released` when a slider is let go (the moment to re-render) and `changed` on every move."""

    changed = Signal(str)  # the NAME=AMOUNT list
    released = Signal()
    newSliderRequested = Signal()
    deleteRequested = Signal(str)  # an own slider's name

    def __init__(self, names: tuple[str, ...], own: tuple[str, ...] = (), parent: QWidget | None = None) -> None:
        super().__init__("Attributes", parent)
        self.setObjectName("attributesBox")
        layout = QVBoxLayout(self)
        note = QLabel("The face is found and aligned as the model was trained; with several faces, drag a square around the one "
                      "to edit. Move a slider and let go to render.")
        note.setWordWrap(True)
        layout.addWidget(note)
        self.search = QLineEdit(objectName="attributeSearch", placeholderText="Search attributes")
        self.search.textChanged.connect(self._filter)
        reset = QPushButton("Reset", objectName="resetAttributes", clicked=self.reset)
        new = QPushButton("New…", objectName="newSlider", clicked=lambda: self.newSliderRequested.emit())
        new.setToolTip("A slider of your own: mark a few faces that have a trait and a few that lack it, and Sandcastle fits it.")
        top = QHBoxLayout()
        top.addWidget(self.search, 1)
        top.addWidget(reset)
        top.addWidget(new)
        layout.addLayout(top)
        inner = QWidget()
        self.grid = QGridLayout(inner)
        self.sliders: dict[str, QSlider] = {}
        self.rows: dict[str, tuple[QWidget, ...]] = {}
        for name in names:
            self._add_row(name)
        self.own_heading = QLabel("<b>Your sliders</b>")
        self.grid.addWidget(self.own_heading, self.grid.rowCount(), 0, 1, 4)
        self.own: list[str] = []
        for name in own:
            self.add_own(name)
        self.own_heading.setVisible(bool(self.own))
        scroll = QScrollArea()
        scroll.setWidget(inner)
        scroll.setWidgetResizable(True)
        scroll.setMinimumHeight(220)
        layout.addWidget(scroll)

    def _add_row(self, name: str, own: bool = False) -> None:
        row = self.grid.rowCount()
        label = QLabel(name.replace("_", " "))
        slider = QSlider(Qt.Horizontal, objectName=f"attribute_{name}")
        slider.setRange(-RANGE, RANGE)
        slider.setPageStep(10)
        slider.setAccessibleName(name.replace("_", " "))
        value = QLabel("0.00")
        value.setMinimumWidth(36)
        slider.valueChanged.connect(lambda v, lab=value: lab.setText(f"{v / RANGE:+.2f}" if v else "0.00"))
        slider.valueChanged.connect(lambda _: self.changed.emit(self.text()))
        slider.sliderReleased.connect(self.released)
        widgets: tuple[QWidget, ...] = (label, slider, value)
        if own:
            delete = QToolButton(objectName=f"deleteSlider_{name}", text="✕", toolTip=f"Delete your slider {name}")
            delete.clicked.connect(lambda _=False: self.deleteRequested.emit(name))
            self.grid.addWidget(delete, row, 3)
            widgets += (delete,)
        for column, widget in enumerate(widgets[:3]):
            self.grid.addWidget(widget, row, column)
        self.sliders[name] = slider
        self.rows[name] = widgets

    def add_own(self, name: str) -> None:
        """Show an own slider (a new one, or one fitted again under the same name)."""
        if name not in self.own:
            self.own.append(name)
            self._add_row(name, own=True)
        self.own_heading.setVisible(True)

    def remove_own(self, name: str) -> None:
        if name in self.own:
            self.own.remove(name)
            self.sliders.pop(name)
            for widget in self.rows.pop(name):
                widget.deleteLater()
            self.changed.emit(self.text())
        self.own_heading.setVisible(bool(self.own))

    def text(self) -> str:
        return ",".join(f"{name}={s.value() / RANGE:g}" for name, s in self.sliders.items() if s.value())

    def reset(self) -> None:
        for slider in self.sliders.values():
            slider.blockSignals(True)
            slider.setValue(0)
            slider.blockSignals(False)
        for widgets in self.rows.values():
            widgets[2].setText("0.00")
        self.changed.emit("")

    def _filter(self, text: str) -> None:
        needle = text.strip().lower().replace(" ", "_")
        for name, widgets in self.rows.items():
            for w in widgets:
                w.setVisible(needle in name.lower())
        self.own_heading.setVisible(any(needle in name.lower() for name in self.own))


THUMB = 72


class NewSliderDialog(QDialog):
    """Collects a name and example faces (pictures cropped to the face) that have or lack a trait.
    `current_face()` gives the face marked on the canvas, or None. The window keeps the dialog
    between tries, so a failed fit loses no examples."""

    def __init__(self, current_face: Callable[[], np.ndarray | None], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("newSliderDialog")
        self.setWindowTitle("New slider from examples")
        self.setMinimumWidth(560)
        self.current_face = current_face
        self.examples: dict[str, list[np.ndarray]] = {"has": [], "lacks": []}
        layout = QVBoxLayout(self)
        intro = QLabel("Name the trait, then add faces that have it and faces that lack it (three or more of each works better than one). "
                       "Add this face takes the square marked on the canvas; Add pictures… takes whole pictures, so crop them to the face.")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.name = QLineEdit(objectName="sliderName", placeholderText="Trait name, e.g. Freckles")
        layout.addWidget(self.name)
        self.lists: dict[str, QListWidget] = {}
        for key, title in (("has", "Faces that have it"), ("lacks", "Faces that lack it")):
            box = QGroupBox(title)
            column = QVBoxLayout(box)
            faces = QListWidget(objectName=f"{key}Examples")
            faces.setViewMode(QListWidget.IconMode)
            faces.setIconSize(QSize(THUMB, THUMB))
            faces.setMinimumHeight(THUMB + 36)
            faces.setSelectionMode(QListWidget.ExtendedSelection)
            column.addWidget(faces)
            buttons = QHBoxLayout()
            for text, slot, name in (("Add this face", self.add_current, "AddCurrent"), ("Add pictures…", self.add_files, "AddFiles"),
                                     ("Remove", self.remove_selected, "Remove")):
                buttons.addWidget(QPushButton(text, objectName=f"{key}{name}", clicked=lambda _=False, k=key, f=slot: f(k)))
            column.addLayout(buttons)
            layout.addWidget(box)
            self.lists[key] = faces
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.buttons.button(QDialogButtonBox.Ok).setText("Fit and save")
        self.buttons.accepted.connect(self._accept_if_ready)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)

    def add(self, key: str, face: np.ndarray) -> None:
        item = QListWidgetItem(QIcon(QPixmap.fromImage(to_qimage(face)).scaled(
            THUMB, THUMB, Qt.KeepAspectRatio, Qt.SmoothTransformation)), "")
        self.lists[key].addItem(item)
        self.examples[key].append(face)

    def add_current(self, key: str) -> None:
        face = self.current_face()
        if face is None:
            QMessageBox.information(self, "No picture", "Open a picture and drag a square around the face first.")
            return
        self.add(key, face)

    def add_files(self, key: str) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Add faces", "", "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff)")
        for path in paths:
            try:
                self.add(key, load_image(path))
            except SandcastleError as exc:
                QMessageBox.warning(self, "Could not add a picture", str(exc))

    def remove_selected(self, key: str) -> None:
        faces = self.lists[key]
        for row in sorted((faces.row(item) for item in faces.selectedItems()), reverse=True):
            faces.takeItem(row)
            del self.examples[key][row]

    def _accept_if_ready(self) -> None:
        if not self.name.text().strip():
            QMessageBox.information(self, "Name the slider", "Give the trait a name first.")
        elif not self.examples["has"] or not self.examples["lacks"]:
            QMessageBox.information(self, "More examples", "Add at least one face that has the trait and one that lacks it.")
        else:
            self.accept()
