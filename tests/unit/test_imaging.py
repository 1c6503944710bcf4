import os

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from engines import imaging
from engines.api import InputError
from tests.conftest import blob_mask, textured


def distance_from_mask(mask):
    return ndimage.distance_transform_edt(mask < 128)


@pytest.mark.parametrize("size,radius", [((871, 1237), 8), ((31, 17), 3), ((300, 200), 0), ((64, 64), 20.5)])
def test_paste_back_leaves_everything_beyond_the_feather_bit_identical(size, radius):
    h, w = size
    original, generated = textured(h, w, 1), textured(h, w, 2)
    mask = blob_mask(h, w, seed=3)
    alpha = imaging.feather_mask(mask, radius)
    out = imaging.paste_back(original, generated, (0, 0, w, h), alpha)
    far = distance_from_mask(mask) > radius
    assert np.array_equal(out[far], original[far])
    inside = mask >= 128
    assert np.array_equal(out[inside], generated[inside])


def test_paste_back_touches_nothing_outside_its_box():
    original = textured(100, 120)
    box = (30, 20, 40, 50)
    out = imaging.paste_back(original, np.zeros((50, 40, 3), np.uint8), box, np.ones((50, 40), np.float32))
    assert (out[20:70, 30:70] == 0).all()
    outside = np.ones((100, 120), bool)
    outside[20:70, 30:70] = False
    assert np.array_equal(out[outside], original[outside])


def test_feather_ramps_from_one_to_zero():
    mask = np.zeros((101, 101), np.uint8)
    mask[40:61, 40:61] = 255
    alpha = imaging.feather_mask(mask, 10)
    assert alpha[50, 50] == 1.0
    row = alpha[50, 60:75]
    assert (np.diff(row) <= 0).all() and row[0] == 1.0 and row[-1] == 0.0
    assert 0 < alpha[50, 65] < 1


def test_grow_and_shrink_by_euclidean_distance():
    mask = np.zeros((50, 50), np.uint8)
    mask[25, 25] = 255
    grown = imaging.grow_mask(mask, 5)
    assert grown[25, 30] == 255 and grown[25, 31] == 0 and grown[29, 29] == 0  # a disc, not a square
    assert imaging.grow_mask(grown, -5)[25, 25] == 255
    assert imaging.grow_mask(grown, -6).max() == 0


@pytest.mark.parametrize("w,h,native", [(1237, 871, 512), (4000, 3000, 512), (17, 9, 512), (300, 2000, 1024), (512, 512, 512)])
def test_working_size_is_native_area_in_multiples_of_eight(w, h, native):
    ww, wh = imaging.working_size(w, h, native)
    assert ww % 8 == 0 and wh % 8 == 0
    assert abs(ww * wh - native * native) / (native * native) < 0.1
    assert abs(ww / wh - w / h) / (w / h) < 0.1


def test_crop_and_scale_round_trip_keeps_size_and_content():
    image = textured(871, 1237)
    box = imaging.expand_box((500, 300, 101, 77), 48, 1237, 871)
    part = imaging.crop(image, box)
    size = imaging.working_size(box[2], box[3], 512)
    back = imaging.resize(imaging.resize(part, size), (box[2], box[3]))
    assert back.shape == part.shape
    assert np.abs(back.astype(int) - part.astype(int)).mean() < 6


def test_expand_box_is_clipped_to_the_image():
    assert imaging.expand_box((5, 5, 10, 10), 20, 30, 25) == (0, 0, 30, 25)
    assert imaging.expand_box((10, 10, 5, 5), 2, 100, 100) == (8, 8, 9, 9)


def test_mask_bbox():
    mask = np.zeros((40, 50), np.uint8)
    assert imaging.mask_bbox(mask) is None
    mask[10:20, 5:8] = 255
    assert imaging.mask_bbox(mask) == (5, 10, 3, 10)


