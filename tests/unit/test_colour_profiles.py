"""Pictures in a colour space other than sRGB: the editor works on an sRGB view, and a save writes the
file's own values back wherever nothing changed, with the file's profile, so nothing is lost."""

import io
import os

import numpy as np
import pytest
from PIL import Image, ImageCms

from engines import imaging, services
from tests import pictures

PROFILES = {"Adobe RGB": pictures.adobe_rgb_profile, "Display P3": pictures.display_p3_profile}
REGION = np.s_[20:50, 30:70]  # rows, columns of the change


def raw(path) -> np.ndarray:
    """The file's values as stored: decoded, never converted."""
    with Image.open(path) as im:
        return np.array(im)


def icc(path) -> bytes | None:
    with Image.open(path) as im:
        return im.info.get("icc_profile")


def to_srgb(values: np.ndarray, profile: bytes) -> np.ndarray:
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    return np.asarray(ImageCms.profileToProfile(Image.fromarray(values), source, ImageCms.createProfile("sRGB"), outputMode="RGB"))


def colour_difference(a: np.ndarray, b: np.ndarray) -> float:
    """The largest CIE76 ΔE between two sRGB pictures: 8-bit values in a wider space are coarser steps, so
    a trip through one moves dark channels of saturated colours by several values but the colour by little."""
    return float(np.linalg.norm(imaging.rgb_to_lab(a) - imaging.rgb_to_lab(b), axis=-1).max())


def outside(shape, region=REGION) -> np.ndarray:
    keep = np.ones(shape[:2], bool)
    keep[region] = False
    return keep


def edited(image: np.ndarray, region=REGION) -> np.ndarray:
    """What an inpaint does to the sRGB view: new pixels inside the region, the rest as it was."""
    out = image.copy()
    out[region] = (200, 40, 90)
    out[region][::3] = (15, 150, 230)
    return out


def test_the_profiles_built_here_are_what_they_say(tmp_path):
    for name, profile in PROFILES.items():
        parsed = ImageCms.ImageCmsProfile(io.BytesIO(profile()))
        assert ImageCms.getProfileDescription(parsed).strip() == name.replace("Adobe RGB", "Adobe RGB (1998)")
    grey = np.full((2, 2, 3), 128, np.uint8)
    assert np.array_equal(to_srgb(grey, pictures.display_p3_profile()), grey)  # P3 has sRGB's curve and white
    green = np.zeros((1, 1, 3), np.uint8)
    green[..., 1] = 255
    for profile in PROFILES.values():
        seen = to_srgb(green, profile())
        back = np.asarray(ImageCms.profileToProfile(Image.fromarray(seen), ImageCms.createProfile("sRGB"),
                                                    ImageCms.ImageCmsProfile(io.BytesIO(profile())), outputMode="RGB"))
        assert back[0, 0, 0] > 60  # pure green of the wide space does not survive a trip through sRGB


@pytest.mark.parametrize("name", PROFILES)
def test_a_change_in_a_region_leaves_every_other_pixel_bit_identical(tmp_path, name):
    profile = PROFILES[name]()
    own = pictures.wide_gamut_photo()
    pictures.save_with_profile(tmp_path / "in.png", own, profile)
    picture = services.read_picture(str(tmp_path / "in.png"))
    assert picture.colour is not None and picture.colour.profile == profile and picture.alpha is None
    assert np.array_equal(picture.image, to_srgb(own, profile))  # the editor sees sRGB
    assert not np.array_equal(picture.image, own)  # (which differs from the file's values: the test means something)
    change = edited(picture.image)
    services.save_image(str(tmp_path / "out.png"), change, colour=picture.colour)
    saved = raw(tmp_path / "out.png")
    keep = outside(own.shape)
    assert np.array_equal(saved[keep], own[keep])
    assert icc(tmp_path / "out.png") == profile
    # The new pixels went back through the profile: seen in sRGB they are what the edit made.
    assert colour_difference(to_srgb(saved, profile)[REGION], change[REGION]) < 2.5
    assert services.read_picture(str(tmp_path / "out.png")).colour.profile == profile


