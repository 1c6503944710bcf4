"""Clipboard, drag and drop, recent files, shortcuts shown where people look, and keyboard reach."""

import numpy as np
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent, QKeySequence
from PySide6.QtWidgets import QApplication

from editor.qtimage import from_qimage, to_qimage
from tests.qt.conftest import paint_stroke


def test_copy_and_paste_pictures(qtbot, window, original):
    window.files.copy_picture()
    assert np.array_equal(from_qimage(QApplication.clipboard().image()), original)
    other = np.zeros((40, 60, 3), np.uint8)
    other[:, :30] = (200, 10, 10)
    QApplication.clipboard().setImage(to_qimage(other))
    window.files.paste_picture()
    assert np.array_equal(window.document.image, other) and window.document.path is None
    QApplication.clipboard().clear()
    QApplication.clipboard().setText("just words")
    window.files.paste_picture()
    assert "no picture" in window.panel.message.text() and np.array_equal(window.document.image, other)


def drop(win, data):
    event = QDropEvent(QPointF(10, 10), Qt.CopyAction, data, Qt.LeftButton, Qt.NoModifier)
    win.dropEvent(event)
    return event


def test_drop_a_file_or_pixels_in(qtbot, window, tmp_path):
    picture = np.full((30, 50, 3), 77, np.uint8)
    Image.fromarray(picture).save(tmp_path / "dropped.png")
    data = QMimeData()
    data.setUrls([QUrl.fromLocalFile(str(tmp_path / "dropped.png"))])
    drop(window, data)
    assert np.array_equal(window.document.image, picture) and window.document.path.name == "dropped.png"
    pixels = QMimeData()
    pixels.setImageData(to_qimage(np.full((20, 20, 3), 9, np.uint8)))
    drop(window, pixels)
    assert window.document.size == (20, 20) and window.document.image[0, 0, 0] == 9


def test_drag_out_carries_pixels_and_a_png_file(window, original):
    data = window.files.picture_mime_data()
    assert np.array_equal(from_qimage(data.imageData()), original)
    path = data.urls()[0].toLocalFile()
    assert path.endswith("photo.png") and np.array_equal(np.asarray(Image.open(path).convert("RGB")), original)


def test_recent_files_remember_what_was_opened_and_saved(qtbot, window, tmp_path, photo):
    for name in ("a.png", "b.png"):
        Image.fromarray(photo).save(tmp_path / name)
        window.files.open_path(tmp_path / name)
    window.files.save_to(tmp_path / "c.png")
    window.files.fill_recent_menu(window.menu_actions.recent_menu)
    names = [a.text() for a in window.menu_actions.recent_menu.actions()]
    assert names[:4] == ["&1 c.png", "&2 b.png", "&3 a.png", "&4 photo.png"]
    (tmp_path / "a.png").unlink()
    window.files.fill_recent_menu(window.menu_actions.recent_menu)
    assert not window.menu_actions.recent_menu.actions()[2].isEnabled()  # a file that is gone cannot be chosen
    window.menu_actions.recent_menu.actions()[1].trigger()
    assert window.document.path.name == "b.png"


def test_standard_shortcuts_are_in_the_menus_and_tooltips(window):
    actions = {a.text().replace("&", ""): a for a in window.findChildren(type(window.menu_actions.generate))}
    for text, keys in [("Open…", QKeySequence.Open), ("Save", QKeySequence.Save), ("Save As…", QKeySequence.SaveAs),
                       ("Copy picture", QKeySequence.Copy), ("Paste picture", QKeySequence.Paste)]:
        assert actions[text].shortcut() == QKeySequence(keys), text
        assert actions[text].shortcut().toString(QKeySequence.NativeText) in actions[text].toolTip(), text
    assert window.menu_actions.undo.shortcut() == QKeySequence(QKeySequence.Undo)
    assert window.menu_actions.generate.shortcut() == QKeySequence("Ctrl+Return") and "Ctrl+Enter" in window.panel.generate.toolTip()
    assert window.menu_actions.cancel.shortcut() == QKeySequence("Esc") and "Esc" in window.panel.cancel.toolTip()
    assert "(B)" in window.menu_actions.brush.toolTip() and "(R)" in window.menu_actions.rectangle.toolTip()


def test_every_panel_control_is_reachable_with_tab(qtbot, window):
    window.panel.task.setFocus()
    seen = []
    for _ in range(60):
        widget = QApplication.focusWidget()
        seen.append(widget.objectName())
        window.focusNextChild()
    for name in ("task", "prompt", "negativePrompt", "guidanceScale", "steps", "seed", "versions", "param_grow", "generate"):
        assert name in seen, name


def test_ctrl_drag_on_the_canvas_asks_to_drag_out_and_paints_nothing(qtbot, window):
    from PySide6.QtTest import QTest

    asked = []
    window.canvas.dragOutRequested.disconnect()
    window.canvas.dragOutRequested.connect(lambda: asked.append(True))
    at = window.canvas.mapFromScene(100, 100)
    QTest.mousePress(window.canvas.viewport(), Qt.LeftButton, Qt.ControlModifier, at)
    QTest.mouseRelease(window.canvas.viewport(), Qt.LeftButton, Qt.ControlModifier, at + QPoint(30, 0))
    assert asked and window.document.mask.max() == 0
    paint_stroke(qtbot, window, [(100, 100)])
    assert window.document.mask.max() == 255


def test_transparency_survives_an_edit_and_save(qtbot, window, tmp_path, photo):
    rgba = np.dstack([photo, np.tile(np.linspace(0, 255, 512, dtype=np.uint8), (512, 1))])
    Image.fromarray(rgba).save(tmp_path / "clear.png")
    assert window.files.open_path(tmp_path / "clear.png")
    paint_stroke(qtbot, window, [(200, 200), (300, 200)])
    with qtbot.waitSignal(window.generation.finished, timeout=120000):
        window.generation.generate()
    assert window.files.save_to(tmp_path / "out.png")
    saved = np.asarray(Image.open(tmp_path / "out.png"))
    assert saved.shape == (512, 512, 4) and np.array_equal(saved[..., 3], rgba[..., 3])
    assert not np.array_equal(saved[..., :3], photo)


def test_a_picture_above_the_limit_is_refused_with_the_setting_named(qtbot, window, tmp_path, original):
    window.settings["max_megapixels"] = 1
    Image.new("RGB", (1500, 1000)).save(tmp_path / "big.png")
    assert not window.files.open_path(tmp_path / "big.png")
    assert "1.5 million pixels" in window.panel.message.text() and "Settings" in window.panel.message.text()
    assert np.array_equal(window.document.image, original)
