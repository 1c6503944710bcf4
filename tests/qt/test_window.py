"""The real window, driven with mouse and keyboard events as a person would."""

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QPlainTextEdit, QProgressBar, QPushButton, QSlider, QSpinBox

from editor.canvas import CanvasView

from tests.qt.conftest import paint_stroke, pixmap_array

NAMES = {
    "canvas": CanvasView, "task": QComboBox, "prompt": QPlainTextEdit, "negativePrompt": QPlainTextEdit, "guidanceScale": QSlider,
    "strength": QDoubleSpinBox, "steps": QSpinBox, "seed": QSpinBox, "generate": QPushButton, "cancel": QPushButton,
    "progress": QProgressBar, "brushSize": QSpinBox,
}


def find(win, name):
    from PySide6.QtWidgets import QWidget

    widget = win.findChild(QWidget, name)
    assert widget is not None, name
    return widget


def test_the_contract_widgets_exist(window):
    for name, cls in NAMES.items():
        assert isinstance(find(window, name), cls), name


def test_paint_generate_watch_apply_undo(qtbot, window, original):
    doc = window.document
    paint_stroke(qtbot, window, [(200, 200), (260, 230), (320, 260)])
    assert doc.mask[230, 260] == 255 and doc.mask[20, 20] == 0
    assert doc.undo_stack.count() == 1  # one stroke, one undo step
    assert np.array_equal(doc.image, original)  # painting a mask never touches the picture

    qtbot.keyClicks(find(window, "prompt"), "a red door")
    find(window, "guidanceScale").setValue(17)  # 8.5
    assert window.panel.guidance_value.value() == 8.5

    steps, preview_visible = [], []
    window.generation.stepped.connect(lambda job, step: step.stage or steps.append((step.step, step.total)))  # not "Loading …"
    window.generation.preview.connect(lambda *a: preview_visible.append(window.canvas.preview_item.isVisible()))
    with qtbot.waitSignal(window.generation.finished, timeout=120000):
        qtbot.mouseClick(find(window, "generate"), Qt.LeftButton)
        assert not find(window, "generate").isEnabled() and find(window, "cancel").isEnabled()
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]  # the progress hears of every step
    assert preview_visible and all(preview_visible)  # and the canvas shows the newest picture while it forms
    assert not window.canvas.preview_item.isVisible()  # the overlay goes once the result is in

    changed = doc.image[230, 260].astype(int) - original[230, 260]
    assert np.abs(changed).sum() > 0
    assert np.array_equal(doc.image[:100], original[:100])  # far from the mask: untouched
    assert np.array_equal(pixmap_array(window.canvas.image_item.pixmap()), doc.image)  # the canvas shows the result
    assert doc.undo_stack.count() == 2 and "Inpaint" in doc.undo_stack.text(1)
    assert window.panel.progress.format().startswith("Done")

    doc.undo_stack.undo()
    assert np.array_equal(doc.image, original)
    assert np.array_equal(pixmap_array(window.canvas.image_item.pixmap()), original)
    doc.undo_stack.redo()
    assert not np.array_equal(doc.image, original)
    doc.undo_stack.undo()
    doc.undo_stack.undo()
    assert doc.mask.max() == 0  # the stroke is undone too


def test_cancel_leaves_the_picture_unchanged(qtbot, window, original):
    paint_stroke(qtbot, window, [(100, 300), (200, 300)])
    window.panel.steps.setValue(50)
    cancelled, previews = [], []
    window.generation.cancelled.connect(cancelled.append)
    window.generation.stepped.connect(lambda job, step: step.stage or previews.append(step.step))
    window.generation.stepped.connect(lambda job, step: step.step == 2 and qtbot.mouseClick(find(window, "cancel"), Qt.LeftButton))
    qtbot.mouseClick(find(window, "generate"), Qt.LeftButton)
    qtbot.waitUntil(lambda: bool(cancelled), timeout=60000)
    assert previews == [1, 2]  # nothing shown after the click
    assert np.array_equal(window.document.image, original)
    assert window.document.undo_stack.count() == 1
    assert not window.canvas.preview_item.isVisible()
    assert window.panel.progress.format() == "Cancelled"
    assert find(window, "generate").isEnabled()


def test_generate_cannot_start_a_second_job(qtbot, window):
    paint_stroke(qtbot, window, [(100, 100), (150, 100)])
    started = []
    window.generation.busyChanged.connect(lambda busy: busy and started.append(1))
    with qtbot.waitSignal(window.generation.finished, timeout=120000):
        window.generation.generate()
        window.generation.generate()  # e.g. Ctrl+Enter pressed again while the first job runs
        assert window.generation.generate() is False
        assert len(window.generation.runner.jobs) == 1
    assert started == [1]


def test_empty_mask_is_explained_not_run(qtbot, window):
    qtbot.mouseClick(find(window, "generate"), Qt.LeftButton)
    assert "mask is empty" in window.panel.message.text()
    assert not window.generation.busy


def test_brush_size_keys_and_field(qtbot, window):
    size = find(window, "brushSize")
    start = size.value()
    window.canvas.setFocus()
    qtbot.keyClick(window.canvas, Qt.Key_BracketRight)
    assert size.value() > start and window.canvas.brush_size == size.value()
    qtbot.keyClick(window.canvas, Qt.Key_BracketLeft)
    qtbot.keyClick(window.canvas, Qt.Key_BracketLeft)
    assert size.value() < start
    size.setValue(77)
    assert window.canvas.brush_size == 77


