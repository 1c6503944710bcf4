"""Large pictures stay quick to show: a quarter-size copy when zoomed far out, layers sampled."""

import numpy as np
from PIL import Image
from PySide6.QtGui import QColor

from editor.qtimage import from_qimage


def test_zoomed_out_the_overview_copy_is_drawn_and_follows_edits(qtbot, window, tmp_path):
    big = np.zeros((1600, 2400, 3), np.uint8)
    big[:, :1200] = (0, 0, 200)
    Image.fromarray(big).save(tmp_path / "big.png")
    assert window.files.open_path(tmp_path / "big.png")
    canvas = window.canvas
    canvas.set_zoom(0.2)
    assert canvas.overview_item.isVisible() and not canvas.image_item.isVisible()
    canvas.set_zoom(0.5)
    assert canvas.image_item.isVisible() and not canvas.overview_item.isVisible()

    green = big.copy()
    green[400:800, 1600:2000] = (0, 220, 0)
    window.document.apply_result(green, (1600, 400, 400, 400), "paint green")
    overview = from_qimage(canvas.overview_item.pixmap().toImage())
    assert overview.shape == (400, 600, 3)
    assert tuple(overview[150, 450]) == (0, 220, 0) and tuple(overview[50, 450]) == (0, 0, 0) and tuple(overview[50, 50]) == (0, 0, 200)


def test_the_mask_shows_when_zoomed_far_out(qtbot, window, tmp_path):
    Image.fromarray(np.zeros((1600, 2400, 3), np.uint8)).save(tmp_path / "big.png")
    window.files.open_path(tmp_path / "big.png")
    mask = np.zeros((1600, 2400), np.uint8)
    mask[600:1000, 1000:1400] = 255
    window.document.replace_mask(mask, "square")
    window.canvas.set_mask_visible(True)
    window.menu_actions.set_mask_colour(QColor(255, 0, 0))
    window.menu_actions.mask_opacity.setValue(100)
    window.canvas.set_zoom(0.15)
    window.canvas.centerOn(1200, 800)
    qtbot.wait(20)
    shot = window.canvas.viewport().grab().toImage()
    inside, outside = shot.pixelColor(window.canvas.mapFromScene(1200, 800)), shot.pixelColor(window.canvas.mapFromScene(400, 300))
    assert (inside.red(), inside.green()) == (255, 0) and outside.red() == 0


def test_a_big_picture_opens_on_a_thread_and_the_window_keeps_answering(qtbot, window, tmp_path, monkeypatch, original):
    import editor.files as files_module

    monkeypatch.setattr(files_module, "BACKGROUND_OPEN_PIXELS", 100_000)
    big = np.zeros((400, 600, 3), np.uint8)
    big[:, 300:] = 250
    Image.fromarray(big).save(tmp_path / "big.png")
    decoding = []
    real_load = files_module.load_picture

    def slow_load(path, max_pixels):
        import threading
        import time

        decoding.append(threading.current_thread().name)
        time.sleep(0.5)  # as a 48-megapixel PNG would take
        return real_load(path, max_pixels)

    monkeypatch.setattr(files_module, "load_picture", slow_load)
    assert window.files.open_path(tmp_path / "big.png", background=True)
    assert np.array_equal(window.document.image, original)  # not yet: the GUI thread went on
    assert not window.files.open_path(tmp_path / "big.png", background=True) and "Still opening" in window.panel.message.text()
    qtbot.waitUntil(lambda: window.document.path is not None and window.document.path.name == "big.png", timeout=10000)
    assert decoding == ["sandcastle-open"] and np.array_equal(window.document.image, big)
    from PySide6.QtWidgets import QApplication

    assert QApplication.overrideCursor() is None

    Image.fromarray(big).save(tmp_path / "big2.png")
    (tmp_path / "big2.png").write_bytes((tmp_path / "big2.png").read_bytes()[:400])  # a header that promises 600×400, then nothing
    assert window.files.open_path(tmp_path / "big2.png", background=True)
    qtbot.waitUntil(lambda: window.files.opening is None, timeout=10000)
    assert "could not be read" in window.panel.message.text() and np.array_equal(window.document.image, big)