@pytest.mark.parametrize("name", PROFILES)
def test_a_saturated_colour_outside_srgb_survives_unclipped(tmp_path, name):
    profile = PROFILES[name]()
    own = pictures.wide_gamut_photo()
    pictures.save_with_profile(tmp_path / "in.png", own, profile)
    picture = imaging.read_picture(tmp_path / "in.png")
    imaging.save_image(tmp_path / "out.png", edited(picture.image), colour=picture.colour)
    saved = raw(tmp_path / "out.png")
    assert (saved[-12:] == (0, 255, 0)).all()
    # Through sRGB alone the same green comes back with red in it: sRGB cannot hold it.
    naive = np.asarray(ImageCms.profileToProfile(Image.fromarray(picture.image[-12:]), ImageCms.createProfile("sRGB"),
                                                 ImageCms.ImageCmsProfile(io.BytesIO(profile)), outputMode="RGB"))
    assert naive[..., 0].min() > 40


def test_an_unchanged_picture_is_written_back_exactly_in_every_format(tmp_path):
    profile = pictures.adobe_rgb_profile()
    own = pictures.wide_gamut_photo()
    pictures.save_with_profile(tmp_path / "in.png", own, profile)
    picture = imaging.read_picture(tmp_path / "in.png")
    imaging.save_image(tmp_path / "same.png", picture.image, colour=picture.colour)
    assert np.array_equal(raw(tmp_path / "same.png"), own)
    for ending in ("jpg", "webp"):  # lossy: the values are close, and the profile says what they mean
        imaging.save_image(tmp_path / f"same.{ending}", picture.image, colour=picture.colour)
        assert icc(tmp_path / f"same.{ending}") == profile
        assert np.abs(raw(tmp_path / f"same.{ending}").astype(int) - own).mean() < 6


def test_a_jpeg_with_a_profile_keeps_its_own_decoded_values(tmp_path):
    profile = pictures.display_p3_profile()
    own = pictures.wide_gamut_photo()
    Image.fromarray(own).save(tmp_path / "in.jpg", quality=92, icc_profile=profile)
    decoded = raw(tmp_path / "in.jpg")
    picture = imaging.read_picture(tmp_path / "in.jpg")
    imaging.save_image(tmp_path / "out.png", edited(picture.image), colour=picture.colour)
    keep = outside(own.shape)
    assert np.array_equal(raw(tmp_path / "out.png")[keep], decoded[keep]) and icc(tmp_path / "out.png") == profile


def test_uncrop_keeps_the_old_picture_bit_identical_at_its_offset(tmp_path):
    profile = pictures.adobe_rgb_profile()
    own = pictures.wide_gamut_photo()
    pictures.save_with_profile(tmp_path / "in.png", own, profile)
    picture = services.read_picture(str(tmp_path / "in.png"))
    left, top = 24, 8
    grown = imaging.extend_canvas(picture.image, (left, top, 40, 16), "edge-blur")  # what uncrop returns, the old picture inside
    grown[top + 30 : top + 40, left + 50 : left + 60] = (250, 250, 10)  # and one change inside the old picture
    services.save_image(str(tmp_path / "out.png"), grown, colour=picture.colour.moved((left, top)))
    saved = raw(tmp_path / "out.png")
    inner = saved[top : top + own.shape[0], left : left + own.shape[1]]
    keep = outside(own.shape, np.s_[30:40, 50:60])
    assert np.array_equal(inner[keep], own[keep]) and icc(tmp_path / "out.png") == profile
    border = np.ones(saved.shape[:2], bool)
    border[top : top + own.shape[0], left : left + own.shape[1]] = False
    assert colour_difference(to_srgb(saved, profile)[border], grown[border]) < 2.5  # the new border went through the profile
    twice = picture.colour.moved((left, top)).moved((5, 0))  # a second uncrop adds its own offset
    assert twice.offset == (left + 5, top) and picture.colour.offset == (0, 0)