def test_eraser_removes_mask_as_its_own_undo_step(qtbot, window):
    doc = window.document
    paint_stroke(qtbot, window, [(100, 100), (300, 100)])
    window.menu_actions.eraser.trigger()
    paint_stroke(qtbot, window, [(200, 80), (200, 120)])
    assert doc.mask[100, 120] == 255 and doc.mask[100, 200] == 0
    assert doc.undo_stack.count() == 2
    doc.undo_stack.undo()
    assert doc.mask[100, 200] == 255


def test_opening_a_broken_file_keeps_the_document(qtbot, window, tmp_path, original):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert window.files.open_path(bad) is False
    assert "broken.png could not be read" in window.panel.message.text()
    assert np.array_equal(window.document.image, original)


def test_zoom_fit_and_actual_size(qtbot, window):
    window.canvas.actual_size()
    assert window.canvas.zoom == 1.0
    window.canvas.zoom_by(2)
    assert abs(window.canvas.zoom - 1.5625) < 1e-6
    window.canvas.fit()
    assert window.canvas.zoom < 1.5


def test_result_is_shown_without_the_mask_tint_until_the_next_stroke(qtbot, window):
    paint_stroke(qtbot, window, [(100, 100), (150, 100)])
    assert window.canvas.mask_item.isVisible()
    with qtbot.waitSignal(window.generation.finished, timeout=120000):
        window.generation.generate()
    assert not window.canvas.mask_item.isVisible() and not window.menu_actions.show_mask.isChecked()
    assert window.document.mask.max() == 255  # hidden, not cleared: Generate again reuses it
    paint_stroke(qtbot, window, [(300, 300), (310, 300)])
    assert window.canvas.mask_item.isVisible() and window.menu_actions.show_mask.isChecked()


def test_save_never_overwrites_the_opened_file_without_asking(qtbot, window, monkeypatch, tmp_path):
    from PySide6.QtWidgets import QFileDialog

    opened = window.document.path
    before = opened.read_bytes()
    asked = []
    target = tmp_path / "edited.jpg"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (asked.append(a[2]) or str(target), ""))
    paint_stroke(qtbot, window, [(100, 100), (150, 100)])
    assert window.files.save() is True
    assert asked == [str(opened)]  # Save on an opened photo goes through the Save As dialog
    assert opened.read_bytes() == before and target.is_file()
    assert not window.document.modified and window.document.path == target
    assert window.files.save() is True and len(asked) == 1  # now Save writes to the chosen file directly


def test_wheel_zooms_and_middle_drag_pans(qtbot, window):
    from PySide6.QtCore import QPoint, QPointF
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    view = window.canvas
    view.set_zoom(2.0)
    centre = QPointF(view.viewport().rect().center())
    wheel = QWheelEvent(centre, view.viewport().mapToGlobal(centre), QPoint(), QPoint(0, 120), Qt.NoButton, Qt.NoModifier,
                        Qt.NoScrollPhase, False)
    QApplication.sendEvent(view.viewport(), wheel)
    assert abs(view.zoom - 2.5) < 1e-6
    bar = view.horizontalScrollBar()
    start = bar.value()
    vp = view.viewport()
    QTest.mousePress(vp, Qt.MiddleButton, Qt.NoModifier, QPoint(300, 300))
    QTest.mouseMove(vp, QPoint(200, 300))
    QTest.mouseRelease(vp, Qt.MiddleButton, Qt.NoModifier, QPoint(200, 300))
    assert bar.value() == start + 100
    assert window.document.mask.max() == 0 and window.document.undo_stack.count() == 0  # panning paints nothing


def test_dropping_a_file_opens_it(qtbot, window, tmp_path):
    from PIL import Image
    from PySide6.QtCore import QMimeData, QPoint, QUrl
    from PySide6.QtGui import QDropEvent

    Image.new("RGB", (64, 48), (10, 200, 30)).save(tmp_path / "dropped.png")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(tmp_path / "dropped.png"))])
    window.dropEvent(QDropEvent(QPoint(10, 10), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier))
    assert window.document.size == (64, 48) and window.document.path.name == "dropped.png"
    assert "dropped.png" in window.windowTitle()


def test_open_dialog_opens_the_chosen_picture(qtbot, window, monkeypatch, tmp_path):
    from PIL import Image
    from PySide6.QtWidgets import QFileDialog

    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "red.png")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(tmp_path / "red.png"), ""))
    window.files.open_dialog()
    assert window.document.size == (40, 30)


def test_the_panel_shows_and_edits_the_document(qtbot, window):
    """The panel keeps no state of its own: typing changes the document, and a document restored from
    autosave shows in the panel and is what Generate sends, each task keeping its own settings."""
    window.panel.prompt.setPlainText("a red door")
    assert window.document.generation["prompt"] == "a red door"
    window.document.restore_generation({"prompt": "from the file", "steps": 7, "strength": {"inpaint": 0.7},
                                        "params": {"inpaint": {"grow": 11}}, "seed": "not a number"})
    assert window.panel.prompt.toPlainText() == "from the file" and window.panel.steps.value() == 7
    assert window.panel.param_widgets["grow"].value() == 11 and abs(window.panel.strength.value() - 0.7) < 1e-9
    request = window.generation.build_request()
    assert (request.prompt, request.steps, request.strength, request.params["grow"]) == ("from the file", 7, 0.7, 11)
    window.panel.task.setCurrentIndex(window.panel.task.findData("edit"))
    qtbot.waitUntil(lambda: window.panel.spec.id == "edit", timeout=60000)
    window.panel.param_widgets["grow"].setValue(2)
    window.panel.task.setCurrentIndex(window.panel.task.findData("inpaint"))
    qtbot.waitUntil(lambda: window.panel.spec.id == "inpaint", timeout=60000)
    assert window.panel.param_widgets["grow"].value() == 11 and abs(window.panel.strength.value() - 0.7) < 1e-9
