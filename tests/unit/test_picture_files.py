"""Opening and saving the pictures people have: profiles, transparency, depth, palettes, size limits."""

import numpy as np
import pytest
from PIL import Image

from engines import imaging
from engines.api import InputError
from tests import pictures


def test_an_embedded_colour_profile_is_converted_to_srgb(tmp_path):
    red = np.zeros((8, 8, 3), np.uint8)
    red[...] = (255, 0, 0)
    pictures.save_with_profile(tmp_path / "swapped.png", red, pictures.swapped_profile())
    rgb = imaging.load_image(tmp_path / "swapped.png")
    assert rgb[0, 0, 1] > 240 and rgb[0, 0, 0] < 15  # red in that space is green in sRGB
    pictures.save_with_profile(tmp_path / "same.png", red, pictures.rgb_profile("sRGB IEC61966-2.1"))
    assert np.array_equal(imaging.load_image(tmp_path / "same.png"), red)  # an sRGB profile changes nothing
    Image.fromarray(red).save(tmp_path / "damaged.png", icc_profile=b"not a profile")
    assert np.array_equal(imaging.load_image(tmp_path / "damaged.png"), red)


def test_transparency_is_kept_aside_and_written_back(tmp_path):
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = np.linspace(0, 255, 12, dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    rgb, alpha = imaging.load_picture(tmp_path / "a.png")
    assert rgb.shape == (10, 12, 3) and np.array_equal(alpha, rgba[..., 3])
    imaging.save_image(tmp_path / "b.png", rgb, alpha=alpha)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), rgba)
    imaging.save_image(tmp_path / "b.jpg", rgb, alpha=alpha)  # JPEG has no alpha: transparent parts turn white
    flat = np.asarray(Image.open(tmp_path / "b.jpg"))
    assert flat[5, 0].min() > 245 and abs(int(flat[5, 11, 0]) - 200) < 6
    Image.fromarray(rgba[..., :3]).save(tmp_path / "opaque.png")
    assert imaging.load_picture(tmp_path / "opaque.png")[1] is None


def test_palette_with_transparency_and_sixteen_bit_pictures(tmp_path):
    pal = Image.new("P", (6, 4))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((0, 0), 1)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    rgb, alpha = imaging.load_picture(tmp_path / "p.png")
    assert tuple(rgb[0, 0]) == (0, 0, 255) and alpha[0, 0] == 255 and alpha[1, 1] == 0
    deep = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    grey = imaging.load_image(tmp_path / "deep.png")
    assert grey.shape == (8, 8, 3) and grey[7, 7, 0] == round(63000 / 65535 * 255)  # scaled, not clipped


def test_exif_orientation_is_applied(tmp_path):
    tall = np.zeros((40, 20, 3), np.uint8)
    tall[:10] = 255  # white at the top
    pictures.exif_rotated_jpeg(tmp_path / "r.jpg", np.ascontiguousarray(np.rot90(tall, 1)), orientation=6)
    shown = imaging.load_image(tmp_path / "r.jpg")
    assert shown.shape == (40, 20, 3) and shown[2, 10].min() > 200 and shown[35, 10].max() < 50


def test_pictures_above_the_limit_are_refused_before_decoding(tmp_path):
    Image.new("RGB", (300, 200)).save(tmp_path / "big.png")
    with pytest.raises(InputError, match=r"big.png is 300×200 .*up to 0.05 million pixels"):
        imaging.load_picture(tmp_path / "big.png", max_pixels=50_000)
    assert imaging.load_picture(tmp_path / "big.png", max_pixels=60_000)[0].shape == (200, 300, 3)
