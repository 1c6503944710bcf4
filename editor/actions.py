"""Menus, the tool bar and their shortcuts, kept apart from the window, which only lays them out.

Every action is a QAction with its shortcut in its tooltip; the mask tools, the hint colour and
the brush controls live on the tool bar. Triggering an action calls the document, the canvas, the
file handling or the generation controller: no action keeps state of its own.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QAction, QColor, QIcon, QKeySequence, QPixmap
from PySide6.QtWidgets import (QAbstractSpinBox, QApplication, QColorDialog, QDockWidget, QInputDialog, QLabel, QLineEdit, QPlainTextEdit,
                               QSpinBox, QTextEdit, QToolBar, QToolButton, QUndoView)

from editor.canvas import MAX_BRUSH, MIN_BRUSH

if TYPE_CHECKING:
    from editor.window import MainWindow

log = logging.getLogger(__name__)


def unique_sequences(sequences: list[QKeySequence]) -> list[QKeySequence]:
    """Each key sequence once: the platform's standard keys often repeat one listed explicitly (Redo is
    Ctrl+Shift+Z on X11), and an action holding a sequence twice makes Qt call the key ambiguous and
    ignore it."""
    seen, kept = set(), []
    for sequence in sequences:
        text = sequence.toString(QKeySequence.PortableText)
        if text and text not in seen:
            seen.add(text)
            kept.append(sequence)
    return kept


def typing_into(widget) -> bool:
    """Whether keys go into a text field (where B is a letter, not the brush)."""
    return isinstance(widget, (QLineEdit, QPlainTextEdit, QTextEdit, QAbstractSpinBox))


class HoldToCompare(QObject):
    """\\ held anywhere in the window (except while typing) shows the picture before the last result, as
    it does on the canvas: a key that acts while held cannot be a QAction, which fires once."""

    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)
        self.window = window
        QApplication.instance().installEventFilter(self)

    def eventFilter(self, watched, event) -> bool:
        kind = event.type()
        if kind in (QEvent.KeyPress, QEvent.KeyRelease) and event.key() == Qt.Key_Backslash and not event.isAutoRepeat():
            if self.window.isActiveWindow() and not typing_into(QApplication.focusWidget()):
                self.window.canvas.set_comparing(kind == QEvent.KeyPress)
                return True
        return False


class Actions:
    def __init__(self, window: "MainWindow") -> None:
        self.window = window
        self.canvas, self.document, self.settings = window.canvas, window.document, window.settings
        self._build_menus()
        self._build_tools()
        self.hold_to_compare = HoldToCompare(window)

    def action(self, text: str, slot, shortcut=None, tip: str = "") -> QAction:
        action = QAction(text, self.window)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.setToolTip(f"{tip or text.replace('&', '')} ({QKeySequence(shortcut).toString(QKeySequence.NativeText)})" if shortcut else tip)
        action.triggered.connect(slot)
        self.window.addAction(action)
        return action

    def visibility(self, text: str, show, changed, shortcut: str, tip: str) -> QAction:
        """A checked menu entry that shows or hides a layer and follows it when something else does."""
        action = self.action(text, show, shortcut, tip)
        action.setCheckable(True)
        action.setChecked(True)
        changed.connect(action.setChecked)
        return action

    def _build_menus(self) -> None:
        w, files, generation, canvas, document = self.window, self.window.files, self.window.generation, self.canvas, self.document
        stack = document.undo_stack
        file_menu = w.menuBar().addMenu("&File")
        file_menu.addAction(self.action("&Open…", files.open_dialog, QKeySequence.Open))
        file_menu.addAction(self.action("&Save", files.save, QKeySequence.Save))
        file_menu.addAction(self.action("Save &As…", files.save_as, QKeySequence.SaveAs))
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(lambda: files.fill_recent_menu(self.recent_menu))
        file_menu.addSeparator()
        file_menu.addAction(self.action("&Load mask…", files.load_mask_dialog, tip="Load a mask picture (white = repaint) of the same size"))
        file_menu.addAction(self.action("Save &mask…", files.save_mask_dialog, tip="Save the mask as a black-and-white PNG"))
        file_menu.addSeparator()
        file_menu.addAction(self.action("&Quit", w.close, QKeySequence.Quit))

        edit_menu = w.menuBar().addMenu("&Edit")
        self.undo = stack.createUndoAction(w, "&Undo")  # the menu names the step: "Undo Paint mask"
        self.undo.setShortcut(QKeySequence.Undo)
        self.redo = stack.createRedoAction(w, "&Redo")
        self.redo.setShortcuts(unique_sequences([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y"), *QKeySequence.keyBindings(QKeySequence.Redo)]))
        edit_menu.addAction(self.undo)
        edit_menu.addAction(self.redo)
        # The toolbar keeps short, fixed labels; its tooltips name the step.
        self.undo_button = QAction("Undo", w, triggered=stack.undo, enabled=False)
        self.redo_button = QAction("Redo", w, triggered=stack.redo, enabled=False)
        stack.canUndoChanged.connect(self.undo_button.setEnabled)
        stack.canRedoChanged.connect(self.redo_button.setEnabled)
        stack.undoTextChanged.connect(lambda text: self.undo_button.setToolTip(f"Undo {text} (Ctrl+Z)"))
        stack.redoTextChanged.connect(lambda text: self.redo_button.setToolTip(f"Redo {text} (Ctrl+Shift+Z)"))
        edit_menu.addSeparator()
        edit_menu.addAction(self.action("&Copy picture", files.copy_picture, QKeySequence.Copy, "Copy the picture to the clipboard"))
        edit_menu.addAction(self.action("&Paste picture", files.paste_picture, QKeySequence.Paste, "Open the picture on the clipboard"))
        edit_menu.addSeparator()
        edit_menu.addAction(self.action("&Clear mask", document.clear_mask, "Ctrl+Shift+X"))
        edit_menu.addAction(self.action("&Invert mask", document.invert_mask, "Ctrl+I"))
        edit_menu.addAction(self.action("&Grow mask…", lambda: self.grow_mask(1), "Ctrl+Shift+G", "Grow the mask by some pixels"))
        edit_menu.addAction(self.action("Shrin&k mask…", lambda: self.grow_mask(-1), "Ctrl+Shift+K", "Shrink the mask by some pixels"))
        edit_menu.addAction(self.action("Clear colour &hints", document.clear_hints))
        self.generate = self.action("&Generate", generation.generate, "Ctrl+Return")
        self.cancel = self.action("Ca&ncel generation", generation.cancel, "Esc")
        edit_menu.addSeparator()
        edit_menu.addAction(self.generate)
        edit_menu.addAction(self.cancel)

        tools_menu = w.menuBar().addMenu("&Tools")
        tools_menu.addAction(self.action("&Models…", w.open_models, "Ctrl+Shift+M", "Download, add and choose models"))
        tools_menu.addAction(self.action("&Settings…", w.open_settings, QKeySequence.Preferences, "Device, precision, memory"))

        view_menu = w.menuBar().addMenu("&View")
        view_menu.addAction(self.action("Zoom &in", lambda: canvas.zoom_by(1), QKeySequence.ZoomIn))
        view_menu.addAction(self.action("Zoom &out", lambda: canvas.zoom_by(-1), QKeySequence.ZoomOut))
        view_menu.addAction(self.action("&Fit to window", canvas.fit, "Ctrl+0"))
        view_menu.addAction(self.action("&Actual size (100%)", canvas.actual_size, "Ctrl+1"))
        view_menu.addSeparator()
        self.show_mask = self.visibility("Show &mask", canvas.set_mask_visible, canvas.maskVisibleChanged, "M", "Show or hide the mask overlay")
        view_menu.addAction(self.show_mask)
        view_menu.addAction(self.action("Mask &colour…", self.choose_mask_colour, tip="The colour of the mask overlay"))
        self.show_hints = self.visibility("Show colour &hints", canvas.set_hints_visible, canvas.hintsVisibleChanged, "Shift+H",
                                          "Show or hide the colour hints (Colorize)")
        view_menu.addAction(self.show_hints)
        view_menu.addAction(self.action("Hint &opacity…", self.choose_hint_opacity, tip="How strongly the colour hints cover the picture"))
        self.compare = self.action("Compare with &before", canvas.set_comparing,
                                   tip="Show the picture without the version shown or the last result (or hold \\ on the canvas)")
        self.compare.setCheckable(True)
        canvas.comparingChanged.connect(self.compare.setChecked)
        view_menu.addAction(self.compare)
        self.history = QDockWidget("History", w, objectName="historyDock")
        self.history_view = QUndoView(stack, objectName="history")
        self.history_view.setEmptyLabel("Opened picture")
        self.history.setWidget(self.history_view)
        w.addDockWidget(Qt.LeftDockWidgetArea, self.history)
        self.history.setVisible(False)
        history_action = self.history.toggleViewAction()
        history_action.setText("&History")
        history_action.setShortcut(QKeySequence("Ctrl+H"))
        history_action.setToolTip("Every undo step; click one to go back to it (Ctrl+H)")
        view_menu.addAction(history_action)

        help_menu = w.menuBar().addMenu("&Help")
        help_menu.addAction(self.action("Open &log folder", w.open_log_folder, tip="Where Sandcastle writes its logs"))

    def _build_tools(self) -> None:
        w, canvas = self.window, self.canvas
        tools = QToolBar("Tools", objectName="tools")
        tools.setMovable(False)
        w.addToolBar(Qt.TopToolBarArea, tools)
        self.brush = self.action("&Brush", lambda: self.set_tool("mask", False), "B", "Paint the mask")
        self.eraser = self.action("&Eraser", lambda: self.set_tool(canvas.layer, True), "E", "Erase what the brush paints")
        self.rectangle = self.action("&Rectangle", lambda: self.set_tool("mask", False, "rectangle"), "R", "Mask a rectangle (hold Alt to remove one)")
        self.ellipse = self.action("E&llipse", lambda: self.set_tool("mask", False, "ellipse"), "O", "Mask an ellipse (hold Alt to remove one)")
        self.lasso = self.action("&Lasso", lambda: self.set_tool("mask", False, "lasso"), "L",
                                 "Mask a free-hand outline, closed when you let go (hold Alt to remove)")
        self.fill = self.action("&Fill", lambda: self.set_tool("mask", False, "fill"), "G", "Fill the enclosed area you click (hold Alt to empty a painted area)")
        self.hint = self.action("&Hint", lambda: self.set_tool("hints", False), "H", "Paint colour hints (Colorize)")
        self.tools = {"brush": self.brush, "eraser": self.eraser, "rectangle": self.rectangle, "ellipse": self.ellipse, "lasso": self.lasso,
                      "fill": self.fill, "hint": self.hint}
        for a in self.tools.values():
            a.setCheckable(True)
            tools.addAction(a)
        self.brush.setChecked(True)
        self.hint_colour = QToolButton(objectName="hintColour")
        self.hint_colour.setToolTip("Colour of the hint brush")
        self.hint_colour.clicked.connect(self.choose_hint_colour)
        tools.addWidget(self.hint_colour)
        self._show_hint_colour()
        tools.addWidget(QLabel("  Size "))
        self.brush_size = QSpinBox(objectName="brushSize", minimum=MIN_BRUSH, maximum=MAX_BRUSH, suffix=" px")
        self.brush_size.setValue(canvas.brush_size)
        self.brush_size.setToolTip("Brush size ([ smaller, ] larger)")
        self.brush_size.valueChanged.connect(canvas.set_brush_size)
        canvas.brushSizeChanged.connect(self.brush_size.setValue)
        tools.addWidget(self.brush_size)
        tools.addWidget(QLabel("  Hardness "))
        self.brush_hardness = QSpinBox(objectName="brushHardness", suffix=" %", minimum=0, maximum=100, value=100)
        self.brush_hardness.setToolTip("How much of the brush paints at full strength; lower fades its edge")
        self.brush_hardness.valueChanged.connect(lambda v: setattr(canvas, "hardness", v / 100))
        tools.addWidget(self.brush_hardness)
        tools.addWidget(QLabel("  Mask opacity "))
        self.mask_opacity = QSpinBox(objectName="maskOpacity", suffix=" %", minimum=5, maximum=100, singleStep=5)
        self.mask_opacity.setToolTip("How strongly the mask overlay covers the picture")
        self.mask_opacity.setValue(round(float(self.settings["mask_opacity"]) * 100))
        self.mask_opacity.valueChanged.connect(self.set_mask_opacity)
        tools.addWidget(self.mask_opacity)
        self.set_mask_colour(QColor(self.settings["mask_colour"]), save=False)
        self.set_mask_opacity(self.mask_opacity.value(), save=False)
        self.set_hint_opacity(round(float(self.settings["hint_opacity"]) * 100), save=False)
        self.action("Smaller brush", canvas.smaller_brush, "[")
        self.action("Larger brush", canvas.larger_brush, "]")
        tools.addSeparator()
        tools.addAction(self.undo_button)
        tools.addAction(self.redo_button)
        tools.addAction(self.action("Clear mask", self.document.clear_mask))

    # ---- what the tool bar does -----------------------------------------------------------------

    def set_tool(self, layer: str, erasing: bool, tool: str = "brush") -> None:
        self.canvas.layer, self.canvas.erasing = layer, erasing
        if layer == "hints":
            self.canvas.set_hints_visible(True)  # picking the Hint tool brings the hints back
        self.canvas.set_tool(tool)
        current = "eraser" if erasing else "hint" if layer == "hints" else tool
        for name, action in self.tools.items():
            action.setChecked(name == current)

    def grow_mask(self, sign: int) -> None:
        word = "Grow" if sign > 0 else "Shrink"
        pixels, ok = QInputDialog.getInt(self.window, f"{word} mask", f"{word} the mask by (pixels):", 8, 1, 1000)
        if ok:
            self.document.grow_mask(sign * pixels)

    def choose_mask_colour(self) -> None:
        colour = QColorDialog.getColor(self.canvas.mask_item.colour, self.window, "Mask colour")
        if colour.isValid():
            self.set_mask_colour(colour)

    def set_mask_colour(self, colour: QColor, save: bool = True) -> None:
        self.canvas.mask_item.colour = QColor(colour)
        self.canvas.mask_item.update()
        if save:
            self.settings["mask_colour"] = colour.name()
            self._save_settings()

    def choose_hint_opacity(self) -> None:
        percent, ok = QInputDialog.getInt(self.window, "Hint opacity", "How strongly the colour hints cover the picture (%):",
                                          round(float(self.settings["hint_opacity"]) * 100), 5, 100, 5)
        if ok:
            self.set_hint_opacity(percent)

    def set_hint_opacity(self, percent: int, save: bool = True) -> None:
        self.canvas.set_hints_opacity(percent / 100)
        if save:
            self.settings["hint_opacity"] = percent / 100
            self._save_settings()

    def set_mask_opacity(self, percent: int, save: bool = True) -> None:
        self.canvas.mask_item.opacity = percent / 100
        self.canvas.mask_item.update()
        if save:
            self.settings["mask_opacity"] = percent / 100
            self._save_settings()

    def choose_hint_colour(self) -> None:
        colour = QColorDialog.getColor(self.canvas.hint_colour, self.window, "Hint colour")
        if colour.isValid():
            self.set_hint_colour(colour)

    def set_hint_colour(self, colour: QColor) -> None:
        self.canvas.hint_colour = colour
        self._show_hint_colour()
        self.set_tool("hints", False)

    def _show_hint_colour(self) -> None:
        swatch = QPixmap(18, 18)
        swatch.fill(self.canvas.hint_colour)
        self.hint_colour.setIcon(QIcon(swatch))

    def _save_settings(self) -> None:
        try:
            self.settings.save()
        except OSError as exc:
            log.warning("settings could not be saved: %s", exc)
