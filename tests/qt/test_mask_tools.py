"""The mask tools as a person uses them: each shape lands where it was drawn, as one undo step."""

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor
from PySide6.QtTest import QTest

from tests.qt.conftest import paint_stroke


def drag(win, points, modifiers=Qt.NoModifier):
    view, vp = win.canvas, win.canvas.viewport()
    at = [view.mapFromScene(x, y) for x, y in points]
    QTest.mousePress(vp, Qt.LeftButton, modifiers, at[0])
    for p in at[1:]:
        QTest.mouseMove(vp, p)
    QTest.mouseRelease(vp, Qt.LeftButton, modifiers, at[-1])


@pytest.fixture
def doc(window):
    window.canvas.actual_size()  # one screen pixel per picture pixel: shapes land exactly
    window.canvas.centerOn(256, 256)
    return window.document


def test_rectangle_masks_what_was_dragged_and_alt_removes(window, doc):
    window.menu_actions.rectangle.trigger()
    drag(window, [(50, 60), (100, 90), (150, 120)])
    assert doc.mask[65:115, 55:145].min() == 255 and doc.mask[:55].max() == 0 and doc.mask[:, 156:].max() == 0
    assert doc.undo_stack.count() == 1 and doc.undo_stack.text(0) == "Mask rectangle"
    drag(window, [(80, 70), (120, 110)], Qt.AltModifier)
    assert doc.mask[75:105, 85:115].max() == 0 and doc.mask[65, 60] == 255
    doc.undo_stack.undo()
    assert doc.mask[90, 100] == 255


def test_ellipse_and_lasso_fill_their_outline(window, doc):
    window.menu_actions.ellipse.trigger()
    drag(window, [(100, 100), (200, 200)])
    assert doc.mask[150, 150] == 255 and doc.mask[150, 105] == 255 and doc.mask[103, 103] == 0  # the corner lies outside
    window.menu_actions.lasso.trigger()
    drag(window, [(300, 300), (400, 300), (350, 400)])  # a triangle, closed on release
    assert doc.mask[330, 350] == 255 and doc.mask[390, 310] == 0 and doc.mask[390, 350] > 0
    assert doc.undo_stack.count() == 2


def test_fill_fills_an_enclosed_area_and_alt_empties_a_painted_one(window, doc):
    ring = np.zeros_like(doc.mask)
    ring[100:300, 100:300] = 255
    ring[110:290, 110:290] = 0
    doc.replace_mask(ring, "ring")
    window.menu_actions.fill.trigger()
    drag(window, [(200, 200)])
    assert doc.mask[100:300, 100:300].min() == 255 and doc.mask[:100].max() == 0 and doc.mask[400, 400] == 0
    drag(window, [(105, 105)], Qt.AltModifier)
    assert doc.mask.max() == 0
    assert doc.undo_stack.count() == 3


def test_invert_grow_and_shrink_are_one_step_each(window, doc):
    square = np.zeros_like(doc.mask)
    square[200:250, 200:250] = 255
    doc.replace_mask(square, "square")
    doc.grow_mask(10)
    rows = np.flatnonzero(doc.mask.any(1))
    assert (rows[0], rows[-1]) == (190, 259)
    doc.grow_mask(-15)
    rows = np.flatnonzero(doc.mask.any(1))
    assert (rows[0], rows[-1]) == (205, 244)
    doc.invert_mask()
    assert doc.mask[0, 0] == 255 and doc.mask[220, 220] == 0
    assert [doc.undo_stack.text(i) for i in range(1, 4)] == ["Grow mask by 10 px", "Shrink mask by 15 px", "Invert mask"]
    doc.undo_stack.undo()
    assert doc.mask[0, 0] == 0


def partial_pixels(mask):
    return int(((mask > 0) & (mask < 255)).sum())


def test_a_soft_brush_fades_at_its_edge(qtbot, window, doc):
    paint_stroke(qtbot, window, [(100, 100), (200, 100)])
    hard = partial_pixels(doc.mask)
    doc.clear_mask()
    window.menu_actions.brush_hardness.setValue(20)
    paint_stroke(qtbot, window, [(100, 100), (200, 100)])
    soft = partial_pixels(doc.mask)
    assert soft > 5 * hard and doc.mask[100, 150] == 255  # the centre line still paints fully


def test_tablet_pressure_scales_the_brush(qtbot, window, doc):
    from PySide6.QtCore import QEvent
    from PySide6.QtGui import QPointingDevice, QTabletEvent
    from PySide6.QtWidgets import QApplication

    window.canvas.set_brush_size(40)
    at = QPointF(window.canvas.mapFromScene(150, 150))
    device = QPointingDevice.primaryPointingDevice()
    pen = QTabletEvent(QEvent.TabletPress, device, at, window.canvas.viewport().mapToGlobal(at), 0.25, 0, 0, 0, 0, 0,
                       Qt.NoModifier, Qt.LeftButton, Qt.LeftButton)
    QApplication.sendEvent(window.canvas.viewport(), pen)
    assert window.canvas.pressure == pytest.approx(0.25)
    paint_stroke(qtbot, window, [(150, 150)])
    painted_rows = np.flatnonzero(doc.mask[:, 150] > 127)
    assert 6 <= len(painted_rows) <= 14  # a quarter of 40 px
    assert window.canvas.pressure == 1.0  # the next mouse stroke paints at full size


def test_masks_save_and_load_as_png(window, doc, tmp_path):
    square = np.zeros_like(doc.mask)
    square[10:20, 30:60] = 255
    doc.replace_mask(square, "square")
    from engines.services import save_mask

    save_mask(str(tmp_path / "m.png"), doc.mask)
    doc.clear_mask()
    assert window.files.load_mask_file(str(tmp_path / "m.png"))
    assert np.array_equal(doc.mask, square) and doc.undo_stack.text(doc.undo_stack.index() - 1) == "Load mask"
    from PIL import Image

    Image.new("L", (100, 100), 255).save(tmp_path / "small.png")
    assert not window.files.load_mask_file(str(tmp_path / "small.png"))
    assert "100×100" in window.panel.message.text() and np.array_equal(doc.mask, square)


def test_overlay_colour_and_opacity_show_on_screen_and_are_remembered(qtbot, window, doc):
    from editor.settings import Settings

    doc.replace_mask(np.full_like(doc.mask, 255), "all")
    window.canvas.set_mask_visible(True)
    window.menu_actions.set_mask_colour(QColor(0, 0, 255))
    window.menu_actions.mask_opacity.setValue(100)
    qtbot.wait(50)
    pixel = window.canvas.viewport().grab().toImage().pixelColor(window.canvas.mapFromScene(256, 256))
    assert (pixel.red(), pixel.green(), pixel.blue()) == (0, 0, 255)
    saved = Settings.load()
    assert saved["mask_colour"] == "#0000ff" and saved["mask_opacity"] == 1.0
