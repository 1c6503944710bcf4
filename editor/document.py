"""The open document: picture, mask and undo history. Widgets show and change it; they keep no copy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, QRect, Signal
from PySide6.QtGui import QImage, QUndoCommand, QUndoStack

from engines.services import ColourSource, embed, fill_mask_region, grow_mask, save_image


class RegionCommand(QUndoCommand):
    """One undo step that swaps a rectangle of an array between its before and after pixels."""

    def __init__(self, text: str, target: str, document: "Document", rect: QRect, before: np.ndarray, after: np.ndarray) -> None:
        super().__init__(text)
        self.target, self.document, self.rect = target, document, QRect(rect)
        self.before, self.after = before, after
        self._first = True

    def _write(self, pixels: np.ndarray) -> None:
        r = self.rect
        array = getattr(self.document, self.target)
        array[r.y() : r.y() + r.height(), r.x() : r.x() + r.width()] = pixels
        self.document.notify(self.target, r)

    def redo(self) -> None:
        if self._first:  # the change is already on the document when the command is pushed
            self._first = False
            return
        self._write(self.after)

    def undo(self) -> None:
        self._write(self.before)


class ResizeCommand(QUndoCommand):
    """One undo step that swaps the whole picture and mask for ones of another size (uncrop)."""

    def __init__(self, text: str, document: "Document", before: tuple, after: tuple) -> None:
        super().__init__(text)
        self.document, self.before, self.after = document, before, after
        self._first = True

    def redo(self) -> None:
        if self._first:
            self._first = False
            return
        self.document._swap_pixels(*self.after)

    def undo(self) -> None:
        self.document._swap_pixels(*self.before)


class Document(QObject):
    """Observable state of one open picture.

    `mask` is edited in place by the canvas (it wraps the same memory in a QImage); every edit
    ends in one undo step.
    """

    loaded = Signal()  # a new picture (the size may have changed)
    imageChanged = Signal(QRect)
    maskChanged = Signal(QRect)
    hintsChanged = Signal(QRect)
    pathChanged = Signal()
    resized = Signal()  # the picture changed size in place (uncrop, or undoing it)
    frameChanged = Signal()  # the uncrop frame: pixels to add on each side
    generationChanged = Signal()  # the task, prompt, sampling settings or an engine parameter

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.image: np.ndarray | None = None
        self.alpha: np.ndarray | None = None  # the picture's transparency, restored on save
        # The file's own colours when it is not sRGB: `image` is an sRGB view of them, and a save writes the
        # file's own values back wherever the view is unchanged, with the file's profile.
        self.colour: ColourSource | None = None
        self.mask: np.ndarray = np.zeros((0, 0), np.uint8)
        self.mask_qimage: QImage | None = None
        self.hints: np.ndarray = np.zeros((0, 0, 4), np.uint8)
        self.hints_qimage: QImage | None = None  # the canvas paints the layers before any picture is open
        self.path: Path | None = None
        self.confirmed_path: Path | None = None  # where Save may write without asking again
        self.version = 0  # bumps whenever the picture's pixels change
        self.frame = (0, 0, 0, 0)  # uncrop: pixels to add left, top, right, bottom
        self.undo_stack = QUndoStack(self)
        self._mask_before: np.ndarray | None = None
        self.mask_edits = 0  # counts every change of the mask or hints, for autosave to notice
        # What the panel shows and edits: task, prompt, negative, guidance, steps, seed, versions, and
        # per task its strength and the engine's own parameters. Plain JSON values (autosave writes them).
        self.generation: dict[str, Any] = {"strength": {}, "params": {}}

    # ---- whole picture ----------------------------------------------------------------------

    def set_image(self, image: np.ndarray, path: Path | None = None, alpha: np.ndarray | None = None,
                  colour: ColourSource | None = None) -> None:
        self.image = np.array(image, dtype=np.uint8, order="C")  # our own writable copy
        self.alpha = None if alpha is None else np.array(alpha, dtype=np.uint8)  # kept aside: engines work on RGB
        self.colour = colour
        self._set_mask(np.zeros(image.shape[:2], np.uint8))
        self.path, self.confirmed_path = path, None
        self.undo_stack.clear()
        self.version += 1
        self.set_frame((0, 0, 0, 0))
        self.loaded.emit()
        self.pathChanged.emit()

    def _set_mask(self, mask: np.ndarray, hints: np.ndarray | None = None) -> None:
        # The canvas paints straight into this memory through the QImages that wrap it.
        self.mask = np.ascontiguousarray(mask)
        h, w = self.mask.shape
        self.mask_qimage = QImage(self.mask.data, w, h, self.mask.strides[0], QImage.Format_Alpha8)
        self.hints = np.ascontiguousarray(hints) if hints is not None else np.zeros((h, w, 4), np.uint8)
        self.hints_qimage = QImage(self.hints.data, w, h, self.hints.strides[0], QImage.Format_RGBA8888)

    def set_generation(self, **values: Any) -> None:
        changed = {k: v for k, v in values.items() if self.generation.get(k) != v}
        if changed:
            self.generation.update(changed)
            self.generationChanged.emit()

    def set_task_value(self, group: str, task: str, name: str | None, value: Any) -> None:
        """A per-task value: `group` "strength" or "words" (name None), or "params" (an engine parameter's name)."""
        per_task = self.generation.setdefault(group, {})
        if name is None:
            if per_task.get(task) != value:
                per_task[task] = value
                self.generationChanged.emit()
            return
        params = per_task.setdefault(task, {})
        if params.get(name) != value:
            params[name] = value
            self.generationChanged.emit()

    def task_params(self, task: str) -> dict[str, Any]:
        return dict(self.generation.get("params", {}).get(task, {}))

    def restore_generation(self, state: dict[str, Any]) -> None:
        """Put back autosaved settings; values of the wrong type are dropped (the file may be damaged)."""
        kinds = {"task": str, "prompt": str, "negative": str, "guidance": (int, float), "steps": int, "seed": int, "versions": int}
        clean: dict[str, Any] = {k: v for k, v in state.items() if k in kinds and isinstance(v, kinds[k]) and not isinstance(v, bool)}
        if isinstance(state.get("seed_locked"), bool):
            clean["seed_locked"] = state["seed_locked"]
        words = state.get("words")
        clean["words"] = {task: w for task, w in words.items() if isinstance(task, str) and isinstance(w, dict)
                          and isinstance(w.get("prompt"), str) and isinstance(w.get("negative"), str)
                          and isinstance(w.get("guidance"), (int, float)) and not isinstance(w.get("guidance"), bool)} \
            if isinstance(words, dict) else {}
        for group in ("strength", "params"):
            value = state.get(group)
            clean[group] = {k: v for k, v in value.items() if isinstance(k, str)} if isinstance(value, dict) else {}
        self.generation = {**self.generation, **clean}
        self.generationChanged.emit()

    def restore_layers(self, mask: np.ndarray, hints: np.ndarray | None) -> None:
        """Put back an autosaved mask and hints (not an undo step: like opening a file)."""
        self._set_mask(mask.copy(), None if hints is None else hints.copy())
        self.notify("mask", self.full_rect())
        self.notify("hints", self.full_rect())

    def layer_qimage(self, layer: str) -> QImage:
        return self.mask_qimage if layer == "mask" else self.hints_qimage

    @property
    def has_hints(self) -> bool:
        return bool(self.hints[..., 3].any())

    def set_frame(self, sides: tuple[int, int, int, int]) -> None:
        sides = tuple(max(0, int(v)) for v in sides)
        if sides != self.frame:
            self.frame = sides
            self.frameChanged.emit()

    def apply_resized(self, image: np.ndarray, offset: tuple[int, int], text: str) -> None:
        """Replace the picture by a larger one that contains it at `offset` (uncrop), as one undo step.
        The mask moves with the picture; the frame is used up."""
        size = image.shape[:2]
        mask, hints = embed(self.mask, size, offset, 0), embed(self.hints, size, offset, 0)
        alpha = None if self.alpha is None else embed(self.alpha, size, offset, 255)  # the new area is generated, so opaque
        colour = None if self.colour is None else self.colour.moved(offset)  # the file's own pixels now lie at the offset
        before = (self.image, self.mask.copy(), self.hints.copy(), self.frame, self.alpha, self.colour)
        after = (np.array(image, dtype=np.uint8, order="C"), mask, hints, (0, 0, 0, 0), alpha, colour)
        self._swap_pixels(*after)
        self.undo_stack.push(ResizeCommand(text, self, before, after))

    def _swap_pixels(self, image: np.ndarray, mask: np.ndarray, hints: np.ndarray, frame: tuple[int, int, int, int],
                     alpha: np.ndarray | None, colour: ColourSource | None) -> None:
        self.image = image.copy()  # the command keeps its own copy, whatever later steps do in place
        self.alpha = None if alpha is None else alpha.copy()
        self.colour = colour  # never changed in place: one record can serve both sides of the undo step
        self._set_mask(mask.copy(), hints.copy())
        self.version += 1
        self.set_frame(frame)
        self.resized.emit()

    def save(self, path: str | Path) -> None:
        save_image(str(path), self.image, self.alpha, self.colour)
        self.path = self.confirmed_path = Path(path)
        self.undo_stack.setClean()
        self.pathChanged.emit()

    @property
    def has_image(self) -> bool:
        return self.image is not None

    @property
    def size(self) -> tuple[int, int]:
        return (0, 0) if self.image is None else (self.image.shape[1], self.image.shape[0])

    @property
    def modified(self) -> bool:
        return self.image is not None and not self.undo_stack.isClean()

    def full_rect(self) -> QRect:
        return QRect(0, 0, *self.size)

    def notify(self, target: str, rect: QRect) -> None:
        if target == "image":
            self.version += 1
            self.imageChanged.emit(QRect(rect))
        elif target == "hints":
            self.mask_edits += 1
            self.hintsChanged.emit(QRect(rect))
        else:
            self.mask_edits += 1
            self.maskChanged.emit(QRect(rect))

    # ---- mask edits -------------------------------------------------------------------------

    def begin_mask_edit(self, layer: str = "mask") -> None:
        """Start an edit of the mask or the colour-hints layer (painted in place by the canvas)."""
        self._edit_layer = layer
        self._mask_before = getattr(self, layer).copy()

    def end_mask_edit(self, rect: QRect, text: str) -> None:
        """Close an edit started by begin_mask_edit: the pixels changed inside `rect` become one undo step."""
        before, self._mask_before = self._mask_before, None
        layer = getattr(self, "_edit_layer", "mask")
        rect = rect.intersected(self.full_rect())
        if before is None or rect.isEmpty():
            return
        sl = np.s_[rect.y() : rect.y() + rect.height(), rect.x() : rect.x() + rect.width()]
        now = getattr(self, layer)
        if np.array_equal(before[sl], now[sl]):
            return
        self.undo_stack.push(RegionCommand(text, layer, self, rect, before[sl].copy(), now[sl].copy()))

    def clear_mask(self) -> None:
        self._clear("mask", "Clear mask")

    def replace_mask(self, mask: np.ndarray, text: str) -> None:
        """Put a whole new mask in place as one undo step (nothing when it is the same)."""
        if mask.shape != self.mask.shape:
            return
        changed = mask != self.mask
        rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
        if not len(rows):
            return
        rect = QRect(int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))  # the undo step keeps only this
        self.begin_mask_edit("mask")
        self.mask[:] = mask
        self.notify("mask", rect)
        self.end_mask_edit(rect, text)

    def invert_mask(self) -> None:
        self.replace_mask(255 - self.mask, "Invert mask")

    def grow_mask(self, pixels: int) -> None:
        """Grow (pixels > 0) or shrink (< 0) the mask by a distance in pixels."""
        if pixels:
            self.replace_mask(grow_mask(self.mask, pixels), f"Grow mask by {pixels} px" if pixels > 0 else f"Shrink mask by {-pixels} px")

    def fill_mask_at(self, x: int, y: int, value: int) -> None:
        """Bucket fill: the connected area around (x, y) becomes `value` (255 paints, 0 erases)."""
        self.replace_mask(fill_mask_region(self.mask, x, y, value), "Fill mask" if value else "Empty mask area")

    def clear_hints(self) -> None:
        self._clear("hints", "Clear colour hints")

    def _clear(self, layer: str, text: str) -> None:
        if not getattr(self, layer).any():
            return
        self.begin_mask_edit(layer)
        getattr(self, layer)[:] = 0
        self.notify(layer, self.full_rect())
        self.end_mask_edit(self.full_rect(), text)

    # ---- results ----------------------------------------------------------------------------

    def apply_result(self, image: np.ndarray, box: tuple[int, int, int, int], text: str) -> None:
        """Put a generated picture on the document as one undo step (only `box` is stored)."""
        x, y, w, h = box
        rect = QRect(x, y, w, h)
        before = self.image[y : y + h, x : x + w].copy()
        after = image[y : y + h, x : x + w].copy()
        self.image[y : y + h, x : x + w] = after
        self.notify("image", rect)
        self.undo_stack.push(RegionCommand(text, "image", self, rect, before, after))