def test_prefill_takes_colour_from_the_surroundings():
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, :32] = (200, 30, 30)
    image[:, 32:] = (30, 30, 200)
    image[20:40, 5:25] = (0, 255, 0)  # what the hole hides must not show through
    mask = np.zeros((64, 64), np.uint8)
    mask[20:40, 5:25] = 255
    filled = imaging.prefill(image, mask)
    hole = filled[20:40, 5:25].astype(int)
    assert hole[..., 0].mean() > 150 and hole[..., 1].max() < 80
    assert np.array_equal(filled[mask == 0], image[mask == 0])


def test_lab_round_trip():
    rgb = textured(40, 40)
    assert np.abs(imaging.lab_to_rgb(imaging.rgb_to_lab(rgb)).astype(int) - rgb).max() <= 1


def test_match_colors_removes_a_colour_cast_measured_on_context(photo):
    original = photo[100:300, 100:300]
    drifted = np.clip(original.astype(int) + (18, -10, 5), 0, 255).astype(np.uint8)
    measure = np.ones(original.shape[:2], bool)
    measure[60:140, 60:140] = False  # the "generated" middle is not measured, but is corrected too
    matched = imaging.match_colors(drifted, original, measure)
    before = np.abs(drifted.astype(int) - original)[~measure].mean()
    after = np.abs(matched.astype(int) - original)[~measure].mean()
    assert after < before / 3


def test_unreadable_files_give_plain_errors(tmp_path):
    (tmp_path / "text.png").write_text("not a picture")
    good = tmp_path / "good.png"
    Image.fromarray(textured(40, 40)).save(good)
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:60])
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("text.png", "truncated.png", "empty.png", "missing.png"):
        with pytest.raises(InputError) as err:
            imaging.load_image(tmp_path / name)
        assert name in str(err.value) and "\n" not in str(err.value)


def test_greyscale_16bit_and_palette_load_as_rgb(tmp_path):
    grey16 = (np.arange(64 * 32).reshape(32, 64) * 30).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    Image.fromarray(textured(32, 64)[..., 0], "L").save(tmp_path / "l.png")
    Image.fromarray(textured(32, 64)).convert("P").save(tmp_path / "p.png")
    for name in ("g16.png", "l.png", "p.png"):
        image = imaging.load_image(tmp_path / name)
        assert image.shape == (32, 64, 3) and image.dtype == np.uint8
    g = imaging.load_image(tmp_path / "g16.png")
    assert g[-1, -1, 0] > 200  # scaled from 16 bits, not clipped to 255 everywhere
    assert g[0, 1, 0] < 5


def test_exif_orientation_is_applied(tmp_path):
    image = Image.fromarray(textured(20, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert imaging.load_image(tmp_path / "rotated.jpg").shape == (40, 20, 3)


def test_mask_must_match_the_image(tmp_path):
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(tmp_path / "m.png")
    assert imaging.load_mask(tmp_path / "m.png", (40, 30)).shape == (30, 40)
    with pytest.raises(InputError, match="same size"):
        imaging.load_mask(tmp_path / "m.png", (41, 30))


def test_save_is_atomic_and_refuses_unknown_endings(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"previous contents")
    imaging.save_image(target, textured(10, 12))
    assert imaging.load_image(target).shape == (10, 12, 3)
    with pytest.raises(InputError, match="PNG, JPEG or WebP"):
        imaging.save_image(tmp_path / "out.gif", textured(10, 12))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temporary file left behind
    target.chmod(0o640)
    imaging.save_image(target, textured(10, 12))
    assert target.stat().st_mode & 0o777 == 0o640  # replacing keeps the file's permissions
    old = os.umask(0o022)
    try:
        imaging.save_image(tmp_path / "new.png", textured(10, 12))
    finally:
        os.umask(old)
    assert (tmp_path / "new.png").stat().st_mode & 0o777 == 0o644  # a new file gets what the umask gives, not 0600
