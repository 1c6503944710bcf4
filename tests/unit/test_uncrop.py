import itertools

import numpy as np
import pytest
from scipy import ndimage

from engines import registry
from engines.api import CancelToken, Cancelled, InputError, Request, Task
from engines.uncrop import SIDES, plan_tiles

OVERLAP = 32


@pytest.fixture(scope="module")
def engine():
    return registry.get("uncrop")


@pytest.fixture(scope="module")
def picture(photo):
    return np.ascontiguousarray(photo[100:400, 50:450])  # 400×300, a real photograph


def request(picture, model, sides, steps=2, **params):
    return Request(Task.UNCROP, picture, None, prompt="a wide landscape", steps=steps, seed=3, model=str(model),
                   params={**dict(zip(SIDES, sides)), "overlap": OVERLAP, "scheduler": "DDIM", **params})


def beyond_band(picture, result, sides):
    """The original's pixels farther than the overlap band from the new area, before and after."""
    left, top, right, bottom = sides
    h, w = picture.shape[:2]
    new_area = np.ones(result.shape[:2], bool)
    new_area[top : top + h, left : left + w] = False
    far = ndimage.distance_transform_edt(~new_area)[top : top + h, left : left + w] > OVERLAP
    return picture[far], result[top : top + h, left : left + w][far]


@pytest.mark.parametrize("sides", [s for s in itertools.product((0, 72), repeat=4) if any(s)])
def test_every_combination_of_sides_gives_the_exact_size_and_keeps_the_original(engine, model_dir, picture, sides):
    req = request(picture, model_dir(), sides, steps=1)
    engine.check(req)
    result = engine.run(req, lambda s: None, CancelToken())
    left, top, right, bottom = sides
    assert result.image.shape == (300 + top + bottom, 400 + left + right, 3)
    assert result.offset == (left, top)
    before, after = beyond_band(picture, result.image, sides)
    assert np.array_equal(before, after)


def test_zero_on_all_sides_and_oversized_extensions_are_refused(engine, model_dir, picture):
    with pytest.raises(InputError, match="all four sides are 0"):
        engine.check(request(picture, model_dir(), (0, 0, 0, 0)))
    with pytest.raises(InputError, match="limit of 1024"):
        engine.check(request(picture, model_dir(), (0, 0, 700, 0), max_side=1024))


def test_large_extensions_work_in_passes_and_tiles_and_preview_each(engine, model_dir, picture):
    steps = []
    result = engine.run(request(picture, model_dir(), (300, 0, 0, 200)), steps.append, CancelToken())
    steps = [s for s in steps if not s.stage]  # "Loading …" comes first when the model was not in memory
    passes = result.info["passes"]
    assert passes > 4
    assert [(s.pass_index, s.step) for s in steps] == [(k, n) for k in range(1, passes + 1) for n in (1, 2)]
    assert all(s.passes == passes and s.offset == (300, 0) and s.picture() is not None for s in steps)
    for s in steps:  # every window is at most the model's native size: nothing is stretched
        assert s.box[2] <= 256 and s.box[3] <= 256


def seam_step(image, axis, at, width=4):
    """Mean colour difference between the `width`-pixel strips on either side of line `at`."""
    a = np.take(image, range(at - width, at), axis=axis).astype(float)
    b = np.take(image, range(at, at + width), axis=axis).astype(float)
    return np.abs(a.mean(axis=(0, 1)) - b.mean(axis=(0, 1))).max()


def own_steps(image, axis, width=4):
    """The same measure at every line of the picture: its own statistics of colour change."""
    return np.array([seam_step(image, axis, at, width) for at in range(width, image.shape[axis] - width)])


def test_no_hard_seam_at_the_border_or_between_tiles(engine, model_dir, picture):
    """A seam is hard when the colour step across it is an outlier among the picture's own steps at
    every other line (measured over 4-pixel strips, which averages texture out and keeps real steps)."""
    sides = (0, 0, 300, 0)
    result = engine.run(request(picture, model_dir(), sides, steps=3), lambda s: None, CancelToken()).image
    steps = own_steps(result, axis=1)
    limit = np.percentile(steps, 99)
    seams = {400} | {x for x, y, w, h in plan_tiles(_known(picture, sides), (0, 0, 400, 300), sides, 256, 128)} - {0}
    for x in sorted(seams):
        assert seam_step(result, 1, x) <= limit, f"hard seam at column {x}"
    # The measure does catch a hard seam: paste the untouched original back over the band.
    hard = result.copy()
    hard[:, :400] = picture
    assert seam_step(hard, 1, 400) > np.percentile(own_steps(hard, axis=1), 99)


def _known(picture, sides):
    left, top, right, bottom = sides
    h, w = picture.shape[:2]
    known = np.zeros((h + top + bottom, w + left + right), bool)
    known[top : top + h, left : left + w] = True
    return known


def test_cancel_in_the_middle_of_a_multi_pass_uncrop(engine, model_dir, picture):
    token, seen = CancelToken(), []

    def on_step(step):
        if step.stage:
            return
        seen.append((step.pass_index, step.step))
        if step.pass_index == 2 and step.step == 1:
            token.cancel()

    with pytest.raises(Cancelled):
        engine.run(request(picture, model_dir(), (0, 0, 400, 0)), on_step, token)
    assert seen == [(1, 1), (1, 2), (2, 1)]


@pytest.mark.parametrize("sides", [(0, 0, 1000, 0), (700, 700, 700, 700), (10, 0, 0, 3), (0, 600, 0, 0)])
def test_the_tile_plan_covers_everything_within_the_window(sides):
    known = _known(np.zeros((300, 400, 3)), sides)
    tiles = plan_tiles(known, (sides[0], sides[1], 400, 300), sides, 256, 128)
    covered = known.copy()
    for x, y, w, h in tiles:
        assert 0 < w <= 256 and 0 < h <= 256
        assert known[y : y + h, x : x + w].any() or covered[y : y + h, x : x + w].any()  # always some context
        covered[y : y + h, x : x + w] = True
    assert covered.all()
