"""Pictures in and out of the window: open (big ones on a thread), save, recent files, the clipboard,
drag and drop, and mask files. Failures are explained and leave the document as it was."""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QMimeData, QObject, Qt, QUrl, Signal
from PySide6.QtGui import QDrag, QPixmap
from PySide6.QtWidgets import QApplication, QFileDialog, QMenu, QMessageBox

from editor.qtimage import from_qimage, to_qimage
from engines.api import SandcastleError
from engines.services import load_mask, picture_size, remove_stale_temporaries, save_image, save_mask
from engines.services import read_picture as load_picture  # (image, alpha, colour): the one place pictures are decoded

if TYPE_CHECKING:
    from editor.window import MainWindow

log = logging.getLogger(__name__)
BACKGROUND_OPEN_PIXELS = 12_000_000  # pictures this big open on a thread when opened from the window (not from the command line)
OPEN_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff *.gif);;All files (*)"
SAVE_FILTER = "PNG (*.png);;JPEG (*.jpg *.jpeg);;WebP (*.webp)"


class Files(QObject):
    _pictureLoaded = Signal(object, object, str)  # path, picture (image, alpha, colour), error: from the loader thread

    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)
        self.window, self.document, self.settings = window, window.document, window.settings
        self.opening: Path | None = None  # a big picture being decoded on the loader thread
        self._loader: threading.Thread | None = None
        self._pictureLoaded.connect(self._on_picture_loaded)
        self._cleaner = self._remove_stale_temporaries()

    @property
    def max_pixels(self) -> int:
        return int(float(self.settings["max_megapixels"]) * 1_000_000)

    # ---- opening ------------------------------------------------------------------------------

    def open_path(self, path: str | Path, background: bool = False) -> bool:
        """Open a picture; on failure the current document stays as it was and the reason is shown.
        With `background`, a big picture is decoded on a thread (48 megapixels take seconds) and
        opens when ready; True then means it is on its way."""
        if self.opening is not None:
            self.window.show_error(f"Still opening {self.opening.name}; try again in a moment.")
            return False
        self.window.generation.cancel_generation()  # a result for the old picture would be dropped anyway
        size = picture_size(str(path)) if background else None
        if size is not None and size[0] * size[1] >= BACKGROUND_OPEN_PIXELS:
            self.opening = Path(path)
            QApplication.setOverrideCursor(Qt.BusyCursor)
            self.window.statusBar().showMessage(f"Opening {Path(path).name} ({size[0]}×{size[1]})…")
            self._loader = threading.Thread(target=self._load_picture, args=(Path(path), self.max_pixels), name="sandcastle-open", daemon=True)
            self._loader.start()
            return True
        try:
            picture = load_picture(str(path), self.max_pixels)
        except SandcastleError as exc:
            self.window.show_error(str(exc))
            return False
        self._show_opened(Path(path), picture)
        return True

    def _load_picture(self, path: Path, max_pixels: int) -> None:
        """On the loader thread: decode, then hand the pixels to the GUI thread through a queued signal."""
        try:
            picture = load_picture(str(path), max_pixels)
        except SandcastleError as exc:
            self._pictureLoaded.emit(path, None, str(exc))
        except Exception as exc:  # keep the window alive whatever the decoder does
            log.error("opening %s failed: %s", path, exc)
            self._pictureLoaded.emit(path, None, f"{path.name} could not be opened ({type(exc).__name__}: {exc}).")
        else:
            self._pictureLoaded.emit(path, picture, "")

    def _on_picture_loaded(self, path: Path, picture, error: str) -> None:
        self.opening = None
        QApplication.restoreOverrideCursor()
        if error:
            self.window.show_error(error)
        else:
            self._show_opened(path, picture)

    def _show_opened(self, path: Path, picture) -> None:
        self.document.set_image(picture.image, path, picture.alpha, picture.colour)
        self.window.generation.discard_versions()
        self.window.panel.show_message("")
        self.window.statusBar().showMessage(f"Opened {path.name}", 4000)
        self.remember_recent(path)

    def _show_pasted(self, image) -> None:
        self.document.set_image(image)
        self.window.generation.discard_versions()

    def open_dialog(self) -> None:
        if not self.confirm_discard():
            return
        path, _ = QFileDialog.getOpenFileName(self.window, "Open picture", str(self.folder()), OPEN_FILTER)
        if path:
            self.open_path(path, background=True)

    def wait(self, seconds: float = 30) -> None:
        """Let a picture being decoded and the start-up cleaning finish (before the window closes)."""
        if self._loader is not None:
            self._loader.join(seconds)
        self._cleaner.join(min(seconds, 1))  # only a folder that does not answer takes longer; leaving it behind is harmless

    def _remove_stale_temporaries(self) -> threading.Thread:
        """At start, remove what saves killed mid-write left in the folders of the recent files: those are
        the folders Sandcastle saves into (every save also cleans its own folder). On a thread, because a
        network folder can take long to answer; it touches only files named as our temporaries."""
        folders = list(dict.fromkeys(str(Path(p).parent) for p in self.settings["recent_files"] if isinstance(p, str)))

        def clean() -> None:
            for folder in folders:
                for path in remove_stale_temporaries(folder):
                    log.info("removed %s, left by a save that did not finish", path)

        thread = threading.Thread(target=clean, name="sandcastle-clean-temporaries", daemon=True)
        thread.start()
        return thread

    # ---- recent files -------------------------------------------------------------------------

    def remember_recent(self, path: str | Path) -> None:
        path = str(Path(path).resolve())
        recent = [p for p in self.settings["recent_files"] if isinstance(p, str) and p != path]
        self.settings["recent_files"] = [path, *recent][:10]
        self.window.save_settings()

    def fill_recent_menu(self, menu: QMenu) -> None:
        menu.clear()
        recent = [p for p in self.settings["recent_files"] if isinstance(p, str)]
        for i, path in enumerate(recent):
            action = menu.addAction(f"&{i + 1} {Path(path).name}" if i < 9 else Path(path).name)
            action.setToolTip(path)
            action.setEnabled(Path(path).is_file())
            action.triggered.connect(lambda _=False, p=path: self.open_recent(p))
        if not recent:
            menu.addAction("No recent pictures").setEnabled(False)

    def open_recent(self, path: str) -> None:
        if self.confirm_discard():
            self.open_path(path, background=True)

    # ---- saving -------------------------------------------------------------------------------

    def save(self) -> bool:
        # Save writes without asking only to a file the person has chosen to save to; the file they
        # opened is not overwritten until they confirm it once through Save As.
        if self.document.confirmed_path is not None:
            return self.save_to(self.document.confirmed_path)
        return self.save_as()

    def save_as(self) -> bool:
        if not self.document.has_image:
            return False
        suggestion = self.document.path or (self.folder() / "untitled.png")
        path, _ = QFileDialog.getSaveFileName(self.window, "Save picture", str(suggestion), SAVE_FILTER)  # asks before overwriting
        return bool(path) and self.save_to(Path(path))

    def save_to(self, path: Path) -> bool:
        try:
            self.document.save(path)
        except SandcastleError as exc:
            self.window.show_error(str(exc))  # a whole sentence naming the file and what to do
            return False
        except OSError as exc:
            self.window.show_error(f"Could not save {path.name}: {exc}")
            return False
        self.window.statusBar().showMessage(f"Saved {path.name}", 4000)
        self.remember_recent(path)
        return True

    def folder(self) -> Path:
        return self.document.path.parent if self.document.path else Path.home()

    def confirm_discard(self) -> bool:
        """True when there are no unsaved changes or the person agrees to lose them (or saves)."""
        if not self.document.modified:
            return True
        answer = QMessageBox.question(
            self.window, "Unsaved changes", "Save the changes to this picture first?",
            QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel, QMessageBox.Save,
        )
        if answer == QMessageBox.Save:
            return self.save()
        return answer == QMessageBox.Discard

    # ---- masks --------------------------------------------------------------------------------

    def load_mask_dialog(self) -> None:
        if not self.document.has_image:
            self.window.show_error("Open a picture first; a mask belongs to a picture.")
            return
        path, _ = QFileDialog.getOpenFileName(self.window, "Load mask", str(self.folder()), "Images (*.png *.jpg *.jpeg *.webp *.bmp *.tif *.tiff)")
        if path:
            self.load_mask_file(path)

    def load_mask_file(self, path: str) -> bool:
        try:
            mask = load_mask(path, self.document.size)
        except SandcastleError as exc:
            self.window.show_error(str(exc))
            return False
        self.document.replace_mask(mask, "Load mask")
        self.window.canvas.set_mask_visible(True)
        return True

    def save_mask_dialog(self) -> None:
        if not self.document.has_image:
            return
        stem = self.document.path.stem if self.document.path else "picture"
        path, _ = QFileDialog.getSaveFileName(self.window, "Save mask", str(self.folder() / f"{stem}-mask.png"), "PNG (*.png)")
        if path:
            try:
                save_mask(path, self.document.mask)
            except SandcastleError as exc:
                self.window.show_error(str(exc))  # a whole sentence naming the file and what to do
            except OSError as exc:
                self.window.show_error(f"The mask could not be saved ({exc}).")

    # ---- clipboard and drag and drop ------------------------------------------------------------

    def copy_picture(self) -> None:
        if self.document.has_image:
            QApplication.clipboard().setImage(to_qimage(self.document.image))
            self.window.statusBar().showMessage("Copied the picture", 3000)

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
            self.window.show_error("The clipboard holds no picture.")
            return
        if self.confirm_discard():
            self._show_pasted(from_qimage(image))
            self.window.statusBar().showMessage(f"Pasted a {image.width()}×{image.height()} picture", 4000)

    def picture_mime_data(self) -> QMimeData:
        """The picture as pixels and as a PNG file in a temporary folder (file managers want a file)."""
        name = (self.document.path.stem if self.document.path else "sandcastle") + ".png"
        path = Path(tempfile.mkdtemp(prefix="sandcastle-drag-")) / name
        save_image(str(path), self.document.image)
        data = QMimeData()
        data.setImageData(to_qimage(self.document.image))
        data.setUrls([QUrl.fromLocalFile(str(path))])
        return data

    def drag_picture_out(self) -> None:
        """Ctrl-drag on the canvas: carry the picture to another application."""
        if not self.document.has_image:
            return
        try:
            data = self.picture_mime_data()
        except (SandcastleError, OSError) as exc:
            self.window.show_error(f"The picture could not be prepared for dragging ({exc}).")
            return
        drag = QDrag(self.window)
        drag.setMimeData(data)
        thumb = QPixmap.fromImage(to_qimage(self.document.image)).scaled(128, 128, Qt.KeepAspectRatio, Qt.SmoothTransformation)
        drag.setPixmap(thumb)
        drag.exec(Qt.CopyAction)

    def accepts_drop(self, event) -> bool:
        return event.source() is None and (event.mimeData().hasUrls() or event.mimeData().hasImage())  # not our own drag out

    def drop(self, event) -> None:
        data = event.mimeData()
        urls = [u for u in data.urls() if u.isLocalFile()]
        if urls and self.confirm_discard():
            self.open_path(urls[0].toLocalFile(), background=True)
            event.acceptProposedAction()
        elif not urls and data.hasImage() and self.confirm_discard():  # pixels dragged from a browser or another editor
            self._show_pasted(from_qimage(data.imageData()))
            event.acceptProposedAction()
