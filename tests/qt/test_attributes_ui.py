"""Face attribute sliders in the window (demo mode: a tiny random DiffAE)."""

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from tests.qt.conftest import open_window


@pytest.fixture
def attributes_window(qtbot, tmp_path, photo):
    win = open_window(qtbot, tmp_path, photo, "--demo", steps=4)
    win.panel.task.setCurrentIndex(win.panel.task.findData("attributes"))
    qtbot.waitUntil(lambda: "region_size" in win.panel.param_widgets and win.panel.generate.isEnabled(), timeout=60000)
    win.panel.param_widgets["inversion_steps"].setValue(20)
    yield win
    win.runner.shutdown()
    win.downloads.shutdown()


def drag(win, a, b):
    vp = win.canvas.viewport()
    QTest.mousePress(vp, Qt.LeftButton, Qt.NoModifier, win.canvas.mapFromScene(*a))
    QTest.mouseMove(vp, win.canvas.mapFromScene(*b))
    QTest.mouseRelease(vp, Qt.LeftButton, Qt.NoModifier, win.canvas.mapFromScene(*b))


def test_forty_searchable_sliders_and_a_reset(attributes_window):
    box = attributes_window.attributes_box
    assert box.isVisible() and len(box.sliders) == 40
    box.search.setText("hair")
    visible = [n for n, (label, _, _) in box.rows.items() if label.isVisible()]
    assert visible == ["Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Receding_Hairline", "Straight_Hair", "Wavy_Hair"]
    box.sliders["Smiling"].setValue(30)
    box.sliders["Young"].setValue(-20)
    assert attributes_window.panel.params()["attributes"] == "Smiling=0.3,Young=-0.2"
    box.reset()
    assert attributes_window.panel.params()["attributes"] == ""


def test_drag_a_face_region_then_releasing_a_slider_renders(qtbot, attributes_window, original):
    win = attributes_window
    drag(win, (100, 20), (356, 250))
    params = win.panel.params()
    got = (params["region_x"], params["region_y"], params["region_size"])
    assert all(abs(a - b) <= 2 for a, b in zip(got, (100, 20, 256))), got  # screen pixels round at this zoom
    win.panel.param_widgets["region_size"].setValue(256)  # the spin boxes take exact values too
    win.panel.param_widgets["region_x"].setValue(100)
    win.panel.param_widgets["region_y"].setValue(20)
    assert win.document.mask.max() == 0  # marking the region paints no mask
    slider = win.attributes_box.sliders["Smiling"]
    slider.setValue(40)
    with qtbot.waitSignal(win.runner.finished, timeout=120000):
        slider.sliderReleased.emit()  # letting go of the slider re-renders
    outside = np.ones((512, 512), bool)
    outside[20:276, 100:356] = False
    assert np.array_equal(win.document.image[outside], original[outside])
    assert not np.array_equal(win.document.image, original)
    assert win.document.undo_stack.count() == 1


def test_controls_the_attributes_do_not_use_are_disabled(attributes_window):
    panel = attributes_window.panel
    assert panel.steps.isEnabled()
    assert not panel.prompt.isEnabled() and not panel.guidance.isEnabled() and not panel.strength.isEnabled() and not panel.seed.isEnabled()
    panel.task.setCurrentIndex(panel.task.findData("inpaint"))
    assert panel.prompt.isEnabled() and panel.guidance.isEnabled() and panel.seed.isEnabled()