def test_transparency_and_exif_rotation_with_a_profile(tmp_path):
    profile = pictures.display_p3_profile()
    own = pictures.wide_gamut_photo(40, 60)
    rgba = np.dstack([own, np.linspace(0, 255, 60, dtype=np.uint8)[None, :].repeat(40, 0)])
    Image.fromarray(rgba).save(tmp_path / "in.png", icc_profile=profile)
    picture = imaging.read_picture(tmp_path / "in.png")
    assert picture.colour is not None and np.array_equal(picture.alpha, rgba[..., 3])
    imaging.save_image(tmp_path / "out.png", edited(picture.image, np.s_[5:10, 5:10]), alpha=picture.alpha, colour=picture.colour)
    keep = outside(own.shape, np.s_[5:10, 5:10])
    assert np.array_equal(raw(tmp_path / "out.png")[keep], rgba[keep]) and icc(tmp_path / "out.png") == profile

    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways; shown turned
    Image.fromarray(np.ascontiguousarray(np.rot90(own, 1))).save(tmp_path / "turned.png", icc_profile=profile, exif=exif.tobytes())
    picture = imaging.read_picture(tmp_path / "turned.png")
    assert picture.image.shape == own.shape and picture.colour is not None
    imaging.save_image(tmp_path / "upright.png", picture.image, colour=picture.colour)
    assert np.array_equal(raw(tmp_path / "upright.png"), own)


def test_pictures_without_a_foreign_profile_behave_as_before(tmp_path):
    own = pictures.wide_gamut_photo()
    Image.fromarray(own).save(tmp_path / "plain.png")
    pictures.save_with_profile(tmp_path / "srgb.png", own, pictures.rgb_profile("sRGB IEC61966-2.1"))
    Image.fromarray(own).save(tmp_path / "damaged.png", icc_profile=b"not a profile")
    for name in ("plain.png", "srgb.png", "damaged.png"):
        picture = imaging.read_picture(tmp_path / name)
        assert picture.colour is None and np.array_equal(picture.image, own), name
        imaging.save_image(tmp_path / "out.png", edited(picture.image), colour=picture.colour)
        assert icc(tmp_path / "out.png") is None and np.array_equal(raw(tmp_path / "out.png"), edited(own))
    # CMYK and greyscale keep being converted to sRGB, with no record: they are written as sRGB.
    Image.fromarray(own).convert("CMYK").save(tmp_path / "cmyk.jpg")
    assert imaging.read_picture(tmp_path / "cmyk.jpg").colour is None
    # A profile only a reader can use (here: an RGB profile on a greyscale picture) is no record either.
    Image.fromarray(own[..., 0]).save(tmp_path / "grey.png", icc_profile=pictures.adobe_rgb_profile())
    assert imaging.read_picture(tmp_path / "grey.png").colour is None
    assert imaging.load_picture(tmp_path / "plain.png")[0].shape == own.shape  # the two-value form stays for callers that need no colour


def test_the_rocket_from_scikit_image_keeps_its_adobe_rgb(tmp_path):
    skimage = pytest.importorskip("skimage")
    rocket = os.path.join(os.path.dirname(skimage.__file__), "data", "rocket.jpg")
    if not os.path.isfile(rocket):
        pytest.skip("scikit-image has no rocket.jpg here")
    with Image.open(rocket) as im:
        profile, decoded = im.info.get("icc_profile"), np.array(im)
    if not profile or "Adobe" not in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(profile))):
        pytest.skip("this rocket.jpg carries no Adobe RGB profile")
    picture = services.read_picture(rocket)
    assert picture.colour is not None and picture.colour.description.startswith("Adobe RGB")
    region = np.s_[100:160, 200:300]
    services.save_image(str(tmp_path / "rocket.png"), edited(picture.image, region), colour=picture.colour)
    keep = outside(decoded.shape, region)
    assert np.array_equal(raw(tmp_path / "rocket.png")[keep], decoded[keep]) and icc(tmp_path / "rocket.png") == profile
