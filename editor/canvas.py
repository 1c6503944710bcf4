"""The canvas: the picture, a translucent mask overlay, the live preview, the mask tools (brush,
rectangle, ellipse, lasso, fill; each with an erase mode), zoom and pan."""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QEvent, QPointF, QRect, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QImage, QPainter, QPainterPath, QPen, QPixmap, QPolygonF, QRadialGradient, QTransform
from PySide6.QtWidgets import QGraphicsItem, QGraphicsPathItem, QGraphicsPixmapItem, QGraphicsRectItem, QGraphicsScene, QGraphicsView

from editor.document import Document
from editor.qtimage import to_qimage

TOOLS = ("brush", "rectangle", "ellipse", "lasso", "fill")
SHAPES = ("rectangle", "ellipse", "lasso")
MIN_BRUSH, MAX_BRUSH = 1, 1000
FRAME_SNAP = 8  # uncrop sides move in steps the model's 8-pixel grid likes
OVERVIEW = 4  # zoomed out below 1/OVERVIEW, the picture is drawn from a copy this many times smaller
OVERVIEW_FROM = 2048  # pictures with a side at least this long get the overview copy


def checkerboard(size: int = 16) -> QPixmap:
    """The usual "nothing here yet" pattern for the new area of an uncrop."""
    tile = QPixmap(size * 2, size * 2)
    tile.fill(QColor(204, 204, 204))
    painter = QPainter(tile)
    painter.fillRect(0, 0, size, size, QColor(150, 150, 150))
    painter.fillRect(size, size, size, size, QColor(150, 150, 150))
    painter.end()
    return tile


class MaskOverlay(QGraphicsItem):
    """Draws the document's mask in colour. Only the exposed part is converted, at screen resolution,
    so repainting stays cheap on very large pictures."""

    def __init__(self, document: Document) -> None:
        super().__init__()
        self.document = document
        self.colour = QColor(255, 40, 80)
        self.opacity = 0.5
        self.setFlag(QGraphicsItem.ItemUsesExtendedStyleOption)

    def boundingRect(self) -> QRectF:
        w, h = self.document.size
        return QRectF(0, 0, w, h)

    def paint(self, painter: QPainter, option, widget=None) -> None:
        if self.document.mask_qimage is None:
            return
        sampled = sample_layer(self.document.mask, option.exposedRect, painter.worldTransform().m11())
        if sampled is None:
            return
        rect, pixels = sampled
        if not pixels.any():
            return
        part = QImage(pixels.data, pixels.shape[1], pixels.shape[0], pixels.strides[0], QImage.Format_Alpha8)
        tinted = QImage(part.size(), QImage.Format_ARGB32_Premultiplied)
        tinted.fill(self.colour)
        p = QPainter(tinted)
        p.setCompositionMode(QPainter.CompositionMode_DestinationIn)
        p.drawImage(0, 0, part)
        p.end()
        painter.setOpacity(self.opacity)
        painter.drawImage(QRectF(rect), tinted)


class HintsOverlay(QGraphicsItem):
    """The colour hints as painted: an RGBA layer drawn straight from the document's memory."""

    def __init__(self, document: Document) -> None:
        super().__init__()
        self.document = document
        self.setFlag(QGraphicsItem.ItemUsesExtendedStyleOption)

    def boundingRect(self) -> QRectF:
        return QRectF(0, 0, *self.document.size)

    def paint(self, painter: QPainter, option, widget=None) -> None:
        if self.document.hints_qimage is None:
            return
        sampled = sample_layer(self.document.hints, option.exposedRect, painter.worldTransform().m11())
        if sampled is not None and sampled[1][..., 3].any():
            rect, pixels = sampled
            painter.drawImage(QRectF(rect), QImage(pixels.data, pixels.shape[1], pixels.shape[0], pixels.strides[0], QImage.Format_RGBA8888))


