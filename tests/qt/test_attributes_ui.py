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
    win.panel.param_widgets["render_steps"].setValue(10)
    win.panel.param_widgets["alignment"].setCurrentIndex(win.panel.param_widgets["alignment"].findText("square"))
    yield win
    win.shutdown()


def drag(win, a, b):
    vp = win.canvas.viewport()
    QTest.mousePress(vp, Qt.LeftButton, Qt.NoModifier, win.canvas.mapFromScene(*a))
    QTest.mouseMove(vp, win.canvas.mapFromScene(*b))
    QTest.mouseRelease(vp, Qt.LeftButton, Qt.NoModifier, win.canvas.mapFromScene(*b))


def test_forty_searchable_sliders_and_a_reset(attributes_window):
    box = attributes_window.attributes.box
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
    slider = win.attributes.box.sliders["Smiling"]
    slider.setValue(40)
    with qtbot.waitSignal(win.generation.finished, timeout=120000):
        slider.sliderReleased.emit()  # letting go of the slider re-renders
    outside = np.ones((512, 512), bool)
    outside[20:276, 100:356] = False
    assert np.array_equal(win.document.image[outside], original[outside])
    assert not np.array_equal(win.document.image, original)
    assert win.document.undo_stack.count() == 1


def test_controls_the_attributes_do_not_use_are_disabled(attributes_window):
    panel = attributes_window.panel
    assert not panel.steps.isEnabled()  # its own encoding and rendering steps replace the shared count
    assert not panel.prompt.isEnabled() and not panel.guidance.isEnabled() and not panel.strength.isEnabled() and not panel.seed.isEnabled()
    assert not panel.versions.isEnabled()  # no seed, so versions would all be alike
    panel.task.setCurrentIndex(panel.task.findData("inpaint"))
    assert panel.prompt.isEnabled() and panel.guidance.isEnabled() and panel.seed.isEnabled()


def test_an_own_slider_fitted_from_marked_faces(qtbot, attributes_window, monkeypatch):
    from PySide6.QtWidgets import QMessageBox, QPushButton

    from engines.services import user_data_folder

    win = attributes_window
    box = win.attributes.box
    assert not box.own_heading.isVisible()
    qtbot.mouseClick(box.findChild(QPushButton, "newSlider"), Qt.LeftButton)
    dialog = win.attributes.dialog
    assert dialog.isVisible()
    dialog.name.setText("Moustache")
    for key, corners in (("has", [(100, 20), (120, 40)]), ("lacks", [(0, 250), (250, 250)])):
        for x, y in corners:
            for name, value in (("region_x", x), ("region_y", y), ("region_size", 256)):
                win.panel.param_widgets[name].setValue(value)
            qtbot.mouseClick(dialog.findChild(QPushButton, f"{key}AddCurrent"), Qt.LeftButton)
    assert dialog.lists["has"].count() == 2 and dialog.lists["lacks"].count() == 2
    assert dialog.examples["has"][0].shape == (256, 256, 3)

    with qtbot.waitSignal(win.generation.finished, timeout=120000):
        dialog.buttons.accepted.emit()  # Fit and save
    assert (user_data_folder() / "directions" / "Moustache.safetensors").is_file()
    assert "Moustache" in box.sliders and box.own_heading.isVisible() and win.attributes.dialog is None
    assert win.document.undo_stack.count() == 0  # fitting a slider does not touch the picture

    box.sliders["Moustache"].setValue(40)
    assert win.panel.params()["attributes"] == "Moustache=0.4"
    with qtbot.waitSignal(win.generation.finished, timeout=120000):
        box.sliders["Moustache"].sliderReleased.emit()
    assert win.document.undo_stack.count() == 1

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.Yes)
    box.deleteRequested.emit("Moustache")
    assert "Moustache" not in box.sliders and not (user_data_folder() / "directions" / "Moustache.safetensors").exists()
    assert win.panel.params()["attributes"] == ""


def test_a_failed_fit_keeps_the_examples(qtbot, attributes_window):
    win = attributes_window
    win.attributes.box.newSliderRequested.emit()
    dialog = win.attributes.dialog
    dialog.name.setText("Smiling")  # a built-in name
    dialog.add("has", np.zeros((64, 64, 3), np.uint8))
    dialog.add("lacks", np.full((64, 64, 3), 255, np.uint8))
    with qtbot.waitSignal(win.generation.failed, timeout=60000):
        dialog.buttons.accepted.emit()
    assert "built-in" in win.panel.message.text() and "examples are kept" in win.panel.message.text()
    assert win.attributes.dialog is dialog and len(dialog.examples["has"]) == 1
