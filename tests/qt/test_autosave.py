"""Autosave and restore after a crash, the save-on-close question, and the checks on what is read back."""

import json

import numpy as np
import pytest
from PySide6.QtWidgets import QMessageBox

from editor.autosave import RestoreError, read_snapshot
from tests.qt.conftest import open_window, paint_stroke


def crash(win):
    """What a crash leaves: the last autosave on disk, no clean exit, and a lock whose process is gone."""
    win.autosaver.wait()
    win.autosaver.lock.unlock()
    win.autosaver.finish = lambda snap: None  # the window's close at teardown stands for nothing: the process "died"
    win.shutdown()


def build(qtbot, monkeypatch, answer="restore"):
    import main
    from editor.window import MainWindow

    asked = []
    monkeypatch.setattr(MainWindow, "ask_restore", lambda self, folder: asked.append(folder) or answer)
    win = main.build([])
    win.files.confirm_discard = lambda: True
    qtbot.addWidget(win)
    return win, asked


def test_the_work_comes_back_after_a_crash(qtbot, window, monkeypatch, original):
    paint_stroke(qtbot, window, [(100, 100), (300, 100)])
    window.menu_actions.hint.trigger()
    paint_stroke(qtbot, window, [(100, 400), (200, 400)])
    window.panel.prompt.setPlainText("a red door")
    window.panel.steps.setValue(3)
    window.panel.versions.setValue(2)
    window.panel.param_widgets["grow"].setValue(9)
    window.generation.generate()
    qtbot.waitUntil(lambda: window.version_strip.count() == 2 and not window.generation.busy, timeout=120000)
    window.autosave()
    mask, hints = window.document.mask.copy(), window.document.hints.copy()
    versions = [v.result.image.copy() for v in window.generation.versions]
    crash(window)

    again, asked = build(qtbot, monkeypatch)
    assert len(asked) == 1
    doc = again.document
    assert np.array_equal(doc.image, original) and np.array_equal(doc.mask, mask) and np.array_equal(doc.hints, hints)
    assert again.panel.prompt.toPlainText() == "a red door" and again.panel.steps.value() == 3 and again.panel.versions.value() == 2
    qtbot.waitUntil(lambda: again.panel.param_widgets.get("grow") is not None, timeout=60000)
    assert again.panel.param_widgets["grow"].value() == 9  # the engine's own settings follow once its controls exist
    assert again.version_strip.count() == 2 and all(np.array_equal(mine.result.image, v) for mine, v in zip(again.generation.versions, versions))
    assert doc.modified and again.windowTitle().startswith("photo.png*")
    qtbot.waitUntil(lambda: again.panel.generate.isEnabled(), timeout=60000)
    again.version_strip.thumbs.setCurrentRow(1)
    again.version_strip.accept_current()
    assert np.array_equal(doc.image, versions[1]) and doc.undo_stack.count() == 1
    again.shutdown()

    third, asked = build(qtbot, monkeypatch)  # offered once: the crashed session is gone now
    assert asked == []
    third.shutdown()


def test_a_clean_exit_or_a_running_window_is_not_offered(qtbot, tmp_path, photo, monkeypatch):
    first = open_window(qtbot, tmp_path, photo, "--demo")
    paint_stroke(qtbot, first, [(100, 100), (300, 100)])
    first.autosave()
    first.autosaver.wait()
    second, asked = build(qtbot, monkeypatch)
    assert asked == []  # the first window still runs and holds its session
    first.close()
    third, asked = build(qtbot, monkeypatch)
    assert asked == []  # it ended cleanly
    for win in (second, third):
        win.shutdown()


def test_discard_drops_the_crashed_session(qtbot, window, monkeypatch):
    paint_stroke(qtbot, window, [(100, 100), (300, 100)])
    window.autosave()
    crash(window)
    again, asked = build(qtbot, monkeypatch, answer="discard")
    assert len(asked) == 1 and not again.document.has_image
    assert not asked[0].exists()
    again.shutdown()


