"""Uncropping in the window: the frame, the passes, the bigger result, undo."""

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from editor.window import frame_for_ratio


@pytest.fixture
def uncrop_window(window, qtbot):
    window.panel.task.setCurrentIndex(window.panel.task.findData("uncrop"))
    qtbot.waitUntil(lambda: "right" in window.panel.param_widgets and window.panel.generate.isEnabled(), timeout=60000)
    window.panel.steps.setValue(2)
    return window


def test_sides_typed_in_the_panel_show_as_a_checkerboard_frame(uncrop_window):
    win = uncrop_window
    win.panel.param_widgets["right"].setValue(128)
    win.panel.param_widgets["top"].setValue(64)
    assert win.document.frame == (0, 64, 128, 0)
    assert win.canvas.frame_item.isVisible()
    rect = win.canvas.frame_item.rect()
    assert (rect.x(), rect.y(), rect.width(), rect.height()) == (0, -64, 512 + 128, 512 + 64)
    assert win.panel.frame_box.isVisible()


def test_dragging_an_edge_outward_moves_that_side(qtbot, uncrop_window):
    win = uncrop_window
    view, vp = win.canvas, win.canvas.viewport()
    win.canvas.set_zoom(0.5)
    start = view.mapFromScene(510, 250)
    end = view.mapFromScene(510 + 200, 250)
    QTest.mousePress(vp, Qt.LeftButton, Qt.NoModifier, start)
    QTest.mouseMove(vp, end)
    QTest.mouseRelease(vp, Qt.LeftButton, Qt.NoModifier, end)
    left, top, right, bottom = win.document.frame
    assert (left, top, bottom) == (0, 0, 0) and 184 <= right <= 216 and right % 8 == 0
    assert win.panel.param_widgets["right"].value() == right  # the panel follows the canvas
    assert win.document.mask.max() == 0  # dragging the frame paints no mask


def test_aspect_ratio_with_an_anchor():
    assert frame_for_ratio((400, 300), 16 / 9, "centre") == (66, 0, 67, 0)  # 300 × 16/9 = 533 wide
    assert frame_for_ratio((400, 300), 16 / 9, "left") == (0, 0, 133, 0)
    assert frame_for_ratio((400, 300), 16 / 9, "right") == (133, 0, 0, 0)
    assert frame_for_ratio((400, 300), 9 / 16, "top") == (0, 0, 0, 411)
    assert frame_for_ratio((400, 300), 1.0, "bottom") == (0, 100, 0, 0)


def test_generate_grows_the_picture_in_one_undo_step(qtbot, uncrop_window, original):
    win = uncrop_window
    win.panel.aspect.setCurrentIndex(win.panel.aspect.findText("16:9"))
    assert win.document.frame == (199, 0, 199, 0)  # 512 × 16/9 = 910 wide
    left, top, right, bottom = win.document.frame
    formats = []
    win.generation.stepped.connect(lambda *a: formats.append(win.panel.progress.format()))
    with qtbot.waitSignal(win.generation.finished, timeout=120000):
        qtbot.mouseClick(win.panel.generate, Qt.LeftButton)
    qtbot.wait(10)
    assert any(f.startswith("Pass 2/") for f in formats)  # pass k/M and step n/N
    passes = [f for f in formats if f.startswith("Pass")]  # not "Loading …"
    assert "left" in passes[0] and "left" not in passes[-1]  # one estimate over every pass, down to the last step
    assert win.document.size == (512 + left + right, 512 + top + bottom)
    inner = win.document.image[top + 32 : top + 512 - 32, left + 32 : left + 512 - 32]
    assert np.array_equal(inner, original[32:-32, 32:-32])
    assert win.document.frame == (0, 0, 0, 0) and not win.canvas.frame_item.isVisible()
    assert win.document.undo_stack.count() == 1
    win.document.undo_stack.undo()
    assert win.document.size == (512, 512) and np.array_equal(win.document.image, original)
    assert win.document.frame == (left, top, right, bottom)  # the frame comes back with the undo
    win.document.undo_stack.redo()
    assert win.document.size == (512 + left + right, 512 + top + bottom)


def test_cancel_in_the_middle_of_the_passes_leaves_the_picture(qtbot, uncrop_window, original):
    win = uncrop_window
    win.panel.param_widgets["right"].setValue(400)
    cancelled = []
    win.generation.cancelled.connect(cancelled.append)
    win.generation.stepped.connect(lambda job, step: step.pass_index == 2 and qtbot.mouseClick(win.panel.cancel, Qt.LeftButton))
    qtbot.mouseClick(win.panel.generate, Qt.LeftButton)
    qtbot.waitUntil(lambda: bool(cancelled), timeout=120000)
    assert win.document.size == (512, 512) and np.array_equal(win.document.image, original)
    assert win.document.undo_stack.count() == 0 and win.document.frame == (0, 0, 400, 0)
