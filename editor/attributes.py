"""The Attributes task in the window: the sliders box in the panel, the face square on the canvas,
re-rendering when a slider is let go, and the person's own sliders (fit from examples, delete).

The sliders write the engine's `attributes` parameter (NAME=AMOUNT, …); the square on the canvas
writes `region_x`, `region_y` and `region_size`. Fitting a slider runs through the generation
controller, on the engines' thread.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtWidgets import QMessageBox

from editor.attributes_panel import AttributesBox, NewSliderDialog
from engines.api import SandcastleError
from engines.services import delete_own_slider, own_sliders

if TYPE_CHECKING:
    from editor.window import MainWindow


class AttributesTask:
    def __init__(self, window: "MainWindow") -> None:
        self.window, self.panel, self.document, self.generation = window, window.panel, window.document, window.generation
        names = tuple(resources.files("resources").joinpath("celeba_attributes.txt").read_text().split())  # no engine import needed
        self.box = AttributesBox(names, self.own_sliders())
        self.box.setVisible(False)
        self.dialog: NewSliderDialog | None = None  # kept between tries, so a failed fit loses no examples
        self.box.changed.connect(self._to_panel)
        self.box.released.connect(self.rerender)
        self.box.newSliderRequested.connect(self.new_slider)
        self.box.deleteRequested.connect(self.delete_slider)
        self.panel.settings_layout.insertWidget(self.panel.settings_layout.indexOf(self.panel.engine_box), self.box)
        window.canvas.regionChosen.connect(self._region_from_canvas)
        self.generation.sliderFitted.connect(self._on_fitted)

    def show_for(self, task: str) -> None:
        self.box.setVisible(task == "attributes")

    def engine_shown(self) -> None:
        """The panel has built the engine's controls: follow the own-sliders folder field."""
        folder = self.panel.param_widgets.get("directions_folder")
        if folder is not None:
            folder.editingFinished.connect(self.refresh_own_sliders)
            self.refresh_own_sliders()

    def _to_panel(self, text: str) -> None:
        widget = self.panel.param_widgets.get("attributes")
        if widget is not None:
            widget.setText(text)

    def _region_from_canvas(self, x: int, y: int, size: int) -> None:
        for name, value in (("region_x", x), ("region_y", y), ("region_size", size)):
            widget = self.panel.param_widgets.get(name)
            if widget is not None:
                widget.setValue(value)

    def rerender(self) -> None:
        """Let go of a slider: render again (the face's codes are cached, so this only decodes)."""
        if not self.generation.busy and self.panel.generate.isEnabled():
            self.generation.generate()

    # ---- own sliders --------------------------------------------------------------------------

    def folder(self) -> str:
        return str(self.document.task_params("attributes").get("directions_folder", "")).strip()

    def own_sliders(self) -> tuple[str, ...]:
        try:
            return own_sliders(self.folder())
        except SandcastleError:
            return ()

    def refresh_own_sliders(self) -> None:
        """Show the sliders saved in the own-sliders folder (it may have been changed in the panel)."""
        names = self.own_sliders()
        for name in [n for n in self.box.own if n not in names]:
            self.box.remove_own(name)
        for name in names:
            self.box.add_own(name)

    def current_face(self) -> np.ndarray | None:
        """The face square marked on the canvas (the whole picture when none is), cropped; None without a picture."""
        if not self.document.has_image:
            return None
        p = self.document.task_params("attributes")
        size, x, y = p.get("region_size", 0), p.get("region_x", 0), p.get("region_y", 0)
        image = self.document.image
        return image[y : y + size, x : x + size].copy() if size else image.copy()

    def new_slider(self) -> None:
        """Collect examples for an own slider; on OK, fit it on the worker thread."""
        if self.dialog is None:
            self.dialog = NewSliderDialog(self.current_face, self.window)
            self.dialog.accepted.connect(self.fit)
        self.dialog.open()

    def fit(self) -> None:
        examples = self.dialog.examples
        self.generation.fit_slider(self.dialog.name.text().strip(), examples["has"], examples["lacks"])

    def _on_fitted(self, name: str) -> None:
        self.dialog.deleteLater()
        self.dialog = None  # the next slider starts from empty lists
        self.box.add_own(name)

    def delete_slider(self, name: str) -> None:
        if QMessageBox.question(self.window, "Delete slider", f"Delete your slider {name}? This cannot be undone.") != QMessageBox.Yes:
            return
        try:
            delete_own_slider(name, self.folder())
        except (SandcastleError, OSError) as exc:
            self.window.show_error(f"The slider could not be deleted ({exc}).")
            return
        self.box.remove_own(name)
