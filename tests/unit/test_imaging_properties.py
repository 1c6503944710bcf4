"""Property-based tests of the imaging functions, for random sizes, masks and boxes (hypothesis)."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engines import imaging

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def picture_and_mask(draw, max_side=64):
    h, w = draw(st.integers(8, max_side)), draw(st.integers(8, max_side))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    for _ in range(draw(st.integers(0, 4))):  # a few rectangles and some noise, thresholded as a painter's mask is
        y0, x0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        mask[y0 : y0 + draw(st.integers(1, h)), x0 : x0 + draw(st.integers(1, w))] = draw(st.integers(1, 255))
    return image, mask, rng


@SETTINGS
@given(picture_and_mask(), st.integers(0, 6), st.floats(0, 12), st.integers(0, 20))
def test_paste_back_changes_nothing_outside_the_feathered_mask(data, grow, feather, padding):
    image, mask, rng = data
    box, alpha, masked = imaging.working_region(image, mask, grow, feather, padding)
    x, y, w, h = box
    generated = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = imaging.paste_back(image, generated, box, alpha)
    full_alpha = np.zeros(image.shape[:2], np.float32)
    full_alpha[y : y + h, x : x + w] = alpha
    untouched = full_alpha == 0
    assert np.array_equal(out[untouched], image[untouched])  # bit for bit
    assert np.array_equal(out[full_alpha == 1], np.pad(generated, ((y, image.shape[0] - y - h), (x, image.shape[1] - x - w), (0, 0)))[full_alpha == 1])
    if masked:  # every painted pixel lies inside the box, at full strength
        assert np.all(full_alpha[mask >= 128] == 1)
    else:
        assert box == (0, 0, image.shape[1], image.shape[0])


@SETTINGS
@given(picture_and_mask(), st.integers(1, 200))
def test_crop_then_paste_with_full_alpha_is_the_identity(data, native):
    image, mask, rng = data
    box = imaging.mask_bbox(mask) or (0, 0, image.shape[1], image.shape[0])
    crop = imaging.crop(image, box)
    assert crop.shape[:2] == (box[3], box[2])
    assert np.array_equal(imaging.paste_back(image, crop, box, np.ones(crop.shape[:2], np.float32)), image)
    w, h = imaging.working_size(box[2], box[3], max(native, 8) * 8)
    assert w % 8 == 0 and h % 8 == 0 and w >= 8 and h >= 8


@SETTINGS
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_scaling_up_by_a_whole_factor_and_back_returns_the_picture(h, w, factor, seed):
    image = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    from PIL import Image

    up = imaging.resize(image, (w * factor, h * factor), Image.NEAREST)
    assert np.array_equal(imaging.resize(up, (w, h), Image.NEAREST), image)


@SETTINGS
@given(picture_and_mask(), st.integers(0, 10))
def test_grow_and_shrink_are_monotone_and_shrink_undoes_grow_on_rectangles(data, pixels):
    _, mask, _ = data
    inside = imaging.binary(mask)
    grown = imaging.binary(imaging.grow_mask(mask, pixels))
    shrunk = imaging.binary(imaging.grow_mask(mask, -pixels))
    assert np.all(grown[inside]) and not np.any(shrunk[~inside])  # growing keeps every pixel, shrinking adds none
    assert imaging.grow_mask(mask, 0).tolist() == np.where(inside, 255, 0).astype(np.uint8).tolist()
    if pixels and inside.any():
        rows, cols = np.flatnonzero(inside.any(1)), np.flatnonzero(inside.any(0))
        box = np.zeros_like(inside)
        box[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
        rect = np.where(box, 255, 0).astype(np.uint8)
        padded = np.pad(rect, pixels + 1)  # room to grow inside the picture
        back = imaging.grow_mask(imaging.grow_mask(padded, pixels), -pixels)
        assert np.array_equal(back, padded)


@SETTINGS
@given(picture_and_mask(), st.floats(0.5, 16))
def test_feathering_is_one_on_the_mask_zero_beyond_the_radius_and_in_between_otherwise(data, radius):
    _, mask, _ = data
    alpha = imaging.feather_mask(mask, radius)
    inside = imaging.binary(mask)
    assert alpha.dtype == np.float32 and np.all((alpha >= 0) & (alpha <= 1))
    assert np.all(alpha[inside] == 1)
    if inside.any():
        from scipy import ndimage

        far = ndimage.distance_transform_edt(~inside) > radius
        assert np.all(alpha[far] == 0)
    else:
        assert not alpha.any()


@SETTINGS
@given(picture_and_mask(), st.data())
def test_fill_changes_only_the_connected_area_clicked(data, draw):
    _, mask, _ = data
    h, w = mask.shape
    x, y = draw.draw(st.integers(0, w - 1)), draw.draw(st.integers(0, h - 1))
    value = 255 if mask[y, x] < 128 else 0
    out = imaging.fill_region(mask, x, y, value)
    changed = out != mask
    from scipy import ndimage

    same_side = imaging.binary(mask) == imaging.binary(mask)[y, x]
    labels, _ = ndimage.label(same_side)  # 4-connected, as the fill
    region = labels == labels[y, x]
    assert np.all(out[region] == value) and np.array_equal(out[~region], mask[~region])
    assert not changed[~region].any()


def test_empty_and_full_masks_at_the_extremes():
    empty, full = np.zeros((9, 11), np.uint8), np.full((9, 11), 255, np.uint8)
    assert not imaging.grow_mask(empty, 5).any() and not imaging.feather_mask(empty, 4).any()
    assert imaging.grow_mask(full, -3).min() == 255 and imaging.feather_mask(full, 4).min() == 1
