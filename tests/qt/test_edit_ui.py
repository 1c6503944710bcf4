"""Prompt-guided edits in the window (demo mode: tiny models for each method)."""

import numpy as np
import pytest
from PySide6.QtCore import Qt
from scipy import ndimage

from tests.qt.conftest import open_window, paint_stroke


@pytest.fixture
def edit_window(qtbot, tmp_path, photo):
    win = open_window(qtbot, tmp_path, photo, "--demo", steps=2)
    win.panel.task.setCurrentIndex(win.panel.task.findData("edit"))
    qtbot.waitUntil(lambda: "image_guidance" in win.panel.param_widgets and win.panel.generate.isEnabled(), timeout=60000)
    win.panel.prompt.setPlainText("make it winter")
    yield win
    win.shutdown()


def test_methods_and_the_image_guidance_slider(edit_window):
    from PySide6.QtWidgets import QSlider

    panel = edit_window.panel
    assert [panel.param_widgets["method"].itemText(i) for i in range(2)] == ["instruct", "img2img"]
    field = panel.param_widgets["image_guidance"]
    assert isinstance(field.slider, QSlider) and field.value() == 1.5
    field.slider.setValue(30)  # 3.0 in steps of 0.1
    assert field.spin.value() == 3.0 and panel.params()["image_guidance"] == 3.0


@pytest.mark.parametrize("method", ["instruct", "img2img"])
def test_whole_picture_edit_is_one_undo_step(qtbot, edit_window, original, method):
    win = edit_window
    win.panel.param_widgets["method"].setCurrentText(method)
    with qtbot.waitSignal(win.generation.finished, timeout=120000):
        qtbot.mouseClick(win.panel.generate, Qt.LeftButton)
    assert not np.array_equal(win.document.image, original)
    assert win.document.undo_stack.count() == 1
    win.document.undo_stack.undo()
    assert np.array_equal(win.document.image, original)


def test_masked_edit_changes_only_the_painted_part(qtbot, edit_window, original):
    win = edit_window
    paint_stroke(qtbot, win, [(200, 200), (300, 240)])
    with qtbot.waitSignal(win.generation.finished, timeout=120000):
        win.generation.generate()
    feather = win.panel.params()["feather"] + win.panel.params()["grow"]
    far = ndimage.distance_transform_edt(win.document.mask < 128) > feather
    assert np.array_equal(win.document.image[far], original[far])
    assert not np.array_equal(win.document.image, original)


def test_versions_in_a_strip_click_to_see_accept_one(qtbot, edit_window, original):
    win = edit_window
    win.panel.versions.setValue(3)
    win.generation.generate()
    qtbot.waitUntil(lambda: win.version_strip.count() == 3 and not win.generation.busy, timeout=120000)
    assert win.version_strip.isVisible() and np.array_equal(win.document.image, original)  # nothing applied before Accept
    assert [win.version_strip.thumbs.item(i).text() for i in range(3)] == [f"Seed {win.panel.seed.value() + k}" for k in range(3)]
    shown = []
    for row in (1, 2):
        win.version_strip.thumbs.setCurrentRow(row)  # a click on the thumbnail
        assert win.canvas.preview_item.isVisible()
        shown.append(win.canvas.preview_item.pixmap().toImage())
    assert shown[0] != shown[1]  # each click shows its own version
    win.version_strip.thumbs.setCurrentRow(1)
    qtbot.mouseClick(win.version_strip.accept_button, Qt.LeftButton)
    assert win.document.undo_stack.count() == 1 and "seed" in win.document.undo_stack.text(0)
    assert not win.version_strip.isVisible() and not win.canvas.preview_item.isVisible()
    picked = win.document.image.copy()
    win.document.undo_stack.undo()
    assert np.array_equal(win.document.image, original)

    win.generation.generate()
    qtbot.waitUntil(lambda: win.version_strip.count() == 3 and not win.generation.busy, timeout=120000)
    qtbot.mouseClick(win.version_strip.discard_button, Qt.LeftButton)
    assert np.array_equal(win.document.image, original) and win.document.undo_stack.index() == 0
    assert not np.array_equal(picked, original)


def test_versions_use_successive_seeds(qtbot, edit_window):
    """Version k is exactly what one generation with seed + k gives, with the settings of the click
    that started the batch (editing the prompt meanwhile changes the next Generate, not this batch)."""
    win = edit_window
    win.panel.versions.setValue(2)
    win.generation.generate()  # a new seed, shown in the panel while the batch runs
    seed, prompt = win.panel.seed.value(), win.panel.prompt.toPlainText()
    win.panel.prompt.setPlainText("something else entirely")
    qtbot.waitUntil(lambda: win.version_strip.count() == 2 and not win.generation.busy, timeout=120000)
    second = win.generation.versions[1].result.image.copy()
    win.version_strip.discard()
    win.panel.versions.setValue(1)
    win.panel.seed.setValue(seed + 1)
    win.panel.lock_seed.setChecked(True)  # to make one again: its seed, locked
    win.panel.prompt.setPlainText(prompt)
    with qtbot.waitSignal(win.generation.finished, timeout=120000):
        win.generation.generate()
    assert np.array_equal(win.document.image, second)


def test_controls_follow_the_method(edit_window):
    panel = edit_window.panel
    panel.param_widgets["method"].setCurrentText("instruct")
    assert panel.param_widgets["image_guidance"].isEnabled() and not panel.strength.isEnabled()
    panel.param_widgets["method"].setCurrentText("img2img")
    assert not panel.param_widgets["image_guidance"].isEnabled() and panel.strength.isEnabled()
    edit_window.panel.task.setCurrentIndex(edit_window.panel.task.findData("inpaint"))
    assert panel.strength.isEnabled()  # other tasks use strength as before


def test_without_a_choice_the_model_follows_the_method(qtbot, tmp_path, photo):
    win = open_window(qtbot, tmp_path, photo)  # no --model, no --demo
    win.panel.task.setCurrentIndex(win.panel.task.findData("edit"))
    qtbot.waitUntil(lambda: "method" in win.panel.param_widgets, timeout=60000)
    win.panel.param_widgets["method"].setCurrentText("instruct")
    assert win.generation.model_for("edit") == "timbrooks/instruct-pix2pix"
    win.panel.param_widgets["method"].setCurrentText("img2img")
    assert win.generation.model_for("edit") == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    win.settings.set_model_for("edit", "/my/models/dreamshaper")
    assert win.generation.model_for("edit") == "/my/models/dreamshaper"  # the person's choice wins
    win.shutdown()
