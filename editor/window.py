"""The main window: menus, canvas, side panel, and the generate → preview → apply flow."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QColor, QImage, QKeySequence, QPixmap
from PySide6.QtWidgets import (QApplication, QDockWidget, QFileDialog, QHBoxLayout, QLabel, QMainWindow, QMessageBox, QSpinBox, QToolBar, QToolButton,
                               QUndoView, QVBoxLayout, QWidget)

from editor.autosave import Autosaver, RestoreError, Snapshot, discard, read_snapshot
from editor.candidates import CandidateStrip
from editor.canvas import MAX_BRUSH, MIN_BRUSH, CanvasView
from editor.document import Document
from editor.jobs import DownloadRunner, JobRunner, describe_progress, human_bytes
from editor.panel import GeneratePanel
from editor.qtimage import from_qimage, to_qimage
from editor.settings import Settings, log_folder
from engines import registry
from engines.api import (ModelStatus, Request, Result, SandcastleError, StepPreview, Task, default_model, default_model_for, delete_own_slider,
                         demo_model, device_summary, is_offline, load_mask, load_picture, model_status, own_sliders, picture_size, save_image,
                         save_mask)

log = logging.getLogger(__name__)
FRAME_SIDES = ("left", "top", "right", "bottom")
BACKGROUND_OPEN_PIXELS = 12_000_000  # pictures this big open on a thread when opened from the window (not from the command line)


def frame_for_ratio(size: tuple[int, int], ratio: float, anchor: str) -> tuple[int, int, int, int]:
    """Sides to add so the picture reaches `ratio` (width / height) by growing, never cropping.
    `anchor` says where the original stays: centre, left, right, top or bottom."""
    w, h = size
    if w / h < ratio:  # too narrow: add width
        extra = int(round(h * ratio)) - w
        before = {"left": 0, "right": extra}.get(anchor, extra // 2)  # the part added on the left
        return (before, 0, extra - before, 0)
    extra = int(round(w / ratio)) - h
    before = {"top": 0, "bottom": extra}.get(anchor, extra // 2)
    return (0, before, 0, extra - before)


OPEN_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff *.gif);;All files (*)"
SAVE_FILTER = "PNG (*.png);;JPEG (*.jpg *.jpeg);;WebP (*.webp)"


class MainWindow(QMainWindow):
    _pictureLoaded = Signal(object, object, object, str)  # path, image, alpha, error: from the loader thread

    def __init__(self, model: str | None = None, demo: bool = False, settings: Settings | None = None) -> None:
        super().__init__()
        self.model = model  # from the command line (or --demo): wins over the per-task choice in Models
        self.demo = demo
        self.settings = settings or Settings.load()
        self.downloads = DownloadRunner(self)
        self._generate_after_download: str | None = None
        self.document = Document(self)
        self.canvas = CanvasView(self.document)
        self.panel = GeneratePanel(registry.available())
        self.panel.bind(self.document)
        self.runner = JobRunner(self)
        self.engines: dict[str, object] = {}
        self._job_version = -1  # document version when the running job was started
        self._job_steps = 0
        self._batch_seed, self._batch_size = 0, 1
        self._fit_job: tuple[int, str] | None = None  # (job id, slider name) while an own slider is being fitted
        self._opening: Path | None = None  # a big picture being decoded on the loader thread
        self._loader: threading.Thread | None = None
        self._pictureLoaded.connect(self._on_picture_loaded)
        self.slider_dialog = None

        self.candidates = CandidateStrip()
        self._candidates: list[tuple[Result, int]] = []  # (result, seed) of the versions in the strip
        self._batch_left = 0  # versions still to generate in this batch
        self._before: tuple[QImage, tuple[int, int, int, int], int] | None = None  # the last result's old pixels, box, undo index
        central = QWidget()
        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        left = QVBoxLayout()
        left.addWidget(self.canvas, 1)
        left.addWidget(self.candidates)
        row.addLayout(left, 1)
        row.addWidget(self.panel)
        self.setCentralWidget(central)
        self.setAcceptDrops(True)
        self.resize(1280, 820)
        self._build_actions()
        self._build_status()

        if demo:
            self.panel.banner.setText("Demo mode: tiny random-weight models. Every step runs for real, but the pictures are noise.")
            self.panel.banner.setVisible(True)

        self.panel.generateRequested.connect(self.generate)
        self.panel.cancelRequested.connect(self.cancel)
        self.panel.taskChanged.connect(self._load_engine)
        self.runner.busyChanged.connect(self._refresh_busy)
        self.downloads.busyChanged.connect(self._refresh_busy)
        self.downloads.progress.connect(self._on_download_progress)
        self.downloads.finished.connect(self._on_download_finished)
        self.downloads.failed.connect(self._on_download_failed)
        self.downloads.cancelled.connect(self._on_download_cancelled)
        self.runner.preview.connect(self._on_preview)
        self.runner.finished.connect(self._on_finished)
        self.runner.failed.connect(self._on_failed)
        self.runner.cancelled.connect(self._on_cancelled)
        self.runner.engineReady.connect(self._on_engine_ready)
        self.runner.engineFailed.connect(self._on_engine_failed)
        self.document.pathChanged.connect(self._update_title)
        self.document.undo_stack.cleanChanged.connect(self._update_title)
        self.document.loaded.connect(self._update_status)
        self.document.resized.connect(self._update_status)
        self.document.frameChanged.connect(self._frame_to_panel)
        self.panel.aspect.currentIndexChanged.connect(self._apply_aspect)
        self.canvas.regionChosen.connect(self._region_from_canvas)
        self.canvas.dragOutRequested.connect(self.drag_picture_out)
        self.panel.anchor.currentIndexChanged.connect(self._apply_aspect)
        self.canvas.zoomChanged.connect(self._update_status)
        self.candidates.chosen.connect(self.show_candidate)
        self.candidates.accepted.connect(self.accept_candidate)
        self.candidates.discarded.connect(self.discard_candidates)
        self.document.undo_stack.indexChanged.connect(self._forget_stale_before)
        self._update_title()
        self._load_engine(self.panel.current_task())
        self.autosaver = Autosaver()
        self._autosaved: tuple | None = None  # what the last autosave held, to skip writing the same again
        self.autosave_timer = QTimer(self, interval=max(5, int(self.settings["autosave_seconds"] or 0)) * 1000)
        self.autosave_timer.timeout.connect(self.autosave)
        if self.settings["autosave_seconds"]:
            self.autosave_timer.start()

    # ---- actions ------------------------------------------------------------------------------

    def _action(self, text: str, slot, shortcut=None, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.setToolTip(f"{tip or text.replace('&', '')} ({QKeySequence(shortcut).toString(QKeySequence.NativeText)})" if shortcut else tip)
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _build_actions(self) -> None:
        stack = self.document.undo_stack
        file_menu = self.menuBar().addMenu("&File")
        file_menu.addAction(self._action("&Open…", self.open_dialog, QKeySequence.Open))
        file_menu.addAction(self._action("&Save", self.save, QKeySequence.Save))
        file_menu.addAction(self._action("Save &As…", self.save_as, QKeySequence.SaveAs))
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file_menu.addSeparator()
        file_menu.addAction(self._action("&Load mask…", self.load_mask_dialog, tip="Load a mask picture (white = repaint) of the same size"))
        file_menu.addAction(self._action("Save &mask…", self.save_mask_dialog, tip="Save the mask as a black-and-white PNG"))
        file_menu.addSeparator()
        file_menu.addAction(self._action("&Quit", self.close, QKeySequence.Quit))

        edit_menu = self.menuBar().addMenu("&Edit")
        self.undo_action = stack.createUndoAction(self, "&Undo")  # the menu names the step: "Undo Paint mask"
        self.undo_action.setShortcut(QKeySequence.Undo)
        self.redo_action = stack.createRedoAction(self, "&Redo")
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence.Redo])
        edit_menu.addAction(self.undo_action)
        edit_menu.addAction(self.redo_action)
        # The toolbar keeps short, fixed labels; its tooltips name the step.
        self.undo_button = QAction("Undo", self, triggered=stack.undo, enabled=False)
        self.redo_button = QAction("Redo", self, triggered=stack.redo, enabled=False)
        stack.canUndoChanged.connect(self.undo_button.setEnabled)
        stack.canRedoChanged.connect(self.redo_button.setEnabled)
        stack.undoTextChanged.connect(self._on_undo_text)
        stack.redoTextChanged.connect(self._on_redo_text)
        edit_menu.addSeparator()
        edit_menu.addAction(self._action("&Copy picture", self.copy_picture, QKeySequence.Copy, "Copy the picture to the clipboard"))
        edit_menu.addAction(self._action("&Paste picture", self.paste_picture, QKeySequence.Paste, "Open the picture on the clipboard"))
        edit_menu.addSeparator()
        edit_menu.addAction(self._action("&Clear mask", self.document.clear_mask, "Ctrl+Shift+X"))
        edit_menu.addAction(self._action("&Invert mask", self.document.invert_mask, "Ctrl+I"))
        edit_menu.addAction(self._action("&Grow mask…", lambda: self.grow_mask(1), "Ctrl+Shift+G", "Grow the mask by some pixels"))
        edit_menu.addAction(self._action("Shrin&k mask…", lambda: self.grow_mask(-1), "Ctrl+Shift+K", "Shrink the mask by some pixels"))
        edit_menu.addAction(self._action("Clear colour &hints", self.document.clear_hints))
        self.generate_action = self._action("&Generate", self.generate, "Ctrl+Return")
        self.cancel_action = self._action("Ca&ncel generation", self.cancel, "Esc")
        edit_menu.addSeparator()
        edit_menu.addAction(self.generate_action)
        edit_menu.addAction(self.cancel_action)

        tools_menu = self.menuBar().addMenu("&Tools")
        tools_menu.addAction(self._action("&Models…", self.open_models, "Ctrl+Shift+M", "Download, add and choose models"))
        tools_menu.addAction(self._action("&Settings…", self.open_settings, QKeySequence.Preferences, "Device, precision, memory"))

        view_menu = self.menuBar().addMenu("&View")
        view_menu.addAction(self._action("Zoom &in", lambda: self.canvas.zoom_by(1), QKeySequence.ZoomIn))
        view_menu.addAction(self._action("Zoom &out", lambda: self.canvas.zoom_by(-1), QKeySequence.ZoomOut))
        view_menu.addAction(self._action("&Fit to window", self.canvas.fit, "Ctrl+0"))
        view_menu.addAction(self._action("&Actual size (100%)", self.canvas.actual_size, "Ctrl+1"))
        view_menu.addSeparator()
        self.show_mask_action = self._action("Show &mask", self.canvas.set_mask_visible, "M", "Show or hide the mask overlay")
        self.show_mask_action.setCheckable(True)
        self.show_mask_action.setChecked(True)
        self.canvas.maskVisibleChanged.connect(self.show_mask_action.setChecked)
        view_menu.addAction(self.show_mask_action)
        view_menu.addAction(self._action("Mask &colour…", self.choose_mask_colour, tip="The colour of the mask overlay"))
        self.compare_action = self._action("Compare with &before", self.canvas.set_comparing,
                                           tip="Show the picture without the version shown or the last result (or hold \\ on the canvas)")
        self.compare_action.setCheckable(True)
        self.canvas.comparingChanged.connect(self.compare_action.setChecked)
        view_menu.addAction(self.compare_action)
        self.history = QDockWidget("History", self, objectName="historyDock")
        self.history_view = QUndoView(self.document.undo_stack, objectName="history")
        self.history_view.setEmptyLabel("Opened picture")
        self.history.setWidget(self.history_view)
        self.addDockWidget(Qt.LeftDockWidgetArea, self.history)
        self.history.setVisible(False)
        history_action = self.history.toggleViewAction()
        history_action.setText("&History")
        history_action.setShortcut(QKeySequence("Ctrl+H"))
        history_action.setToolTip("Every undo step; click one to go back to it (Ctrl+H)")
        view_menu.addAction(history_action)

        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction(self._action("Open &log folder", self.open_log_folder, tip="Where Sandcastle writes its logs"))

        tools = QToolBar("Tools", objectName="tools")
        tools.setMovable(False)
        self.addToolBar(Qt.TopToolBarArea, tools)
        self.brush_action = self._action("&Brush", lambda: self._set_tool("mask", False), "B", "Paint the mask")
        self.eraser_action = self._action("&Eraser", lambda: self._set_tool(self.canvas.layer, True), "E", "Erase what the brush paints")
        self.rectangle_action = self._action("&Rectangle", lambda: self._set_tool("mask", False, "rectangle"), "R",
                                             "Mask a rectangle (hold Alt to remove one)")
        self.ellipse_action = self._action("E&llipse", lambda: self._set_tool("mask", False, "ellipse"), "O", "Mask an ellipse (hold Alt to remove one)")
        self.lasso_action = self._action("&Lasso", lambda: self._set_tool("mask", False, "lasso"), "L",
                                         "Mask a free-hand outline, closed when you let go (hold Alt to remove)")
        self.fill_action = self._action("&Fill", lambda: self._set_tool("mask", False, "fill"), "G",
                                        "Fill the enclosed area you click (hold Alt to empty a painted area)")
        self.hint_action = self._action("&Hint", lambda: self._set_tool("hints", False), "H", "Paint colour hints (Colorize)")
        self.tool_actions = {"brush": self.brush_action, "eraser": self.eraser_action, "rectangle": self.rectangle_action,
                             "ellipse": self.ellipse_action, "lasso": self.lasso_action, "fill": self.fill_action, "hint": self.hint_action}
        for a in self.tool_actions.values():
            a.setCheckable(True)
            tools.addAction(a)
        self.brush_action.setChecked(True)
        self.hint_colour = QToolButton(objectName="hintColour")
        self.hint_colour.setToolTip("Colour of the hint brush")
        self.hint_colour.clicked.connect(self.choose_hint_colour)
        tools.addWidget(self.hint_colour)
        self._show_hint_colour()
        tools.addWidget(QLabel("  Size "))
        self.brush_size = QSpinBox(objectName="brushSize")
        self.brush_size.setRange(MIN_BRUSH, MAX_BRUSH)
        self.brush_size.setValue(self.canvas.brush_size)
        self.brush_size.setSuffix(" px")
        self.brush_size.setToolTip("Brush size ([ smaller, ] larger)")
        self.brush_size.valueChanged.connect(self.canvas.set_brush_size)
        self.canvas.brushSizeChanged.connect(self.brush_size.setValue)
        tools.addWidget(self.brush_size)
        tools.addWidget(QLabel("  Hardness "))
        self.brush_hardness = QSpinBox(objectName="brushHardness", suffix=" %", minimum=0, maximum=100, value=100)
        self.brush_hardness.setToolTip("How much of the brush paints at full strength; lower fades its edge")
        self.brush_hardness.valueChanged.connect(lambda v: setattr(self.canvas, "hardness", v / 100))
        tools.addWidget(self.brush_hardness)
        tools.addWidget(QLabel("  Mask opacity "))
        self.mask_opacity = QSpinBox(objectName="maskOpacity", suffix=" %", minimum=5, maximum=100, singleStep=5)
        self.mask_opacity.setToolTip("How strongly the mask overlay covers the picture")
        self.mask_opacity.setValue(round(float(self.settings["mask_opacity"]) * 100))
        self.mask_opacity.valueChanged.connect(self.set_mask_opacity)
        tools.addWidget(self.mask_opacity)
        self.set_mask_colour(QColor(self.settings["mask_colour"]), save=False)
        self.set_mask_opacity(self.mask_opacity.value(), save=False)
        self._action("Smaller brush", self.canvas.smaller_brush, "[")
        self._action("Larger brush", self.canvas.larger_brush, "]")
        tools.addSeparator()
        tools.addAction(self.undo_button)
        tools.addAction(self.redo_button)
        tools.addAction(self._action("Clear mask", self.document.clear_mask))

    def _on_undo_text(self, text: str) -> None:
        self.undo_button.setToolTip(f"Undo {text} (Ctrl+Z)")

    def _on_redo_text(self, text: str) -> None:
        self.redo_button.setToolTip(f"Redo {text} (Ctrl+Shift+Z)")

    def _set_tool(self, layer: str, erasing: bool, tool: str = "brush") -> None:
        self.canvas.layer, self.canvas.erasing = layer, erasing
        self.canvas.set_tool(tool)
        current = "eraser" if erasing else "hint" if layer == "hints" else tool
        for name, action in self.tool_actions.items():
            action.setChecked(name == current)

    def grow_mask(self, sign: int) -> None:
        from PySide6.QtWidgets import QInputDialog

        word = "Grow" if sign > 0 else "Shrink"
        pixels, ok = QInputDialog.getInt(self, f"{word} mask", f"{word} the mask by (pixels):", 8, 1, 1000)
        if ok:
            self.document.grow_mask(sign * pixels)

    def load_mask_dialog(self) -> None:
        if not self.document.has_image:
            self.show_error("Open a picture first; a mask belongs to a picture.")
            return
        path, _ = QFileDialog.getOpenFileName(self, "Load mask", str(self._folder()), "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff)")
        if path:
            self.load_mask_file(path)

    def load_mask_file(self, path: str) -> bool:
        try:
            mask = load_mask(path, self.document.size)
        except SandcastleError as exc:
            self.show_error(str(exc))
            return False
        self.document.replace_mask(mask, "Load mask")
        self.canvas.set_mask_visible(True)
        return True

    def save_mask_dialog(self) -> None:
        if not self.document.has_image:
            return
        stem = self.document.path.stem if self.document.path else "picture"
        path, _ = QFileDialog.getSaveFileName(self, "Save mask", str(self._folder() / f"{stem}-mask.png"), "PNG (*.png)")
        if path:
            try:
                save_mask(path, self.document.mask)
            except (SandcastleError, OSError) as exc:
                self.show_error(f"The mask could not be saved ({exc}).")

    def choose_mask_colour(self) -> None:
        from PySide6.QtWidgets import QColorDialog

        colour = QColorDialog.getColor(self.canvas.mask_item.colour, self, "Mask colour")
        if colour.isValid():
            self.set_mask_colour(colour)

    def set_mask_colour(self, colour: QColor, save: bool = True) -> None:
        self.canvas.mask_item.colour = QColor(colour)
        self.canvas.mask_item.update()
        if save:
            self.settings["mask_colour"] = colour.name()
            self._save_settings()

    def set_mask_opacity(self, percent: int, save: bool = True) -> None:
        self.canvas.mask_item.opacity = percent / 100
        self.canvas.mask_item.update()
        if save:
            self.settings["mask_opacity"] = percent / 100
            self._save_settings()

    def _save_settings(self) -> None:
        try:
            self.settings.save()
        except OSError as exc:
            log.warning("settings could not be saved: %s", exc)

    def choose_hint_colour(self) -> None:
        from PySide6.QtWidgets import QColorDialog

        colour = QColorDialog.getColor(self.canvas.hint_colour, self, "Hint colour")
        if colour.isValid():
            self.set_hint_colour(colour)

    def set_hint_colour(self, colour) -> None:
        self.canvas.hint_colour = colour
        self._show_hint_colour()
        self._set_tool("hints", False)

    def _show_hint_colour(self) -> None:
        from PySide6.QtGui import QIcon, QPixmap

        swatch = QPixmap(18, 18)
        swatch.fill(self.canvas.hint_colour)
        self.hint_colour.setIcon(QIcon(swatch))

    def _build_status(self) -> None:
        self.status_size = QLabel()
        self.status_zoom = QLabel()
        self.status_device = QLabel(objectName="statusDevice")
        self.status_device.setToolTip("Device, precision and (on a graphics card) memory in use")
        self.statusBar().addPermanentWidget(self.status_device)
        self.statusBar().addPermanentWidget(self.status_size)
        self.statusBar().addPermanentWidget(self.status_zoom)

    def _update_status(self, *_) -> None:
        w, h = self.document.size
        self.status_size.setText(f"{w}×{h}" if self.document.has_image else "No picture")
        self.status_zoom.setText(f"{self.canvas.zoom * 100:.0f}%")

    def _update_title(self, *_) -> None:
        name = self.document.path.name if self.document.path else ("Untitled" if self.document.has_image else "")
        star = "*" if self.document.modified else ""
        parts = [p for p in (f"{name}{star}", "Sandcastle", "demo — random-weight models" if self.demo else "") if p]
        self.setWindowTitle(" — ".join(parts))

    # ---- files --------------------------------------------------------------------------------

    def open_path(self, path: str | Path, background: bool = False) -> bool:
        """Open a picture; on failure the current document stays as it was and the reason is shown.
        With `background`, a big picture is decoded on a thread (48 megapixels take seconds) and
        opens when ready; True then means it is on its way."""
        if self._opening is not None:
            self.show_error(f"Still opening {self._opening.name}; try again in a moment.")
            return False
        if self.runner.busy:
            self.runner.cancel()
        size = picture_size(str(path)) if background else None
        if size is not None and size[0] * size[1] >= BACKGROUND_OPEN_PIXELS:
            self._opening = Path(path)
            QApplication.setOverrideCursor(Qt.BusyCursor)
            self.statusBar().showMessage(f"Opening {Path(path).name} ({size[0]}×{size[1]})…")
            self._loader = threading.Thread(target=self._load_picture, args=(Path(path), self.max_pixels), name="sandcastle-open", daemon=True)
            self._loader.start()
            return True
        try:
            image, alpha = load_picture(str(path), self.max_pixels)
        except SandcastleError as exc:
            self.show_error(str(exc))
            return False
        self._show_opened(Path(path), image, alpha)
        return True

    def _load_picture(self, path: Path, max_pixels: int) -> None:
        """On the loader thread: decode, then hand the pixels to the GUI thread through a queued signal."""
        try:
            image, alpha = load_picture(str(path), max_pixels)
        except SandcastleError as exc:
            self._pictureLoaded.emit(path, None, None, str(exc))
        except Exception as exc:  # keep the window alive whatever the decoder does
            log.error("opening %s failed: %s", path, exc)
            self._pictureLoaded.emit(path, None, None, f"{path.name} could not be opened ({type(exc).__name__}: {exc}).")
        else:
            self._pictureLoaded.emit(path, image, alpha, "")

    def _on_picture_loaded(self, path: Path, image, alpha, error: str) -> None:
        self._opening = None
        QApplication.restoreOverrideCursor()
        if error:
            self.show_error(error)
        else:
            self._show_opened(path, image, alpha)

    def _show_opened(self, path: Path, image, alpha) -> None:
        self.document.set_image(image, path, alpha)
        self.panel.show_message("")
        self.discard_candidates()
        self.statusBar().showMessage(f"Opened {path.name}", 4000)
        self.remember_recent(path)

    @property
    def max_pixels(self) -> int:
        return int(float(self.settings["max_megapixels"]) * 1_000_000)

    def remember_recent(self, path: str | Path) -> None:
        path = str(Path(path).resolve())
        recent = [p for p in self.settings["recent_files"] if isinstance(p, str) and p != path]
        self.settings["recent_files"] = [path, *recent][:10]
        self._save_settings()

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = [p for p in self.settings["recent_files"] if isinstance(p, str)]
        for i, path in enumerate(recent):
            action = self.recent_menu.addAction(f"&{i + 1} {Path(path).name}" if i < 9 else Path(path).name)
            action.setToolTip(path)
            action.setEnabled(Path(path).is_file())
            action.triggered.connect(lambda _=False, p=path: self.open_recent(p))
        if not recent:
            self.recent_menu.addAction("No recent pictures").setEnabled(False)

    def open_recent(self, path: str) -> None:
        if self.confirm_discard():
            self.open_path(path, background=True)

    # ---- clipboard and drag and drop ------------------------------------------------------------

    def copy_picture(self) -> None:
        if self.document.has_image:
            QApplication.clipboard().setImage(to_qimage(self.document.image))
            self.statusBar().showMessage("Copied the picture", 3000)

    def paste_picture(self) -> None:
        """A picture on the clipboard (or a copied picture file) becomes the open picture."""
        data = QApplication.clipboard().mimeData()
        files = [u.toLocalFile() for u in data.urls() if u.isLocalFile()] if data.hasUrls() else []
        if files:
            if self.confirm_discard():
                self.open_path(files[0])
            return
        image = QApplication.clipboard().image()
        if image.isNull():
            self.show_error("The clipboard holds no picture.")
            return
        if self.confirm_discard():
            self.document.set_image(from_qimage(image))
            self.discard_candidates()
            self.statusBar().showMessage(f"Pasted a {image.width()}×{image.height()} picture", 4000)

    def picture_mime_data(self):
        """The picture as pixels and as a PNG file in a temporary folder (file managers want a file)."""
        import tempfile

        from PySide6.QtCore import QMimeData, QUrl

        name = (self.document.path.stem if self.document.path else "sandcastle") + ".png"
        path = Path(tempfile.mkdtemp(prefix="sandcastle-drag-")) / name
        save_image(str(path), self.document.image)
        data = QMimeData()
        data.setImageData(to_qimage(self.document.image))
        data.setUrls([QUrl.fromLocalFile(str(path))])
        return data

    def drag_picture_out(self) -> None:
        """Ctrl-drag on the canvas: carry the picture to another application."""
        from PySide6.QtGui import QDrag

        if not self.document.has_image:
            return
        try:
            data = self.picture_mime_data()
        except (SandcastleError, OSError) as exc:
            self.show_error(f"The picture could not be prepared for dragging ({exc}).")
            return
        drag = QDrag(self)
        drag.setMimeData(data)
        thumb = QPixmap.fromImage(to_qimage(self.document.image)).scaled(128, 128, Qt.KeepAspectRatio, Qt.SmoothTransformation)
        drag.setPixmap(thumb)
        drag.exec(Qt.CopyAction)

    def open_dialog(self) -> None:
        if not self.confirm_discard():
            return
        path, _ = QFileDialog.getOpenFileName(self, "Open picture", str(self._folder()), OPEN_FILTER)
        if path:
            self.open_path(path, background=True)

    def save(self) -> bool:
        # Save writes without asking only to a file the person has chosen to save to; the file they
        # opened is not overwritten until they confirm it once through Save As.
        if self.document.confirmed_path is not None:
            return self._save_to(self.document.confirmed_path)
        return self.save_as()

    def save_as(self) -> bool:
        if not self.document.has_image:
            return False
        suggestion = self.document.path or (self._folder() / "untitled.png")
        path, _ = QFileDialog.getSaveFileName(self, "Save picture", str(suggestion), SAVE_FILTER)  # asks before overwriting
        return bool(path) and self._save_to(Path(path))

    def _save_to(self, path: Path) -> bool:
        try:
            self.document.save(path)
        except (SandcastleError, OSError) as exc:
            self.show_error(f"Could not save {path.name}: {exc}")
            return False
        self.statusBar().showMessage(f"Saved {path.name}", 4000)
        self.remember_recent(path)
        return True

    def _folder(self) -> Path:
        return self.document.path.parent if self.document.path else Path.home()

    def confirm_discard(self) -> bool:
        """True when there are no unsaved changes or the person agrees to lose them (or saves)."""
        if not self.document.modified:
            return True
        answer = QMessageBox.question(
            self, "Unsaved changes", "Save the changes to this picture first?",
            QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel, QMessageBox.Save,
        )
        if answer == QMessageBox.Save:
            return self.save()
        return answer == QMessageBox.Discard

    def dragEnterEvent(self, event) -> None:
        if event.source() is None and (event.mimeData().hasUrls() or event.mimeData().hasImage()):  # not our own drag out
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        data = event.mimeData()
        urls = [u for u in data.urls() if u.isLocalFile()]
        if urls and self.confirm_discard():
            self.open_path(urls[0].toLocalFile(), background=True)
            event.acceptProposedAction()
        elif not urls and data.hasImage() and self.confirm_discard():  # pixels dragged from a browser or another editor
            self.document.set_image(from_qimage(data.imageData()))
            self.discard_candidates()
            event.acceptProposedAction()

    def closeEvent(self, event) -> None:
        if not self.confirm_discard():
            event.ignore()
            return
        self.autosave_timer.stop()
        if self._loader is not None:
            self._loader.join(30)
        self.downloads.shutdown()
        self.runner.shutdown()
        self.autosaver.finish(self.snapshot())
        event.accept()

    # ---- autosave and restore ------------------------------------------------------------------

    def snapshot(self) -> Snapshot | None:
        """Copies of everything open, for the autosave thread to write."""
        d = self.document
        if not d.has_image:
            return None
        candidates = [{"image": r.image, "box": r.box, "offset": r.offset, "seed": seed} for r, seed in self._candidates]
        return Snapshot(d.image.copy(), d.mask.copy(), d.hints.copy() if d.has_hints else None, None if d.alpha is None else d.alpha.copy(),
                        json.loads(json.dumps(self.document.generation)),
                        str(d.path) if d.path else None, candidates)

    def autosave(self) -> None:
        """Write the open work if it changed since the last autosave (on a background thread)."""
        if not self.document.has_image:
            return
        key = (self.document.version, self.document.undo_stack.index(), self.document.mask_edits, repr(self.document.generation), len(self._candidates))
        if key == self._autosaved:
            return
        snap = self.snapshot()
        if self.autosaver.save_in_background(snap):
            self._autosaved = key
        if self.autosaver.last_error:
            self.statusBar().showMessage(f"Autosave failed: {self.autosaver.last_error}", 8000)

    def offer_restore(self) -> bool:
        """After a crash: offer the work the crashed window autosaved. True when it was restored."""
        sessions = self.autosaver.crashed_sessions()
        if not sessions:
            return False
        folder = sessions[0]
        restored = False
        if self.ask_restore(folder):
            try:
                snap = read_snapshot(folder, self.max_pixels)
            except RestoreError as exc:
                kept = folder.with_name("damaged-" + folder.name)
                folder.rename(kept)  # kept on disk for a later version or by hand, but not offered again
                self.show_error(f"{exc} It is kept in {kept}.")
                for old in sessions[1:]:
                    discard(old)
                return False
            self.restore(snap)
            restored = True
        for old in sessions:
            discard(old)
        return restored

    def ask_restore(self, folder: Path) -> bool:
        import time

        stamp = time.strftime("%H:%M on %d %b", time.localtime(folder.stat().st_mtime))
        answer = QMessageBox.question(self, "Restore your work?",
                                      f"Sandcastle did not close properly last time. Restore the work autosaved at {stamp}?",
                                      QMessageBox.Yes | QMessageBox.Discard, QMessageBox.Yes)
        return answer == QMessageBox.Yes

    def restore(self, snap: Snapshot) -> None:
        self.discard_candidates()
        self.document.set_image(snap.image, Path(snap.source_path) if snap.source_path else None, snap.alpha)
        self.document.restore_layers(snap.mask, snap.hints)
        self.document.undo_stack.resetClean()  # restored work is unsaved work
        self.document.restore_generation(snap.panel)
        self._job_version, self._job_prompt = self.document.version, str(snap.panel.get("prompt", ""))
        for c in snap.candidates:
            result = Result(c["image"], c["box"], offset=tuple(c["offset"]))
            self._candidates.append((result, c["seed"]))
            self.candidates.add(self._placed(result)[0], f"Seed {c['seed']}")
        self.show_candidate(self.candidates.thumbs.currentRow())
        self.canvas.set_mask_visible(True)
        self._update_title()
        self.statusBar().showMessage("Restored the autosaved work.", 6000)

    # ---- models and settings -------------------------------------------------------------------

    def open_models(self) -> None:
        from editor.models_dialog import ModelsDialog

        ModelsDialog(self.settings, self.downloads, self).exec()

    def open_settings(self) -> None:
        from editor.settings_dialog import SettingsDialog

        if SettingsDialog(self.settings, self).exec():
            self._update_device_status()

    def open_log_folder(self) -> None:
        from PySide6.QtCore import QUrl
        from PySide6.QtGui import QDesktopServices

        folder = log_folder()
        folder.mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    def _update_device_status(self) -> None:
        self.status_device.setText(device_summary(self.settings.resolved("device"), self.settings.resolved("precision")))

    def model_for(self, task: str) -> str:
        if self.model:
            return self.model
        if self.demo:
            return demo_model(task, self.panel.params())
        engine = self.engines.get(task)
        if self.settings.model_for(task) or engine is None:
            return self.settings.model_for(task) or default_model(task)
        return default_model_for(engine, self.panel.params())  # e.g. edit: InstructPix2Pix or SD 1.5 by method

    def ensure_model(self, task: str) -> bool:
        """True when the task's model is ready to load. Otherwise explains why, or (after asking once,
        with size and licence) starts downloading it; Generate then continues by itself."""
        try:
            status = model_status(self.model_for(task), tuple(self.settings["pickle_allowed"]))  # local folders and files: installed
        except SandcastleError as exc:
            self.show_error(str(exc))
            return False
        if status.installed:
            return True
        if is_offline():
            self.show_error(
                f"{status.title} is not on this computer and Sandcastle is offline. On a connected machine run "
                f"huggingface-cli download {status.location} and copy the Hugging Face cache (~/.cache/huggingface) here, "
                "or choose a local copy in Tools → Models."
            )
            return False
        if status.location not in self.settings["asked_downloads"]:
            if not self.ask_download(status):
                self.show_error(f"{status.title} is needed to {task}; download it in Tools → Models when you are ready.")
                return False
            self.settings["asked_downloads"] = self.settings["asked_downloads"] + [status.location]
            self.settings.save()
        self._generate_after_download = status.location
        self.downloads.start(status.location, status.components, self.settings["hub_endpoint"])
        return False

    def ask_download(self, status: ModelStatus) -> bool:
        size = human_bytes(status.download_bytes) if status.download_bytes else "unknown size"
        answer = QMessageBox.question(
            self, "Download a model",
            f"{status.title} is needed for this and is not on this computer yet.\n\nDownload: about {size}\n"
            f"Licence: {status.licence or 'see the model page'}\nFrom: huggingface.co/{status.location}\n\n"
            "It is saved in the Hugging Face cache and works offline afterwards. Download it now?",
            QMessageBox.Yes | QMessageBox.Cancel, QMessageBox.Yes,
        )
        return answer == QMessageBox.Yes

    def _refresh_busy(self, *_) -> None:
        self.panel.set_busy(self.runner.busy or self.downloads.busy)

    def _on_download_progress(self, hub_id: str, progress: object) -> None:
        self.panel.progress.setRange(0, 1000)
        self.panel.progress.setValue(int(1000 * progress.done_bytes / max(1, progress.total_bytes)))
        self.panel.progress.setFormat(describe_progress(hub_id.split("/")[-1], progress))

    def _on_download_finished(self, hub_id: str, path: str) -> None:
        self.statusBar().showMessage(f"Downloaded {hub_id}", 6000)
        self.panel.show_done("Downloaded")
        if self._generate_after_download == hub_id:
            self._generate_after_download = None
            self.generate()  # the Generate that asked for the model goes on

    def _on_download_failed(self, hub_id: str, message: str) -> None:
        self._generate_after_download = None
        self.panel.show_done("Download failed")
        self.show_error(message)

    def _on_download_cancelled(self, hub_id: str) -> None:
        self._generate_after_download = None
        self.panel.show_done("Download cancelled")
        self.statusBar().showMessage(f"Download of {hub_id} cancelled; it resumes where it stopped next time.", 6000)

    def show_error(self, text: str) -> None:
        self.panel.show_message(text, error=True)
        self.statusBar().showMessage(text, 8000)

    # ---- generation ---------------------------------------------------------------------------

    def _load_engine(self, task: str) -> None:
        self.canvas.set_frame_mode(task == "uncrop")
        self.canvas.set_region_mode(task == "attributes")
        self.panel.frame_box.setVisible(task == "uncrop")
        self._attributes_box().setVisible(task == "attributes")
        if task in self.engines:
            self._show_engine(self.engines[task])
        else:
            self.panel.generate.setEnabled(False)
            self.runner.load_engine(task)

    def _show_engine(self, engine: object) -> None:
        self.panel.set_engine_spec(engine.spec)
        # Uncrop's sides are both engine parameters and the frame on the canvas: keep them in step.
        for name in FRAME_SIDES:
            widget = self.panel.param_widgets.get(name)
            if widget is not None:
                widget.valueChanged.connect(self._frame_from_panel)
        self._frame_to_panel()
        folder = self.panel.param_widgets.get("directions_folder")
        if folder is not None:
            folder.editingFinished.connect(self._refresh_own_sliders)
            self._refresh_own_sliders()

    def _attributes_box(self):
        """The attribute sliders, made once (the names come with the resources, no engine import needed)."""
        if getattr(self, "attributes_box", None) is None:
            from importlib import resources

            from editor.attributes_panel import AttributesBox

            names = tuple(resources.files("resources").joinpath("celeba_attributes.txt").read_text().split())
            self.attributes_box = AttributesBox(names, self._own_sliders())
            self.attributes_box.changed.connect(self._attributes_to_panel)
            self.attributes_box.released.connect(self._rerender_attributes)
            self.attributes_box.newSliderRequested.connect(self.new_slider)
            self.attributes_box.deleteRequested.connect(self.delete_slider)
            self.panel.layout().insertWidget(self.panel.layout().indexOf(self.panel.engine_box), self.attributes_box)
        return self.attributes_box

    def _attributes_to_panel(self, text: str) -> None:
        widget = self.panel.param_widgets.get("attributes")
        if widget is not None:
            widget.setText(text)

    def _own_sliders_folder(self) -> str:
        return str(self.document.task_params("attributes").get("directions_folder", "")).strip()

    def _own_sliders(self) -> tuple[str, ...]:
        try:
            return own_sliders(self._own_sliders_folder())
        except SandcastleError:
            return ()

    def _refresh_own_sliders(self) -> None:
        """Show the sliders saved in the own-sliders folder (it may have been changed in the panel)."""
        names, box = self._own_sliders(), self._attributes_box()
        for name in [n for n in box.own if n not in names]:
            box.remove_own(name)
        for name in names:
            box.add_own(name)

    def _current_face(self):
        """The face square marked on the canvas (the whole picture when none is), cropped; None without a picture."""
        if not self.document.has_image:
            return None
        p = self.panel.params()
        size = p.get("region_size", 0)
        image = self.document.image
        return image[p["region_y"] : p["region_y"] + size, p["region_x"] : p["region_x"] + size].copy() if size else image.copy()

    def new_slider(self) -> None:
        """Collect examples for an own slider; on OK, fit it on the worker thread (fit_slider)."""
        from editor.attributes_panel import NewSliderDialog

        if self.slider_dialog is None:
            self.slider_dialog = NewSliderDialog(self._current_face, self)
            self.slider_dialog.accepted.connect(self.fit_slider)
        self.slider_dialog.open()

    def fit_slider(self) -> None:
        dialog, engine = self.slider_dialog, self.engines.get("attributes")
        if engine is None or self.runner.busy or self.downloads.busy:
            self.show_error("Wait for the running job to end, then choose Fit and save again; your examples are kept.")
            return
        if not self.ensure_model("attributes"):
            return
        base = self.build_request(0)
        params = {**base.params, "region_x": 0, "region_y": 0, "region_size": 0}  # each example is already cropped to its face
        has, lacks = ([replace(base, image=face, mask=None, hints=None, params=params) for face in dialog.examples[key]] for key in ("has", "lacks"))
        name, job_id = dialog.name.text().strip(), self.runner.next_job_id()
        self._fit_job = (job_id, name)

        def work(on_step, token):
            return engine.fit_slider(name, has, lacks, token, lambda done, total: on_step(StepPreview(job_id, done, total, None, (0, 0, 0, 0))))

        self.panel.progress.setFormat(f"Fitting {name}…")
        self.runner.submit_work(job_id, work)

    def _on_slider_fitted(self, name: str) -> None:
        self.slider_dialog.deleteLater()
        self.slider_dialog = None  # the next slider starts from empty lists
        self.attributes_box.add_own(name)
        self.panel.show_done(f"Slider {name} saved")
        self.statusBar().showMessage(f"Your slider {name} is saved and sits under Your sliders.", 6000)

    def delete_slider(self, name: str) -> None:
        if QMessageBox.question(self, "Delete slider", f"Delete your slider {name}? This cannot be undone.") != QMessageBox.Yes:
            return
        try:
            delete_own_slider(name, self._own_sliders_folder())
        except (SandcastleError, OSError) as exc:
            self.show_error(f"The slider could not be deleted ({exc}).")
            return
        self.attributes_box.remove_own(name)

    def _rerender_attributes(self) -> None:
        """Let go of a slider: render again (the face's codes are cached, so this only decodes)."""
        if not self.runner.busy and self.panel.generate.isEnabled():
            self.generate()

    def _region_from_canvas(self, x: int, y: int, size: int) -> None:
        for name, value in (("region_x", x), ("region_y", y), ("region_size", size)):
            widget = self.panel.param_widgets.get(name)
            if widget is not None:
                widget.setValue(value)

    def _frame_from_panel(self, *_) -> None:
        widgets = [self.panel.param_widgets.get(n) for n in FRAME_SIDES]
        if all(widgets):
            self.document.set_frame(tuple(w.value() for w in widgets))

    def _frame_to_panel(self, *_) -> None:
        for name, value in zip(FRAME_SIDES, self.document.frame):
            widget = self.panel.param_widgets.get(name)
            if widget is not None and widget.value() != value:
                widget.blockSignals(True)  # the frame is the source here: no echo back to it
                widget.setValue(value)
                widget.blockSignals(False)
                self.document.set_task_value("params", self.panel.spec.id, name, value)

    def _apply_aspect(self, *_) -> None:
        ratio = self.panel.aspect_ratio()
        if ratio is None or not self.document.has_image:
            return
        self.document.set_frame(frame_for_ratio(self.document.size, ratio, self.panel.anchor.currentData()))

    def _on_engine_failed(self, task: str, message: str) -> None:
        self.show_error(message)

    def _on_engine_ready(self, task: str, engine: object) -> None:
        self.engines[task] = engine
        self._update_device_status()  # torch is imported by now, so this is cheap
        if task == self.panel.current_task():
            self._show_engine(engine)

    def build_request(self, job_id: int) -> Request:
        """The request from the document: its pixels and layers, and the settings the panel shows from it."""
        g, task = self.document.generation, self.panel.current_task()
        return Request(
            task=Task(task),
            image=self.document.image.copy(),
            mask=self.document.mask.copy(),
            prompt=g["prompt"].strip(),
            negative_prompt=g["negative"].strip(),
            guidance_scale=g["guidance"],
            strength=g["strength"].get(task, 1.0),
            steps=g["steps"],
            seed=g["seed"],
            model=self.model_for(task),
            device=self.settings.resolved("device"),
            dtype=self.settings.resolved("precision"),
            memory=self.settings.resolved("memory"),
            compile=bool(self.settings["compile_unet"]),
            allow_pickle=tuple(self.settings["pickle_allowed"]),
            hints=self.document.hints.copy() if task == "colorize" and self.document.has_hints else None,
            params=self.panel.params(),
            job_id=job_id,
        )

    def generate(self) -> None:
        if self.runner.busy or self.downloads.busy:
            return  # one job at a time; the button is disabled too
        engine = self.engines.get(self.panel.current_task())
        if engine is None:
            self.show_error("The engine is still loading; try again in a moment.")
            return
        if not self.document.has_image:
            self.show_error("Open a picture first (File → Open, or drop one on the window).")
            return
        request = self.build_request(self.runner.next_job_id())
        try:
            engine.check(request)
        except SandcastleError as exc:
            self.show_error(str(exc))
            return
        if not self.ensure_model(request.task.value):
            return
        self._job_version = self.document.version
        self._job_steps = 0
        self._job_prompt = request.prompt
        if self._candidates:
            self.discard_candidates()  # a new batch replaces versions that were not accepted
        versions = self.panel.versions.value() if self.panel.versions.isEnabled() else 1
        self._batch_left = versions - 1
        self._batch_seed, self._batch_size = request.seed, versions
        self.runner.submit(engine, request)

    def cancel(self) -> None:
        if self.runner.busy:
            self.runner.cancel()
            self.panel.progress.setFormat("Cancelling…")
        elif self.downloads.busy:
            self.downloads.cancel()

    def _on_preview(self, job_id: int, step: int, total: int, image: QImage, info: object) -> None:
        self._job_steps += 1
        if not image.isNull():
            self.canvas.show_preview(image, info.box, info.offset, keep=info.passes > 1)
        self.panel.show_step(step, total, info.seconds_per_step, info.pass_index, info.passes)

    def _on_finished(self, job_id: int, result: Result) -> None:
        self.canvas.clear_preview()
        if isinstance(result, Result) and result.info.get("warnings"):
            self.panel.show_message(" ".join(result.info["warnings"]))  # shown, not an error: the result is still applied
        if self._fit_job and self._fit_job[0] == job_id:
            self._on_slider_fitted(self._fit_job[1])
            self._fit_job = None
            return
        if self.document.version != self._job_version:
            self.show_error("The picture changed while generating, so the result was not applied.")
            self.panel.show_done("Discarded")
            return
        if self._batch_size > 1:
            self._add_candidate(result)
            return
        self._apply(result, self._label())
        self.panel.show_done(f"Done in {result.seconds:.1f} s")
        self.statusBar().showMessage(f"Done in {result.seconds:.1f} s · {result.info.get('device', '')} {result.info.get('dtype', '')}", 6000)
        self._update_device_status()

    def _label(self) -> str:
        return f"{self.panel.task.currentText()}: {self._job_prompt[:40]}" if self._job_prompt else self.panel.task.currentText()

    def _apply(self, result: Result, label: str) -> None:
        """A result onto the picture as one undo step; the old pixels stay at hand for Compare with before."""
        if self._resizes(result):
            self.document.apply_resized(result.image, result.offset, label)
            self.panel.aspect.setCurrentIndex(0)  # the frame is used up: back to Free
            self._before = None
        else:
            x, y, w, h = result.box
            before = to_qimage(self.document.image[y : y + h, x : x + w])
            self.document.apply_result(result.image, result.box, label)
            self._before = (before, result.box, self.document.undo_stack.index())
            self._forget_stale_before(self.document.undo_stack.index())  # hands the old pixels to the canvas
        self.canvas.set_mask_visible(False)  # show the result itself; the mask returns with the next stroke or M

    # ---- versions to choose from ------------------------------------------------------------------

    def _add_candidate(self, result: Result) -> None:
        seed = self._batch_seed + len(self._candidates)
        self._candidates.append((result, seed))
        self.candidates.add(self._placed(result)[0], f"Seed {seed}")
        if self._batch_left > 0:
            self._batch_left -= 1
            request = replace(self.build_request(self.runner.next_job_id()), seed=self._batch_seed + len(self._candidates))
            self.runner.submit(self.engines[request.task.value], request)
            return
        self.show_candidate(self.candidates.thumbs.currentRow())
        self.panel.show_done(f"{len(self._candidates)} versions: pick one")
        self.statusBar().showMessage("Click a version to see it on the canvas; Accept keeps it, Discard all drops them.", 8000)

    def show_candidate(self, index: int) -> None:
        if not 0 <= index < len(self._candidates) or self.runner.busy:
            return  # while the batch runs, the canvas shows the next version forming
        pixels, box, offset = self._placed(self._candidates[index][0])
        self.canvas.show_preview(to_qimage(pixels), box, offset)

    def _placed(self, result: Result):
        """(pixels, box, offset) of what a result changes: its box of a same-size picture, or the whole
        grown picture with the old one's offset (uncrop)."""
        if self._resizes(result):
            return result.image, (0, 0, result.image.shape[1], result.image.shape[0]), result.offset
        x, y, w, h = result.box
        return result.image[y : y + h, x : x + w], result.box, (0, 0)

    def _resizes(self, result: Result) -> bool:
        return result.image.shape != self.document.image.shape or tuple(result.offset) != (0, 0)

    def accept_candidate(self, index: int) -> None:
        if self.runner.busy:
            self.show_error("Wait for the versions to finish (or cancel), then accept one.")
            return
        if self.document.version != self._job_version:
            self.show_error("The picture changed since these versions were made, so they can no longer be applied.")
            return
        result, seed = self._candidates[index]
        self._apply(result, f"{self._label()} (seed {seed})")
        self.discard_candidates()
        self.panel.show_done(f"Kept the version with seed {seed}")

    def discard_candidates(self) -> None:
        self._candidates.clear()
        self.candidates.clear()
        self.canvas.clear_preview()

    def _forget_stale_before(self, index: int) -> None:
        if self._before is not None and self._before[2] != index:
            self._before = None
        self.canvas.set_before(*self._before[:2] if self._before else (None, None))

    def _on_failed(self, job_id: int, message: str) -> None:
        self.canvas.clear_preview()
        self._batch_left = 0
        if self._fit_job and self._fit_job[0] == job_id:
            self._fit_job = None
            message += " Your examples are kept: choose New… under Attributes to change them and try again."
        self.panel.show_done("Failed")
        self.show_error(message)

    def _on_cancelled(self, job_id: int) -> None:
        self.canvas.clear_preview()
        self._batch_left = 0  # the versions already made stay in the strip
        self._fit_job = None if self._fit_job and self._fit_job[0] == job_id else self._fit_job
        self.panel.show_done("Cancelled")
        self.statusBar().showMessage("Cancelled; the picture is unchanged.", 4000)


