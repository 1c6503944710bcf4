"""The Attributes panel: one slider per attribute (searchable), a reset, and a note on faces."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QGridLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QScrollArea, QSlider, QVBoxLayout, QWidget

RANGE = 100  # slider steps per unit of amount: ±0.5 is ±50


class AttributesBox(QGroupBox):
    """Emits `released` when a slider is let go (the moment to re-render) and `changed` on every move."""

    changed = Signal(str)  # the NAME=AMOUNT list
    released = Signal()

    def __init__(self, names: tuple[str, ...], parent: QWidget | None = None) -> None:
        super().__init__("Attributes", parent)
        self.setObjectName("attributesBox")
        layout = QVBoxLayout(self)
        note = QLabel("Works best on aligned, centred faces: drag a square around the face on the canvas, or use the whole picture.")
        note.setWordWrap(True)
        layout.addWidget(note)
        self.search = QLineEdit(objectName="attributeSearch", placeholderText="Search attributes")
        self.search.textChanged.connect(self._filter)
        reset = QPushButton("Reset", objectName="resetAttributes", clicked=self.reset)
        top = QHBoxLayout()
        top.addWidget(self.search, 1)
        top.addWidget(reset)
        layout.addLayout(top)
        inner = QWidget()
        grid = QGridLayout(inner)
        self.sliders: dict[str, QSlider] = {}
        self.rows: dict[str, tuple[QLabel, QSlider, QLabel]] = {}
        for row, name in enumerate(names):
            label = QLabel(name.replace("_", " "))
            slider = QSlider(Qt.Horizontal, objectName=f"attribute_{name}")
            slider.setRange(-RANGE, RANGE)
            slider.setPageStep(10)
            value = QLabel("0.00")
            value.setMinimumWidth(36)
            slider.valueChanged.connect(lambda v, lab=value: lab.setText(f"{v / RANGE:+.2f}" if v else "0.00"))
            slider.valueChanged.connect(lambda _: self.changed.emit(self.text()))
            slider.sliderReleased.connect(self.released)
            grid.addWidget(label, row, 0)
            grid.addWidget(slider, row, 1)
            grid.addWidget(value, row, 2)
            self.sliders[name] = slider
            self.rows[name] = (label, slider, value)
        scroll = QScrollArea()
        scroll.setWidget(inner)
        scroll.setWidgetResizable(True)
        scroll.setMinimumHeight(220)
        layout.addWidget(scroll)

    def text(self) -> str:
        return ",".join(f"{name}={s.value() / RANGE:g}" for name, s in self.sliders.items() if s.value())

    def reset(self) -> None:
        for slider in self.sliders.values():
            slider.blockSignals(True)
            slider.setValue(0)
            slider.blockSignals(False)
        for _, _, value in self.rows.values():
            value.setText("0.00")
        self.changed.emit("")

    def _filter(self, text: str) -> None:
        needle = text.strip().lower().replace(" ", "_")
        for name, widgets in self.rows.items():
            for w in widgets:
                w.setVisible(needle in name.lower())
