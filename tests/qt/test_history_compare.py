"""The History panel and before/after comparison."""

import numpy as np
from PySide6.QtCore import Qt

from editor.qtimage import from_qimage
from tests.qt.conftest import paint_stroke


def test_history_lists_every_step_and_clicking_one_goes_back(qtbot, window):
    paint_stroke(qtbot, window, [(100, 100), (200, 100)])
    paint_stroke(qtbot, window, [(100, 300), (200, 300)])
    window.document.invert_mask()
    view = window.menu_actions.history_view
    model = view.model()
    assert [model.index(i, 0).data() for i in range(model.rowCount())] == ["Opened picture", "Paint mask", "Paint mask", "Invert mask"]
    view.setCurrentIndex(model.index(1, 0))  # a click on the first stroke
    assert window.document.undo_stack.index() == 1
    assert window.document.mask[100, 150] == 255 and window.document.mask[300, 150] == 0
    assert not window.menu_actions.history.isVisible()
    next(a for a in window.findChildren(type(window.menu_actions.compare)) if a.text() == "&History").trigger()
    assert window.menu_actions.history.isVisible()


def test_hold_backslash_to_compare_with_before(qtbot, window, original):
    paint_stroke(qtbot, window, [(200, 200), (300, 200)])
    with qtbot.waitSignal(window.generation.finished, timeout=120000):
        window.generation.generate()
    after = window.document.image.copy()
    assert not np.array_equal(after, original)
    window.canvas.setFocus()
    qtbot.keyPress(window.canvas, Qt.Key_Backslash)
    assert window.canvas.before_item.isVisible() and window.menu_actions.compare.isChecked()
    x, y = int(window.canvas.before_item.pos().x()), int(window.canvas.before_item.pos().y())
    before = from_qimage(window.canvas.before_item.pixmap().toImage())
    h, w = before.shape[:2]
    assert np.array_equal(before, original[y : y + h, x : x + w])  # exactly the pixels the result replaced
    qtbot.keyRelease(window.canvas, Qt.Key_Backslash)
    assert not window.canvas.before_item.isVisible()
    window.document.undo_stack.undo()  # the comparison belongs to that result: gone with it
    window.menu_actions.compare.trigger()
    assert not window.canvas.before_item.isVisible()
    window.menu_actions.compare.trigger()


def test_compare_hides_the_version_on_show(qtbot, window):
    paint_stroke(qtbot, window, [(200, 200), (300, 200)])
    window.panel.versions.setValue(2)
    window.generation.generate()
    qtbot.waitUntil(lambda: window.version_strip.count() == 2 and not window.generation.busy, timeout=120000)
    assert window.canvas.preview_item.isVisible()
    window.canvas.set_comparing(True)
    assert not window.canvas.preview_item.isVisible()
    window.canvas.set_comparing(False)
    assert window.canvas.preview_item.isVisible()
