"""The main window: it lays out the canvas, the side panel and the versions strip, and binds them to
the document and the generation controller. It runs no job and keeps no generation state: jobs,
versions and results belong to `GenerationController` (editor/generation.py); menus and the tool
bar to `Actions` (editor/actions.py); files, the clipboard and drag and drop to `Files`
(editor/files.py); the Attributes task's sliders to `AttributesTask` (editor/attributes.py).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QHBoxLayout, QLabel, QMainWindow, QMessageBox, QVBoxLayout, QWidget

from editor.actions import Actions
from editor.attributes import AttributesTask
from editor.autosave import Autosaver, RestoreError, Snapshot, discard, read_snapshot
from editor.canvas import CanvasView
from editor.document import Document
from editor.files import Files
from editor.generation import GenerationController, Version
from editor.jobs import describe_progress, human_bytes
from editor.panel import GeneratePanel
from editor.settings import Settings, log_folder
from editor.versions import VersionStrip
from engines import registry
from engines.api import ModelStatus, Result
from engines.services import model_controls

log = logging.getLogger(__name__)
FRAME_SIDES = ("left", "top", "right", "bottom")


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


class MainWindow(QMainWindow):
    def __init__(self, model: str | None = None, demo: bool = False, settings: Settings | None = None) -> None:
        super().__init__()
        self.demo = demo
        self.settings = settings or Settings.load()
        self.document = Document(self)
        self.generation = GenerationController(self.document, self.settings, model, demo, self)
        self.generation.ask_download = self.ask_download
        self.canvas = CanvasView(self.document)
        self.panel = GeneratePanel(registry.available())
        self.panel.bind(self.document)
        self.version_strip = VersionStrip()
        central = QWidget()
        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        left = QVBoxLayout()
        left.addWidget(self.canvas, 1)
        left.addWidget(self.version_strip)
        row.addLayout(left, 1)
        row.addWidget(self.panel)
        self.setCentralWidget(central)
        self.setAcceptDrops(True)
        self.resize(1280, 820)
        screen = self.screen().availableGeometry() if self.screen() is not None else None
        if screen is not None and (screen.width() < 1280 or screen.height() < 820):  # a laptop: fill it, never overflow it
            self.resize(min(1280, screen.width()), min(820, screen.height() - 40))
        self.files = Files(self)
        self.menu_actions = Actions(self)
        self.attributes = AttributesTask(self)
        self._build_status()
        if self.settings.notice:  # after the picture opens, whose own messages would replace it
            QTimer.singleShot(0, lambda: self.panel.show_message(self.settings.notice))
        if demo:
            self.panel.banner.setText("Demo mode: tiny random-weight models. Every step runs for real, but the pictures are noise.")
            self.panel.banner.setVisible(True)
        self._bind()
        self._update_title()
        # The first engine loads once the window is up: importing torch on the worker thread holds
        # the interpreter lock for seconds and would slow building the window down.
        self._show_task(self.panel.current_task(), load=False)
        QTimer.singleShot(0, lambda: self.generation.load_engine(self.panel.current_task()))
        self.autosaver = Autosaver()
        self._autosaved: tuple | None = None  # what the last autosave held, to skip writing the same again
        self.autosave_timer = QTimer(self, interval=max(5, int(self.settings["autosave_seconds"] or 0)) * 1000)
        self.autosave_timer.timeout.connect(self.autosave)
        if self.settings["autosave_seconds"]:
            self.autosave_timer.start()

    def _bind(self) -> None:
        g, panel, canvas, document, strip = self.generation, self.panel, self.canvas, self.document, self.version_strip
        panel.generateRequested.connect(g.generate)
        panel.cancelRequested.connect(g.cancel)
        panel.taskChanged.connect(self._show_task)
        panel.aspect.currentIndexChanged.connect(self._apply_aspect)
        panel.anchor.currentIndexChanged.connect(self._apply_aspect)
        g.engineReady.connect(self._on_engine_ready)
        g.busyChanged.connect(panel.set_busy)
        g.stepped.connect(lambda job_id, s: panel.show_stage(s.stage) if s.stage else panel.show_step(s.step, s.total, s.seconds_per_step,
                                                                                                     s.pass_index, s.passes, s.phase))
        g.preview.connect(lambda job_id, image, s: canvas.show_preview(image, s.box, s.offset, keep=s.passes > 1))
        g.overlayCleared.connect(canvas.clear_preview)
        g.versionShown.connect(canvas.show_preview)
        g.versionAdded.connect(strip.add)
        g.versionsCleared.connect(strip.clear)
        g.beforeChanged.connect(canvas.set_before)
        g.resultApplied.connect(self._on_result_applied)
        g.progressText.connect(panel.show_done)
        g.message.connect(panel.show_message)
        g.error.connect(self.show_error)
        g.downloadFinished.connect(lambda *_: panel.show_message(""))  # a failure dealt with stops being shown
        g.status.connect(self.statusBar().showMessage)
        g.deviceChanged.connect(self.status_device.setText)
        g.downloadProgress.connect(self._on_download_progress)
        strip.chosen.connect(g.show_version)
        strip.accepted.connect(g.accept_version)
        strip.discarded.connect(g.discard_versions)
        canvas.dragOutRequested.connect(self.files.drag_picture_out)
        canvas.zoomChanged.connect(self._update_status)
        document.pathChanged.connect(self._update_title)
        document.undo_stack.cleanChanged.connect(self._update_title)
        document.loaded.connect(self._update_status)
        document.resized.connect(self._update_status)
        document.frameChanged.connect(self._frame_to_panel)

    # ---- the task and its engine ----------------------------------------------------------------

    def _show_task(self, task: str, load: bool = True) -> None:
        self.canvas.set_frame_mode(task == "uncrop")
        self.canvas.set_region_mode(task == "attributes")
        self.panel.frame_box.setVisible(task == "uncrop")
        self.attributes.show_for(task)
        if task not in self.generation.engines:
            self.panel.generate.setEnabled(False)  # until its engine is ready
        if load:
            self.generation.load_engine(task)

    def _on_engine_ready(self, task: str, engine: object) -> None:
        if task != self.panel.current_task():
            return
        self.panel.set_engine_spec(engine.spec)
        self._show_model_controls()
        # Uncrop's sides are both engine parameters and the frame on the canvas: keep them in step.
        for name in FRAME_SIDES:
            widget = self.panel.param_widgets.get(name)
            if widget is not None:
                widget.valueChanged.connect(self._frame_from_panel)
        self._frame_to_panel()
        self.attributes.engine_shown()

    def _on_result_applied(self, grew: bool) -> None:
        if grew:
            self.panel.aspect.setCurrentIndex(0)  # the frame is used up: back to Free
        # Show the result itself: the mask returns with the next stroke or M, the hints with the Hint
        # tool or Shift+H. Undo and redo leave both as the person set them.
        self.canvas.set_mask_visible(False)
        self.canvas.set_hints_visible(False)

    # ---- the uncrop frame -----------------------------------------------------------------------

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

    # ---- status bar, title, messages --------------------------------------------------------------

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

    def show_error(self, text: str) -> None:
        self.panel.show_message(text, error=True)
        self.statusBar().showMessage(text, 8000)

    def _on_download_progress(self, hub_id: str, progress: object) -> None:
        self.panel.progress.setRange(0, 1000)
        self.panel.progress.setValue(int(1000 * progress.done_bytes / max(1, progress.total_bytes)))
        self.panel.progress.setFormat(describe_progress(hub_id.split("/")[-1], progress))

    # ---- models and settings -------------------------------------------------------------------

    def ask_download(self, status: ModelStatus) -> bool:
        size = f"about {human_bytes(status.download_bytes)}" if status.download_bytes else "size shown as it starts"
        needed = (f"{status.title} runs with the text encoder and VAE of {status.base}, which are not on this computer yet "
                  "(its own transformer is not downloaded)." if status.base else f"{status.title} is needed for this and is not on this computer yet.")
        answer = QMessageBox.question(
            self, "Download a model",
            f"{needed}\n\nDownload: {size}\n"
            f"Licence: {status.licence or 'see the model page'}\nFrom: huggingface.co/{status.base or status.location}\n\n"
            + (f"It is gated: first {status.access}.\n\n" if status.access else "")
            + "It is saved in the Hugging Face cache and works offline afterwards. Download it now?",
            QMessageBox.Yes | QMessageBox.Cancel, QMessageBox.Yes,
        )
        return answer == QMessageBox.Yes

    def open_models(self) -> None:
        from editor.models_dialog import ModelsDialog

        ModelsDialog(self.settings, self.generation, self).exec()
        self._show_model_controls()  # the task's model may have changed

    def _show_model_controls(self) -> None:
        """The panel shows the controls the task's model uses (no guidance for FLUX.2 [klein], true CFG for Qwen…)."""
        task = self.panel.current_task()
        if task in self.generation.engines:
            self.panel.set_model_controls(model_controls(self.generation.model_for(task), tuple(self.settings["pickle_allowed"])))

    def open_settings(self) -> None:
        from editor.settings_dialog import SettingsDialog

        where = (self.settings["device"], self.settings.remote, self.settings["remote_token"])
        if SettingsDialog(self.settings, self).exec():
            if (self.settings["device"], self.settings.remote, self.settings["remote_token"]) != where and "remote" in (where[0], self.settings["device"]):
                self.generation.forget_engines()  # from this computer to a server or back: the engines come from the other side now
                self._show_task(self.panel.current_task())
            self.status_device.setText(self.generation.device_summary())

    def open_log_folder(self) -> None:
        from PySide6.QtCore import QUrl
        from PySide6.QtGui import QDesktopServices

        folder = log_folder()
        folder.mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    def save_settings(self) -> None:
        try:
            self.settings.save()
        except OSError as exc:
            log.warning("settings could not be saved: %s", exc)

    # ---- drops and closing -----------------------------------------------------------------------

    def dragEnterEvent(self, event) -> None:
        if self.files.accepts_drop(event):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        self.files.drop(event)

    def closeEvent(self, event) -> None:
        if not self.files.confirm_discard():
            event.ignore()
            return
        self.shutdown()
        self.autosaver.finish(self.snapshot())
        event.accept()

    def shutdown(self) -> bool:
        """Stop everything that runs beside the window: autosave timer, the picture loader, the
        engines' and the downloads' threads (jobs are cancelled, never killed). True when all ended."""
        self.autosave_timer.stop()
        self.files.wait()
        return self.generation.shutdown()

    # ---- autosave and restore ------------------------------------------------------------------

    def snapshot(self) -> Snapshot | None:
        """Copies of everything open, for the autosave thread to write."""
        d = self.document
        if not d.has_image:
            return None
        versions = [{"image": v.result.image, "box": v.result.box, "offset": v.result.offset, "seed": v.seed} for v in self.generation.versions]
        return Snapshot(d.image.copy(), d.mask.copy(), d.hints.copy() if d.has_hints else None, None if d.alpha is None else d.alpha.copy(),
                        json.loads(json.dumps(d.generation)), str(d.path) if d.path else None, versions, d.colour)

    def autosave(self) -> None:
        """Write the open work if it changed since the last autosave (on a background thread)."""
        d = self.document
        if not d.has_image:
            return
        key = (d.version, d.undo_stack.index(), d.mask_edits, repr(d.generation), len(self.generation.versions))
        if key == self._autosaved:
            return
        if self.autosaver.save_in_background(self.snapshot()):
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
        choice = self.ask_restore(folder)
        if choice == "later":  # kept on disk and offered again at the next start
            return False
        if choice == "restore":
            try:
                snap = read_snapshot(folder, self.files.max_pixels)
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

    def ask_restore(self, folder: Path) -> str:
        """"restore", "later" (keep it, ask at the next start) or "discard"."""
        stamp = time.strftime("%H:%M on %d %b", time.localtime(folder.stat().st_mtime))
        box = QMessageBox(QMessageBox.Question, "Restore your work?",
                          f"Sandcastle did not close properly last time. Restore the work autosaved at {stamp}?", parent=self)
        restore = box.addButton("Restore", QMessageBox.AcceptRole)
        later = box.addButton("Not now", QMessageBox.RejectRole)
        box.addButton("Discard", QMessageBox.DestructiveRole)
        box.setDefaultButton(restore)
        box.setEscapeButton(later)  # closing the question loses nothing
        box.exec()
        return "restore" if box.clickedButton() is restore else "later" if box.clickedButton() in (later, None) else "discard"

    def restore(self, snap: Snapshot) -> None:
        self.document.set_image(snap.image, Path(snap.source_path) if snap.source_path else None, snap.alpha, snap.colour)
        self.document.restore_layers(snap.mask, snap.hints)
        self.document.undo_stack.resetClean()  # restored work is unsaved work
        self.document.restore_generation(snap.panel)
        task, prompt = str(snap.panel.get("task", "")), str(snap.panel.get("prompt", ""))
        label = f"{task.capitalize()}: {prompt[:40]}" if prompt else task.capitalize()
        self.generation.restore_versions([Version(Result(v["image"], v["box"], offset=tuple(v["offset"])), v["seed"]) for v in snap.versions], label)
        self.generation.show_version(self.version_strip.thumbs.currentRow())
        self.canvas.set_mask_visible(True)
        self._update_title()
        self.statusBar().showMessage("Restored the autosaved work.", 6000)