def test_not_now_keeps_the_crashed_session_for_the_next_start(qtbot, window, monkeypatch, original):
    paint_stroke(qtbot, window, [(100, 100), (300, 100)])
    window.autosave()
    crash(window)
    later, asked = build(qtbot, monkeypatch, answer="later")
    assert len(asked) == 1 and not later.document.has_image and asked[0].exists()
    later.shutdown()
    again, asked = build(qtbot, monkeypatch, answer="restore")  # offered again, and still whole
    assert len(asked) == 1 and np.array_equal(again.document.image, original)
    again.shutdown()


def test_autosave_writes_only_when_something_changed(qtbot, window):
    window.autosave()
    window.autosaver.wait()
    stamp = json.loads((window.autosaver.folder / "session.json").read_text())["saved_at"]
    window.autosave()
    window.autosaver.wait()
    assert json.loads((window.autosaver.folder / "session.json").read_text())["saved_at"] == stamp
    paint_stroke(qtbot, window, [(10, 10), (40, 10)])
    window.autosave()
    window.autosaver.wait()
    assert json.loads((window.autosaver.folder / "session.json").read_text())["saved_at"] > stamp
    assert window.autosave_timer.isActive() and window.autosave_timer.interval() == 60000


def damaged(window, change):
    window.autosave()
    window.autosaver.wait()
    folder = window.autosaver.folder
    meta = json.loads((folder / "session.json").read_text())
    change(meta, folder)
    (folder / "session.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize("change, words", [
    (lambda m, f: m["files"].update(image="../../../etc/passwd"), "may not use"),
    (lambda m, f: m["files"].update(mask="/tmp/mask.png"), "may not use"),
    (lambda m, f: (f / "mask.png").write_bytes(b"not a png"), "could not be read"),
    (lambda m, f: m.update(format=99), "format"),
    (lambda m, f: m.update(candidates=[{"file": "image.png", "box": [0, 0, "x", 1], "offset": [0, 0], "seed": 1}]), "damaged"),
])
def test_damaged_or_unsafe_autosaves_are_refused(window, change, words):
    folder = damaged(window, change)
    with pytest.raises(RestoreError, match=words):
        read_snapshot(folder, 10**8)


def test_a_mask_of_another_size_is_refused(window):
    from PIL import Image

    folder = damaged(window, lambda m, f: Image.new("L", (10, 10)).save(f / "mask.png"))
    with pytest.raises(RestoreError, match="does not match"):
        read_snapshot(folder, 10**8)


def test_closing_with_unsaved_changes_asks_to_save(qtbot, window, monkeypatch, tmp_path):
    del window.files.confirm_discard  # the real question this time
    paint_stroke(qtbot, window, [(100, 100), (300, 100)])
    window.document.invert_mask()
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.Cancel)
    assert not window.close() and window.isVisible()  # Cancel keeps the window open
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: asked.append(a[2]) or QMessageBox.Discard)
    assert window.close() and "Save the changes" in asked[0]
    assert not window.generation.runner.running  # closed for real: the engines' thread has stopped


def test_a_damaged_session_is_explained_kept_aside_and_not_offered_again(qtbot, window, monkeypatch):
    paint_stroke(qtbot, window, [(100, 100), (300, 100)])
    window.autosave()
    crash(window)
    (window.autosaver.folder / "mask.png").write_bytes(b"not a png")
    again, asked = build(qtbot, monkeypatch)
    assert len(asked) == 1 and "could not be read" in again.panel.message.text() and "damaged-session-" in again.panel.message.text()
    assert not again.document.has_image
    assert (window.autosaver.folder.with_name("damaged-" + window.autosaver.folder.name) / "session.json").is_file()
    again.shutdown()
    third, asked = build(qtbot, monkeypatch)
    assert asked == []
    third.shutdown()
