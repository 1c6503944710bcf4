"""The corpus of awkward inputs opened in the window: a clear message and an unchanged document, or the picture."""

import numpy as np
import pytest

from tests import pictures
from tests.e2e.test_bad_inputs import CORPUS_NAMES


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, photo):
    folder = tmp_path_factory.mktemp("corpus-ui")
    return folder, pictures.bad_input_corpus(folder, photo)


def test_each_input_opens_or_says_why_and_changes_nothing(qtbot, window, corpus, original):
    folder, files = corpus
    for name in CORPUS_NAMES:
        window.document.set_image(original)
        file, opens = files[name]
        window.panel.show_message("")
        assert window.files.open_path(folder / file) is opens, name
        if not opens:
            assert window.panel.message.text().strip(), name
            assert np.array_equal(window.document.image, original) and window.document.undo_stack.count() == 0, name
    window.files.open_path(folder / "one.png")  # 1×1 opens, and generating on it says why not
    window.document.mask[:] = 255
    window.generation.generate()
    assert "at least 8×8" in window.panel.message.text() and not window.generation.busy


def test_a_non_utf8_file_name_opens_and_shows(qtbot, window, tmp_path, photo):
    path = pictures.non_utf8_name(tmp_path, photo)
    assert window.files.open_path(path)
    assert "caf" in window.windowTitle()
    window.files.open_path(path.replace(".png", "-gone.png"))
    assert "no file called" in window.panel.message.text()


def test_a_500_word_prompt_generates_and_says_what_was_cut(qtbot, window):
    from tests.qt.conftest import paint_stroke

    paint_stroke(qtbot, window, [(200, 200), (300, 200)])
    window.panel.prompt.setPlainText(" ".join(["a quiet harbour at dawn with boats"] * 72))
    with qtbot.waitSignal(window.generation.finished, timeout=120000):
        window.generation.generate()
    assert "longer than the text encoder reads" in window.panel.message.text()
    assert window.document.undo_stack.count() == 2  # the result was still applied
