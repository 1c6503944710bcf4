"""Faces for DiffAE as the model was trained on them: FFHQ's alignment (dlib's 68 landmarks, the eye and
mouth quad), on scikit-image's astronaut photo, and what the Attributes task refuses."""

import json

import numpy as np
import pytest

from engines import registry, testing
from engines.api import CancelToken, InputError, ModelUnavailable, Request, Task
from engines.diffae import align
from engines.diffae.engine import AMOUNT_LIMIT, parse_attributes

needs_dlib = pytest.mark.skipif(not align.available(), reason="needs the faces extra (dlib-bin, face-recognition-models)")


@pytest.fixture(scope="module")
def diffae_folder(tmp_path_factory):
    return testing.write_diffae(tmp_path_factory.mktemp("diffae"))


def ffhq_position(quad: np.ndarray, point: np.ndarray, size: int) -> np.ndarray:
    """Where FFHQ's alignment puts a photo point in the square: its coordinates along the quad's top and
    left edges (the quad's corners become the square's corners)."""
    across, down = quad[3] - quad[0], quad[1] - quad[0]
    offset = point - quad[0]
    return np.array([offset @ across / (across @ across), offset @ down / (down @ down)]) * size


@needs_dlib
def test_the_astronauts_face_is_found_and_aligned_with_the_eyes_where_ffhq_puts_them(photo):
    faces = align.find_faces(photo)
    assert faces and faces[0].box[0] < 256 < faces[0].box[0] + faces[0].box[2] and faces[0].box[1] < 130  # her face, top centre
    face = faces[0]
    alignment = align.Alignment(face.quad, 256)
    aligned = alignment.warp(photo)
    assert aligned.shape == (256, 256, 3)
    found = align.find_faces(aligned)  # the landmark model again, on the aligned crop
    assert len(found) == 1
    for eye in (slice(36, 42), slice(42, 48)):
        expected = ffhq_position(face.quad, face.landmarks[eye].mean(axis=0), 256)
        got = found[0].landmarks[eye].mean(axis=0)
        assert np.hypot(*(got - expected)) < 2.0, (eye, got, expected)
    # FFHQ's layout: eyes level, about a quarter of the side apart, a little above the middle.
    left, right = found[0].landmarks[36:42].mean(axis=0), found[0].landmarks[42:48].mean(axis=0)
    assert abs(left[1] - right[1]) < 2 and 56 < right[0] - left[0] < 72 and 105 < left[1] < 130


@needs_dlib
def test_pasting_back_changes_only_the_faces_quad(photo):
    alignment = align.Alignment(align.find_faces(photo)[0].quad, 256)
    out = alignment.paste(photo, 255 - alignment.warp(photo), feather=12)
    changed = np.any(out != photo, axis=2)
    x, y, w, h = alignment.box(512, 512)
    assert changed.any() and not changed[:y].any() and not changed[y + h:].any() and not changed[:, :x].any() and not changed[:, x + w:].any()
    # Inside the quad the edit shows: the middle of the face is inverted (up to the warp's interpolation).
    centre = np.round(alignment.quad.mean(axis=0)).astype(int)
    assert np.abs(out[centre[1], centre[0]].astype(int) - (255 - photo[centre[1], centre[0]].astype(int))).max() < 40


@needs_dlib
def test_the_face_inside_the_dragged_square_is_the_one_edited(photo):
    faces = align.find_faces(photo)
    assert len(faces) == 2  # dlib finds her face and a small one on the helmet patch
    assert align.choose_face(faces, None) is faces[0]
    second = faces[1]
    x, y, w, h = second.box
    assert align.choose_face(faces, (x - 10, y - 10, w + 20, w + 20)) is second
    with pytest.raises(InputError, match="No face was found inside the square"):
        align.choose_face(faces, (450, 450, 60, 60))
    with pytest.raises(InputError, match="No face was found in the picture"):
        align.choose_face([], None)


@needs_dlib
def test_an_aligned_edit_keeps_every_pixel_outside_the_face(diffae_folder, photo):
    engine = registry.get("attributes")
    request = Request(Task.ATTRIBUTES, photo, None, model=str(diffae_folder),
                      params={"attributes": "Smiling=0.4", "inversion_steps": 10, "render_steps": 5})
    engine.check(request)
    steps = []
    result = engine.run(request, steps.append, CancelToken())
    x, y, w, h = result.box
    outside = np.ones(photo.shape[:2], bool)
    outside[y : y + h, x : x + w] = False
    assert np.array_equal(result.image[outside], photo[outside]) and not np.array_equal(result.image, photo)
    assert result.info["alignment"] == "face" and len(result.info["face_quad"]) == 4
    rendering = [s for s in steps if s.phase == "Rendering"]
    assert len(rendering) == 5 and rendering[-1].picture().shape == (h, w, 3)


@pytest.mark.parametrize("amount", ["nan", "inf", "-inf", "1e9", str(AMOUNT_LIMIT + 0.1)])
def test_amounts_must_be_finite_and_in_range(amount):
    with pytest.raises(InputError, match=f"must be a number from -{AMOUNT_LIMIT:g} to {AMOUNT_LIMIT:g}"):
        parse_attributes(f"Smiling={amount}")
    assert parse_attributes(f"Smiling={AMOUNT_LIMIT}")  # the limit itself is allowed


@pytest.mark.parametrize("config, message", [
    ({"channels": 128, "sparkle": 1}, "settings DiffAE does not know: sparkle"),
    ({"channels": 10**9}, "channels must be a whole number from 1 to 4096"),
    ({"channel_mult": [1, 2, "x"]}, "channel_mult must be a whole number"),
    ({"channels": 4096, "channel_mult": [16, 16, 16, 16], "encoder_channel_mult": [16, 16, 16, 16]}, "billion parameters"),
    ({"channels": 100, "groups": 32}, "multiple of groups"),
])
def test_a_damaged_config_is_refused_before_any_model_is_built(diffae_folder, photo, tmp_path, config, message):
    folder = tmp_path / "diffae"
    folder.mkdir()
    for name in ("autoencoder.safetensors", "classifier.safetensors"):
        (folder / name).write_bytes((diffae_folder / name).read_bytes())
    (folder / "config.json").write_text(json.dumps(config))
    engine = registry.get("attributes")
    built = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("engines.diffae.engine.DiffAE", lambda cfg: built.append(cfg) or pytest.fail("no model may be built"))
        with pytest.raises(ModelUnavailable, match=message):
            engine.run(Request(Task.ATTRIBUTES, photo, None, model=str(folder), params={"alignment": "square"}), lambda s: None, CancelToken())
    assert not built