def sample_layer(layer: np.ndarray, exposed: QRectF, scale: float) -> tuple[QRect, np.ndarray] | None:
    """The exposed part of a mask or hints array, as (rect, contiguous pixels). Zoomed out, every
    n-th pixel only: as many as the screen shows, read straight from the array (scaling the whole
    exposed part of a 48-megapixel layer would cost tens of milliseconds per repaint). None when
    nothing of the layer is exposed."""
    h, w = layer.shape[:2]
    rect = exposed.toAlignedRect().intersected(QRect(0, 0, w, h))
    if rect.isEmpty():
        return None
    step = max(1, int(1 / scale)) if scale > 0 else 1
    x0, y0 = rect.x() // step * step, rect.y() // step * step
    x1, y1 = rect.x() + rect.width(), rect.y() + rect.height()
    pixels = np.ascontiguousarray(layer[y0:y1:step, x0:x1:step])
    return QRect(x0, y0, pixels.shape[1] * step, pixels.shape[0] * step), pixels


class CanvasView(QGraphicsView):
    """Shows one document. The left button uses the current tool on the mask (or the hints layer);
    space-drag or the middle button pans; the wheel zooms at the cursor. A tablet's pressure scales
    the brush."""

    brushSizeChanged = Signal(int)
    zoomChanged = Signal(float)
    maskVisibleChanged = Signal(bool)
    hintsVisibleChanged = Signal(bool)
    regionChosen = Signal(int, int, int)  # attributes: a square x, y, size
    comparingChanged = Signal(bool)
    dragOutRequested = Signal()  # Ctrl-drag: carry the picture to another application

    def __init__(self, document: Document, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("canvas")
        self.document = document
        self.setScene(QGraphicsScene(self))
        self.setBackgroundBrush(QColor(48, 48, 52))
        self.setTransformationAnchor(QGraphicsView.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.AnchorViewCenter)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.StrongFocus)
        self.image_item = QGraphicsPixmapItem()
        self.image_item.setTransformationMode(Qt.SmoothTransformation)
        # Drawing a 48-megapixel pixmap scaled down to the screen takes ~45 ms, too slow for panning and
        # zooming; a quarter-size copy gives the same screen pixels at that zoom for a sixteenth of the work.
        self.overview_item = QGraphicsPixmapItem()
        self.overview_item.setTransformationMode(Qt.SmoothTransformation)
        self.overview_item.setTransform(QTransform.fromScale(OVERVIEW, OVERVIEW))
        self.overview_item.setVisible(False)
        self.mask_item = MaskOverlay(document)
        self.hints_item = HintsOverlay(document)
        self.preview_item = QGraphicsPixmapItem()
        self.preview_item.setTransformationMode(Qt.SmoothTransformation)
        self.preview_item.setVisible(False)
        self._preview_sheet: QPixmap | None = None  # uncrop: the passes' previews, added up
        self.before_item = QGraphicsPixmapItem()  # Compare with before: the last result's old pixels
        self.before_item.setVisible(False)
        self.comparing = False
        # The preview lies above the mask overlay: while generating, the person watches the region form.
        for z, item in enumerate((self.image_item, self.mask_item, self.hints_item, self.before_item, self.preview_item)):
            item.setZValue(z)
            self.scene().addItem(item)
        self.overview_item.setZValue(self.image_item.zValue())
        self.scene().addItem(self.overview_item)
        self.zoomChanged.connect(self._choose_level)
        # The uncrop frame: the picture-to-be, drawn as a checkerboard under the picture.
        self.frame_item = QGraphicsRectItem()
        self.frame_item.setBrush(QBrush(checkerboard()))
        self.frame_item.setPen(QPen(QColor(255, 200, 0), 0, Qt.DashLine))
        self.frame_item.setZValue(-1)
        self.frame_item.setVisible(False)
        self.scene().addItem(self.frame_item)
        self.frame_mode = False  # True for the Uncrop task: dragging moves the frame's sides
        self.region_mode = False  # True for Attributes: dragging marks a square face region
        self.region_item = QGraphicsRectItem()
        self.region_item.setPen(QPen(QColor(80, 220, 120), 0, Qt.DashLine))
        self.region_item.setZValue(10)
        self.region_item.setVisible(False)
        self.scene().addItem(self.region_item)
        self._region_start: QPointF | None = None
        self._frame_side: str | None = None
        self.shape_item = QGraphicsPathItem()  # the outline of a rectangle, ellipse or lasso being drawn
        self.shape_item.setPen(QPen(QColor(255, 255, 255), 0, Qt.DashLine))
        self.shape_item.setZValue(11)
        self.scene().addItem(self.shape_item)
        self._shape_points: list[QPointF] = []
        self._shape_removes = False
        self.tool = "brush"
        self.brush_size = 40
        self.hardness = 1.0  # 1: a hard edge; lower: the brush fades over its outer part
        self.pressure = 1.0  # from a tablet, when Qt reports one
        self.erasing = False
        self.layer = "mask"  # what the brush paints: the mask, or colour hints (colorize)
        self.hint_colour = QColor(40, 120, 255)
        self._stroke_last: QPointF | None = None
        self._stroke_rect = QRect()
        self._space_held = False
        self._panning = False
        self._cursor_pos: QPointF | None = None
        document.loaded.connect(self._on_loaded)
        document.resized.connect(self._on_loaded)
        document.frameChanged.connect(self._on_frame_changed)
        document.imageChanged.connect(self._on_image_changed)
        document.maskChanged.connect(lambda rect: self.mask_item.update(QRectF(rect)))
        document.hintsChanged.connect(lambda rect: self.hints_item.update(QRectF(rect)))

    # ---- document ---------------------------------------------------------------------------

    def _on_loaded(self) -> None:
        image = to_qimage(self.document.image)
        self.image_item.setPixmap(QPixmap.fromImage(image))
        big = max(image.width(), image.height()) >= OVERVIEW_FROM
        self.overview_item.setPixmap(QPixmap.fromImage(image.scaled(image.width() // OVERVIEW, image.height() // OVERVIEW,
                                                                    Qt.IgnoreAspectRatio, Qt.SmoothTransformation)) if big else QPixmap())
        self.mask_item.prepareGeometryChange()
        self.hints_item.prepareGeometryChange()
        self._on_frame_changed()
        self.clear_preview()
        self.fit()

    def frame_rect(self) -> QRectF:
        left, top, right, bottom = self.document.frame
        w, h = self.document.size
        return QRectF(-left, -top, w + left + right, h + top + bottom)

    def _on_frame_changed(self) -> None:
        rect = self.frame_rect()
        self.frame_item.setRect(rect)
        self.frame_item.setVisible(self.frame_mode and any(self.document.frame))
        self.scene().setSceneRect(rect.united(QRectF(0, 0, *self.document.size)))

    def set_region_mode(self, on: bool) -> None:
        self.region_mode = on
        self.region_item.setVisible(on and not self.region_item.rect().isEmpty())

    def _square(self, a: QPointF, b: QPointF) -> tuple[int, int, int]:
        """The square from a to b (its side the larger of the two spans), kept inside the picture."""
        w, h = self.document.size
        side = int(min(max(abs(b.x() - a.x()), abs(b.y() - a.y())), w, h))
        x = int(a.x() if b.x() >= a.x() else a.x() - side)
        y = int(a.y() if b.y() >= a.y() else a.y() - side)
        return max(0, min(x, w - side)), max(0, min(y, h - side)), side

    def set_frame_mode(self, on: bool) -> None:
        self.frame_mode = on
        self._on_frame_changed()
        self.viewport().setCursor(Qt.SizeAllCursor if on else Qt.CrossCursor)

    def _on_image_changed(self, rect: QRect) -> None:
        # Repaint only the changed rectangle of the pixmap instead of converting the whole picture.
        x, y, w, h = rect.x(), rect.y(), rect.width(), rect.height()
        pixmap = self.image_item.pixmap()
        painter = QPainter(pixmap)
        painter.setCompositionMode(QPainter.CompositionMode_Source)
        painter.drawImage(x, y, to_qimage(self.document.image[y : y + h, x : x + w]))
        painter.end()
        self.image_item.setPixmap(pixmap)
        if not self.overview_item.pixmap().isNull():
            # The same rectangle, widened to whole overview pixels, scaled down into the overview.
            x0, y0 = x // OVERVIEW * OVERVIEW, y // OVERVIEW * OVERVIEW
            x1, y1 = min(-(-(x + w) // OVERVIEW) * OVERVIEW, self.document.size[0]), min(-(-(y + h) // OVERVIEW) * OVERVIEW, self.document.size[1])
            part = to_qimage(self.document.image[y0:y1, x0:x1]).scaled(max(1, (x1 - x0) // OVERVIEW), max(1, (y1 - y0) // OVERVIEW),
                                                                      Qt.IgnoreAspectRatio, Qt.SmoothTransformation)
            overview = self.overview_item.pixmap()
            painter = QPainter(overview)
            painter.setCompositionMode(QPainter.CompositionMode_Source)
            painter.drawImage(x0 // OVERVIEW, y0 // OVERVIEW, part)
            painter.end()
            self.overview_item.setPixmap(overview)

    def _choose_level(self, zoom: float) -> None:
        use_overview = zoom < 1 / OVERVIEW and not self.overview_item.pixmap().isNull()
        self.overview_item.setVisible(use_overview)
        self.image_item.setVisible(not use_overview)

    # ---- preview ----------------------------------------------------------------------------

    def show_preview(self, image: QImage, box: tuple[int, int, int, int], offset: tuple[int, int] = (0, 0), keep: bool = False) -> None:
        """Show a step preview over `box` of the result picture, whose top-left lies at -offset on the
        canvas (uncrop). With `keep`, earlier previews stay (the passes of an uncrop add up to the
        whole new area). Not part of the document; never undone."""
        x, y, w, h = box
        x, y = x - offset[0], y - offset[1]
        if keep:
            frame = self.frame_rect().toAlignedRect()
            if self._preview_sheet is None or self._preview_sheet.size() != frame.size():
                self._preview_sheet = QPixmap(frame.size())
                self._preview_sheet.fill(Qt.transparent)
            painter = QPainter(self._preview_sheet)
            painter.setRenderHint(QPainter.SmoothPixmapTransform)
            painter.drawImage(QRectF(x - frame.x(), y - frame.y(), w, h), image)
            painter.end()
            self.preview_item.setPixmap(self._preview_sheet)
            self.preview_item.setPos(frame.x(), frame.y())
            self.preview_item.setTransform(QTransform())
        else:
            self.preview_item.setPixmap(QPixmap.fromImage(image))
            self.preview_item.setPos(x, y)
            self.preview_item.setTransform(QTransform.fromScale(w / max(1, image.width()), h / max(1, image.height())))
        self._show_comparison()

    def clear_preview(self) -> None:
        self._preview_sheet = None
        self.preview_item.setVisible(False)
        self.preview_item.setPixmap(QPixmap())
        self._show_comparison()

    def set_before(self, image: QImage | None, box: tuple[int, int, int, int] | None) -> None:
        """The pixels the last applied result replaced (shown while comparing), or None."""
        self.before_item.setPixmap(QPixmap.fromImage(image) if image is not None else QPixmap())
        if box is not None:
            self.before_item.setPos(box[0], box[1])
        self._show_comparison()

    def set_comparing(self, on: bool) -> None:
        """Before/after: hide the version on show (the picture underneath is the before), or, with
        none on show, show the pixels the last result replaced."""
        if on != self.comparing:
            self.comparing = on
            self._show_comparison()
            self.comparingChanged.emit(on)

    def _show_comparison(self) -> None:
        showing_version = not self.preview_item.pixmap().isNull()
        self.preview_item.setVisible(showing_version and not self.comparing)
        self.before_item.setVisible(self.comparing and not showing_version and not self.before_item.pixmap().isNull())

    def set_mask_visible(self, visible: bool) -> None:
        if visible != self.mask_item.isVisible():
            self.mask_item.setVisible(visible)
            self.maskVisibleChanged.emit(visible)

    def set_hints_visible(self, visible: bool) -> None:
        if visible != self.hints_item.isVisible():
            self.hints_item.setVisible(visible)
            self.hintsVisibleChanged.emit(visible)

    def set_hints_opacity(self, opacity: float) -> None:
        self.hints_item.setOpacity(opacity)

    # ---- zoom -------------------------------------------------------------------------------

    @property
    def zoom(self) -> float:
        return self.transform().m11()

    def set_zoom(self, factor: float) -> None:
        factor = max(0.01, min(64.0, factor))
        self.setTransform(QTransform.fromScale(factor, factor))
        self.zoomChanged.emit(factor)
        self.viewport().update()

    def fit(self) -> None:
        if self.document.has_image:
            self.fitInView(self.scene().sceneRect(), Qt.KeepAspectRatio)
            self.zoomChanged.emit(self.zoom)

    def actual_size(self) -> None:
        self.set_zoom(1.0)

    def zoom_by(self, steps: float) -> None:
        self.set_zoom(self.zoom * (1.25**steps))

    def wheelEvent(self, event) -> None:
        self.zoom_by(event.angleDelta().y() / 120.0)

    # ---- brush ------------------------------------------------------------------------------

    def set_brush_size(self, size: int) -> None:
        size = max(MIN_BRUSH, min(MAX_BRUSH, int(size)))
        if size != self.brush_size:
            self.brush_size = size
            self.brushSizeChanged.emit(size)
            self.viewport().update()

    def smaller_brush(self) -> None:
        self.set_brush_size(round(self.brush_size / 1.2))

    def larger_brush(self) -> None:
        self.set_brush_size(max(self.brush_size + 1, round(self.brush_size * 1.2)))

    def set_tool(self, tool: str) -> None:
        assert tool in TOOLS, tool
        self.tool = tool
        self.viewport().update()

    def _layer_painter(self) -> QPainter:
        painter = QPainter(self.document.layer_qimage(self.layer))
        painter.setRenderHint(QPainter.Antialiasing)
        if self.erasing:
            painter.setCompositionMode(QPainter.CompositionMode_DestinationOut)
        return painter

    @property
    def _ink(self) -> QColor:
        return QColor(self.hint_colour) if self.layer == "hints" else QColor(0, 0, 0, 255)

    def _paint_segment(self, a: QPointF, b: QPointF) -> None:
        size = max(1.0, self.brush_size * self.pressure)
        painter = self._layer_painter()
        if self.hardness >= 1.0:
            painter.setPen(QPen(self._ink, size, Qt.SolidLine, Qt.RoundCap, Qt.RoundJoin))
            if a == b:
                painter.drawPoint(a)
            else:
                painter.drawLine(a, b)
        else:
            # A soft brush: round dabs whose opacity falls off beyond `hardness` of the radius, a
            # quarter of a radius apart so the stroke is even.
            radius = size / 2
            gradient = QRadialGradient(0, 0, radius)
            solid, clear = self._ink, QColor(self._ink)
            clear.setAlpha(0)
            gradient.setColorAt(0, solid)
            gradient.setColorAt(max(0.0, min(0.99, self.hardness)), solid)
            gradient.setColorAt(1, clear)
            painter.setPen(Qt.NoPen)
            painter.setBrush(QBrush(gradient))
            dabs = max(1, math.ceil(math.hypot(b.x() - a.x(), b.y() - a.y()) / max(1.0, radius / 4)))
            for i in range(dabs + 1 if a != b else 1):
                t = i / dabs
                centre = QPointF(a.x() + (b.x() - a.x()) * t, a.y() + (b.y() - a.y()) * t)
                painter.save()
                painter.translate(centre)
                painter.drawEllipse(QPointF(0, 0), radius, radius)
                painter.restore()
        painter.end()
        r = size / 2 + 2
        self._mark_dirty(QRectF(a, b).normalized().adjusted(-r, -r, r, r).toAlignedRect())

    def _mark_dirty(self, dirty: QRect) -> None:
        self._stroke_rect = self._stroke_rect.united(dirty)
        self.document.notify(self.layer, dirty)

    def _shape_path(self, end: QPointF) -> QPainterPath:
        path = QPainterPath()
        start = self._shape_points[0]
        if self.tool == "rectangle":
            path.addRect(QRectF(start, end).normalized())
        elif self.tool == "ellipse":
            path.addEllipse(QRectF(start, end).normalized())
        else:
            path.addPolygon(QPolygonF([*self._shape_points, end]))
            path.closeSubpath()
        return path

    def _fill_shape(self, path: QPainterPath, removing: bool) -> None:
        painter = self._layer_painter()
        if removing:
            painter.setCompositionMode(QPainter.CompositionMode_DestinationOut)
        painter.setPen(Qt.NoPen)
        painter.setBrush(self._ink)
        painter.drawPath(path)
        painter.end()
        self._mark_dirty(path.boundingRect().toAlignedRect().adjusted(-2, -2, 2, 2))

    def viewportEvent(self, event) -> bool:
        # A tablet's pen: remember its pressure and let Qt turn the event into the mouse event that paints.
        if event.type() in (QEvent.TabletPress, QEvent.TabletMove):
            self.pressure = max(0.05, event.pressure()) if event.pointerType() != event.pointerType().Unknown else 1.0
            event.ignore()
            return False
        if event.type() == QEvent.TabletRelease:
            event.ignore()
            return False
        return super().viewportEvent(event)

    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.MiddleButton or (event.button() == Qt.LeftButton and self._space_held):
            self._start_pan(event)
            return
        if event.button() == Qt.LeftButton and self.document.has_image and event.modifiers() & Qt.ControlModifier:
            self.dragOutRequested.emit()
            return
        if event.button() == Qt.LeftButton and self.document.has_image and self.region_mode:
            self._region_start = self.mapToScene(event.position().toPoint())
            return
        if event.button() == Qt.LeftButton and self.document.has_image and self.frame_mode:
            self._frame_side = self._side_at(self.mapToScene(event.position().toPoint()))
            return
        if event.button() == Qt.LeftButton and self.document.has_image:
            pos = self.mapToScene(event.position().toPoint())
            if self.layer == "mask":
                self.set_mask_visible(True)  # painting on a hidden mask would be painting blind
            else:
                self.set_hints_visible(True)
            removing = bool(event.modifiers() & Qt.AltModifier)
            if self.tool == "fill" and self.layer == "mask":
                w, h = self.document.size
                if 0 <= pos.x() < w and 0 <= pos.y() < h:
                    self.document.fill_mask_at(int(pos.x()), int(pos.y()), 0 if removing or self.erasing else 255)
                return
            self.document.begin_mask_edit(self.layer)
            self._stroke_rect = QRect()
            if self.tool in SHAPES:
                self._shape_points, self._shape_removes = [pos], removing
                return
            self._stroke_last = pos
            self._paint_segment(pos, pos)
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:
        if self._panning:
            delta = event.position() - self._pan_from
            self._pan_from = event.position()
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - int(delta.x()))
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - int(delta.y()))
            return
        self._move_cursor(self.mapToScene(event.position().toPoint()))
        if self._region_start is not None:
            x, y, side = self._square(self._region_start, self._cursor_pos)
            self.region_item.setRect(QRectF(x, y, side, side))
            self.region_item.setVisible(True)
            return
        if self._frame_side is not None:
            self._drag_frame(self._frame_side, self._cursor_pos)
            return
        if self._shape_points:
            if self.tool == "lasso":
                self._shape_points.append(self._cursor_pos)
            self.shape_item.setPath(self._shape_path(self._cursor_pos))
        if self._stroke_last is not None:
            self._paint_segment(self._stroke_last, self._cursor_pos)
            self._stroke_last = self._cursor_pos
        super().mouseMoveEvent(event)

    def _cursor_rect(self) -> QRect:
        """Where the brush outline is drawn on screen (for repainting only there)."""
        if self._cursor_pos is None:
            return QRect()
        centre = self.mapFromScene(self._cursor_pos)
        r = int(self.brush_size / 2 * self.zoom) + 4
        return QRect(centre.x() - r, centre.y() - r, 2 * r, 2 * r)

    def _move_cursor(self, pos: QPointF | None) -> None:
        # Repaint only where the outline was and where it goes: a full repaint of a zoomed-out
        # 48-megapixel picture on every mouse move would make the brush lag.
        old = self._cursor_rect()
        self._cursor_pos = pos
        self.viewport().update(old.united(self._cursor_rect()))

    def mouseReleaseEvent(self, event) -> None:
        if self._panning and event.button() in (Qt.MiddleButton, Qt.LeftButton):
            self._end_pan(event)
            return
        if event.button() == Qt.LeftButton and self._region_start is not None:
            x, y, side = self._square(self._region_start, self.mapToScene(event.position().toPoint()))
            self._region_start = None
            if side >= 8:
                self.region_item.setRect(QRectF(x, y, side, side))
                self.regionChosen.emit(x, y, side)
            return
        if event.button() == Qt.LeftButton and self._frame_side is not None:
            self._frame_side = None
            return
        if event.button() == Qt.LeftButton and self._shape_points:
            path = self._shape_path(self.mapToScene(event.position().toPoint()))
            self._shape_points = []
            self.shape_item.setPath(QPainterPath())
            removing = self.erasing or self._shape_removes
            self._fill_shape(path, removing)
            self.document.end_mask_edit(self._stroke_rect, f"{'Remove' if removing else 'Mask'} {self.tool}")
            return
        if event.button() == Qt.LeftButton and self._stroke_last is not None:
            self._stroke_last = None
            self.pressure = 1.0
            what = "colour hint" if self.layer == "hints" else "mask"
            self.document.end_mask_edit(self._stroke_rect, f"Erase {what}" if self.erasing else f"Paint {what}")
            return
        super().mouseReleaseEvent(event)

    def _side_at(self, pos: QPointF) -> str:
        """The side of the picture a press belongs to: outside it, the side it is beyond; inside, the nearest edge."""
        w, h = self.document.size
        beyond = {"left": -pos.x(), "right": pos.x() - w, "top": -pos.y(), "bottom": pos.y() - h}
        return max(beyond, key=beyond.get)  # the side it is farthest beyond (inside: the nearest edge)

    def _drag_frame(self, side: str, pos: QPointF) -> None:
        w, h = self.document.size
        beyond = {"left": -pos.x(), "right": pos.x() - w, "top": -pos.y(), "bottom": pos.y() - h}[side]
        value = max(0, int(round(beyond / FRAME_SNAP)) * FRAME_SNAP)
        sides = dict(zip(("left", "top", "right", "bottom"), self.document.frame))
        sides[side] = value
        self.document.set_frame(tuple(sides.values()))

    def leaveEvent(self, event) -> None:
        self._move_cursor(None)
        super().leaveEvent(event)

    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:
        if (self._cursor_pos is not None and self.document.has_image and not self._panning and not self.frame_mode and not self.region_mode
                and self.tool == "brush"):
            painter.setRenderHint(QPainter.Antialiasing)
            r = self.brush_size / 2
            for colour, width in ((QColor(0, 0, 0, 160), 3), (QColor(255, 255, 255, 220), 1)):
                painter.setPen(QPen(colour, width / max(self.zoom, 1e-3)))
                painter.drawEllipse(self._cursor_pos, r, r)

    # ---- pan ----------------------------------------------------------------------------------

    def _start_pan(self, event) -> None:
        self._panning = True
        self._pan_from = event.position()
        self.viewport().setCursor(Qt.ClosedHandCursor)

    def _end_pan(self, event) -> None:
        self._panning = False
        self.viewport().setCursor(Qt.OpenHandCursor if self._space_held else Qt.CrossCursor)

    def keyPressEvent(self, event) -> None:
        if event.key() == Qt.Key_Backslash and not event.isAutoRepeat():
            self.set_comparing(True)
            return
        if event.key() == Qt.Key_Space and not event.isAutoRepeat():
            self._space_held = True
            self.viewport().setCursor(Qt.OpenHandCursor)
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event) -> None:
        if event.key() == Qt.Key_Backslash and not event.isAutoRepeat():
            self.set_comparing(False)
            return
        if event.key() == Qt.Key_Space and not event.isAutoRepeat():
            self._space_held = False
            self.viewport().setCursor(Qt.CrossCursor)
            return
        super().keyReleaseEvent(event)
