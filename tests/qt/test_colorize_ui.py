"""Colorizing in the window: the hint brush and its colour, then a result that keeps the lightness."""

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor

from engines import imaging
from tests.qt.conftest import open_window, paint_stroke


@pytest.fixture
def colour_window(qtbot, tmp_path, photo):
    grey = imaging.with_lightness(imaging.lightness(photo), np.zeros((512, 512, 2)))
    win = open_window(qtbot, tmp_path, grey, "--demo", steps=3)
    win.panel.task.setCurrentIndex(win.panel.task.findData("colorize"))
    qtbot.waitUntil(lambda: "saturation" in win.panel.param_widgets and win.panel.generate.isEnabled(), timeout=60000)
    yield win, grey
    win.shutdown()


def test_hint_brush_paints_colour_as_one_undo_step(qtbot, colour_window):
    win, grey = colour_window
    win.menu_actions.set_hint_colour(QColor(220, 30, 30))
    assert win.menu_actions.hint.isChecked() and win.canvas.layer == "hints"
    paint_stroke(qtbot, win, [(100, 100), (200, 100)])
    assert tuple(win.document.hints[100, 150]) == (220, 30, 30, 255)
    assert win.document.mask.max() == 0 and np.array_equal(win.document.image, grey)  # hints are their own layer
    assert win.document.undo_stack.count() == 1 and "hint" in win.document.undo_stack.text(0)
    win.menu_actions.eraser.trigger()
    paint_stroke(qtbot, win, [(150, 80), (150, 120)])
    assert win.document.hints[100, 150, 3] == 0 and win.document.hints[100, 110, 3] == 255
    win.document.undo_stack.undo()
    win.document.undo_stack.undo()
    assert not win.document.has_hints


def test_colorize_keeps_the_lightness_and_uses_the_hints(qtbot, colour_window):
    win, grey = colour_window
    win.menu_actions.set_hint_colour(QColor(30, 60, 230))
    paint_stroke(qtbot, win, [(150, 300), (260, 300)])
    assert win.generation.build_request().hints is not None
    with qtbot.waitSignal(win.generation.finished, timeout=120000) as finished:
        qtbot.mouseClick(win.panel.generate, Qt.LeftButton)
    assert finished.args[1].info["hints"] is True
    result = win.document.image
    assert np.abs(imaging.lightness(result) - imaging.lightness(grey)).max() <= 100 / 255
    assert np.hypot(*np.moveaxis(imaging.rgb_to_lab(result)[..., 1:], -1, 0)).mean() > 5
    win.document.undo_stack.undo()
    assert np.array_equal(win.document.image, grey)


def test_each_task_starts_from_its_own_strength(colour_window):
    win, _ = colour_window
    assert win.panel.strength.value() == 0.75
    win.panel.task.setCurrentIndex(win.panel.task.findData("inpaint"))
    assert win.panel.strength.value() == 1.0
