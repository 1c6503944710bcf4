"""Today's models in the window: the panel shows the controls the chosen model uses, labelled with
what they mean to it, and a Generate with a diffusion transformer runs, previews and lands as one undo step."""

import numpy as np
import pytest

from engines.testing_dit import write_dit_model
from tests.qt.conftest import open_window


@pytest.fixture(scope="module")
def dit_folders(tmp_path_factory):
    return {kind: str(write_dit_model(tmp_path_factory.mktemp(kind), kind)) for kind in ("flux2-klein", "qwen-edit", "flux-fill")}


def rows_shown(win):
    panel = win.panel
    return {"guidance": panel.form.isRowVisible(panel.guidance_row), "negative": panel.form.isRowVisible(panel.negative),
            "scheduler": panel.engine_form.isRowVisible(panel.param_widgets["scheduler"])}


@pytest.mark.parametrize("kind,expected,label", [
    ("flux2-klein", {"guidance": False, "negative": False, "scheduler": False}, None),
    ("qwen-edit", {"guidance": True, "negative": True, "scheduler": False}, "True CFG"),
    ("flux-fill", {"guidance": True, "negative": False, "scheduler": False}, "Guidance"),
])
def test_the_panel_shows_only_what_the_model_uses(qtbot, tmp_path, photo, dit_folders, kind, expected, label):
    win = open_window(qtbot, tmp_path, photo, "--model", dit_folders[kind])
    try:
        assert rows_shown(win) == expected
        if label:
            assert win.panel.guidance_label.text().replace("&", "") == label
            assert ("distilled" in win.panel.guidance.toolTip()) == (kind == "flux-fill")
        if kind == "flux2-klein":
            assert "4 steps" in win.panel.steps.toolTip()
    finally:
        win.shutdown()


def test_stable_diffusion_keeps_every_control(qtbot, tmp_path, photo, model_dir):
    win = open_window(qtbot, tmp_path, photo, "--model", str(model_dir("inpaint")))
    try:
        assert rows_shown(win) == {"guidance": True, "negative": True, "scheduler": True}
        assert win.panel.guidance_label.text().replace("&", "") == "Guidance"
    finally:
        win.shutdown()


def test_a_transformer_inpaint_in_the_window_is_one_undo_step_with_previews(qtbot, tmp_path, photo, dit_folders):
    win = open_window(qtbot, tmp_path, photo, "--model", dit_folders["flux-fill"], steps=2)
    try:
        before = win.document.image.copy()
        win.document.mask[200:300, 200:300] = 255
        win.panel.param_widgets["resolution"].setValue(128)
        previews, done = [], []
        win.generation.preview.connect(lambda *a: previews.append(a))
        win.generation.finished.connect(lambda *a: done.append(a))
        win.generation.failed.connect(lambda job, message: done.append(message))
        undo_before = win.document.undo_stack.count()
        assert win.generation.generate()
        qtbot.waitUntil(lambda: bool(done), timeout=120000)
        assert not isinstance(done[0], str), done[0]
        assert previews, "no step preview reached the window"
        assert win.document.undo_stack.count() == undo_before + 1
        changed = np.any(win.document.image != before, axis=2)
        assert changed[200:300, 200:300].any() and not changed[:150].any()
        win.document.undo_stack.undo()
        assert np.array_equal(win.document.image, before)
    finally:
        win.shutdown()
