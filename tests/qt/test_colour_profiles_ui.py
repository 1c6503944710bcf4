"""A picture in Adobe RGB or Display P3 in the window: what a result did not change is saved bit for bit in
the file's own colour space, with its profile; at start the window removes what killed saves left."""

import io

import numpy as np
from PIL import Image, ImageCms
from PySide6.QtCore import Qt

from engines.api import Result
from tests import pictures
from tests.qt.conftest import open_window, paint_stroke


def raw(path) -> tuple[np.ndarray, bytes | None]:
    """The file's values as stored (never converted) and its profile."""
    with Image.open(path) as im:
        return np.array(im), im.info.get("icc_profile")


def open_wide(window, tmp_path, profile: bytes, name: str = "wide.png") -> np.ndarray:
    own = pictures.wide_gamut_photo(120, 160)
    pictures.save_with_profile(tmp_path / name, own, profile)
    assert window.files.open_path(tmp_path / name)
    assert window.document.colour is not None and window.document.colour.profile == profile
    return own


def test_a_result_applied_and_saved_leaves_the_rest_of_the_file_as_it_was(qtbot, window, tmp_path):
    for profile in (pictures.adobe_rgb_profile(), pictures.display_p3_profile()):
        own = open_wide(window, tmp_path, profile)
        doc = window.document
        result = doc.image.copy()
        result[30:60, 40:90] = (220, 60, 20)
        window.generation._apply(Result(result, (40, 30, 50, 30)), "Inpaint")  # as a finished job's result is applied
        assert window.files.save_to(tmp_path / "out.png")
        saved, icc = raw(tmp_path / "out.png")
        outside = np.ones(own.shape[:2], bool)
        outside[30:60, 40:90] = False
        assert icc == profile and np.array_equal(saved[outside], own[outside])
        assert (saved[-12:] == (0, 255, 0)).all()  # the green sRGB cannot show is still the file's own
        doc.undo_stack.undo()  # back to the picture as opened: the whole file comes back exactly
        assert window.files.save_to(tmp_path / "undone.png")
        assert np.array_equal(raw(tmp_path / "undone.png")[0], own)


def test_an_uncrop_keeps_the_old_picture_at_its_offset_and_undo_puts_it_back(qtbot, window, tmp_path):
    profile = pictures.adobe_rgb_profile()
    own = open_wide(window, tmp_path, profile)
    doc = window.document
    left, top = 32, 16
    grown = np.full((own.shape[0] + top + 8, own.shape[1] + left + 24, 3), 128, np.uint8)
    grown[top : top + own.shape[0], left : left + own.shape[1]] = doc.image
    window.generation._apply(Result(grown, (0, 0, grown.shape[1], grown.shape[0]), offset=(left, top)), "Uncrop")
    assert doc.size == (grown.shape[1], grown.shape[0]) and doc.colour.offset == (left, top)
    assert window.files.save_to(tmp_path / "grown.png")
    saved, icc = raw(tmp_path / "grown.png")
    assert icc == profile and np.array_equal(saved[top : top + own.shape[0], left : left + own.shape[1]], own)
    doc.undo_stack.undo()
    assert doc.colour.offset == (0, 0)
    assert window.files.save_to(tmp_path / "back.png") and np.array_equal(raw(tmp_path / "back.png")[0], own)
    doc.undo_stack.redo()
    assert doc.colour.offset == (left, top)


def test_a_real_inpaint_changes_nothing_outside_its_region_in_the_file(qtbot, window, tmp_path):
    profile = pictures.display_p3_profile()
    own = open_wide(window, tmp_path, profile)
    paint_stroke(qtbot, window, [(60, 50), (80, 60)])
    with qtbot.waitSignal(window.generation.finished, timeout=120000):
        qtbot.mouseClick(window.panel.generate, Qt.LeftButton)
    qtbot.waitUntil(lambda: window.document.undo_stack.count() == 2, timeout=10000)
    assert window.files.save_to(tmp_path / "inpainted.png")
    saved, icc = raw(tmp_path / "inpainted.png")
    view = np.asarray(ImageCms.profileToProfile(Image.fromarray(own), ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                                                ImageCms.createProfile("sRGB"), outputMode="RGB"))
    unchanged = (window.document.image == view).all(-1)
    assert icc == profile and unchanged.mean() > 0.5 and not unchanged.all()
    assert np.array_equal(saved[unchanged], own[unchanged])


def test_the_window_removes_stale_temporaries_from_the_recent_folders_at_start(qtbot, tmp_path, model_dir, photo):
    import subprocess
    import sys

    from editor.settings import Settings

    album = tmp_path / "album"
    album.mkdir()
    Image.fromarray(photo[:32, :32]).save(album / "saved.png")
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    stale = album / f".sandcastle-{done.pid}-k1ll3d00.png"
    stale.write_bytes(b"half a picture")
    settings = Settings.load()
    settings["recent_files"] = [str(album / "saved.png")]
    settings.save()
    win = open_window(qtbot, tmp_path, photo, "--model", str(model_dir("inpaint")))
    try:
        win.files._cleaner.join(10)
        assert not stale.exists() and (album / "saved.png").exists()
    finally:
        win.shutdown()


def test_a_crash_restored_picture_still_saves_in_its_own_colours(qtbot, window, tmp_path):
    """The autosave keeps the file's profile and own pixels: after a crash and Restore, Save writes the
    untouched pixels back bit for bit with the profile, as it would have before the crash."""
    from editor.autosave import read_snapshot, write_snapshot

    profile = pictures.adobe_rgb_profile()
    own = open_wide(window, tmp_path, profile)
    result = window.document.image.copy()
    result[10:20, 10:30] = (10, 200, 10)
    window.generation._apply(Result(result, (10, 10, 20, 10)), "Inpaint")
    write_snapshot(tmp_path / "session", window.snapshot(), clean_exit=False)
    snap = read_snapshot(tmp_path / "session", 10**8)
    assert snap.colour is not None and snap.colour.profile == profile
    window.restore(snap)
    assert window.files.save_to(tmp_path / "restored.png")
    saved, icc = raw(tmp_path / "restored.png")
    outside = np.ones(own.shape[:2], bool)
    outside[10:20, 10:30] = False
    assert icc == profile and np.array_equal(saved[outside], own[outside])
