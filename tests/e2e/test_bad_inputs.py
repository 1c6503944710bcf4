"""The corpus of awkward inputs, headless and in the window: a clear message (exit code 2 with one
line on stderr), or a normal result for the odd-but-valid ones; never a crash, a hang, or a changed
document."""

import numpy as np
import pytest
from PIL import Image

import main
from tests import pictures
from tests.conftest import blob_mask

CORPUS_NAMES = ["zero-byte file", "truncated PNG", "truncated JPEG", "text file named .png", "1×1 image", "16-bit PNG", "CMYK JPEG",
                "palette image with transparency", "animated GIF", "EXIF-rotated JPEG", "decompression-bomb header", "30000×30000 declared size"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, photo):
    folder = tmp_path_factory.mktemp("corpus")
    return folder, pictures.bad_input_corpus(folder, photo)


def run(capsys, *argv):
    code = main.main(["run", *argv])
    return code, capsys.readouterr().err.strip().splitlines()


def test_the_corpus_is_complete(corpus):
    assert sorted(corpus[1]) == sorted(CORPUS_NAMES)


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_headless(capsys, corpus, tmp_path, name):
    folder, files = corpus
    file, opens = files[name]
    out = tmp_path / "out.png"
    code, err = run(capsys, "colorize", "--demo", "--image", str(folder / file), "--steps", "2", "--out", str(out))
    if opens and name != "1×1 image":
        assert code == 0, err
        shown = np.asarray(Image.open(out))
        assert shown.shape[:2] == main_image_size(folder / file)
    else:
        assert code == 2 and len(err) == 1 and err[0].startswith("sandcastle: "), err
        assert not out.exists()
    if name == "1×1 image":
        assert "at least 8×8" in err[0]
    if name in ("decompression-bomb header", "30000×30000 declared size"):
        assert "million pixels" in err[0]


def main_image_size(path):
    from engines.imaging import load_image

    return load_image(path).shape[:2]


def test_exif_rotation_and_the_first_gif_frame_are_what_is_edited(corpus):
    from engines.imaging import load_image

    folder, _ = corpus
    assert load_image(folder / "rotated.jpg").shape[:2] == (64, 96)  # stored sideways (96×64 turned), shown upright
    assert abs(int(load_image(folder / "animated.gif")[0, 0, 0]) - 30) <= 2


@pytest.mark.parametrize("case", ["wrong size", "empty", "full"])
def test_masks(capsys, tmp_path, photo, case):
    Image.fromarray(photo).save(tmp_path / "p.png")
    h, w = photo.shape[:2]
    mask = {"wrong size": np.zeros((h // 2, w), np.uint8), "empty": np.zeros((h, w), np.uint8), "full": np.full((h, w), 255, np.uint8)}[case]
    Image.fromarray(mask).save(tmp_path / "m.png")
    code, err = run(capsys, "inpaint", "--demo", "--image", str(tmp_path / "p.png"), "--mask", str(tmp_path / "m.png"), "--prompt", "a bench",
                    "--steps", "2", "--out", str(tmp_path / "o.png"))
    if case == "full":
        assert code == 0 and np.asarray(Image.open(tmp_path / "o.png")).shape == photo.shape
    else:
        assert code == 2 and len(err) == 1, err
        assert ("same size" if case == "wrong size" else "mask is empty") in err[0]


def test_a_500_word_prompt_runs_with_a_warning(capsys, tmp_path, photo):
    Image.fromarray(photo).save(tmp_path / "p.png")
    Image.fromarray(blob_mask(*photo.shape[:2])).save(tmp_path / "m.png")
    words = " ".join(["a quiet harbour at dawn with boats"] * 72)[:4000]
    code, err = run(capsys, "inpaint", "--demo", "--image", str(tmp_path / "p.png"), "--mask", str(tmp_path / "m.png"), "--prompt", words,
                    "--steps", "2", "--out", str(tmp_path / "o.png"))
    assert code == 0
    assert sum("warning: The prompt is longer than the text encoder reads" in line for line in err) == 1


def test_a_file_name_that_is_not_utf8(capsys, tmp_path, photo):
    path = pictures.non_utf8_name(tmp_path, photo)
    code, err = run(capsys, "colorize", "--demo", "--image", path, "--steps", "2", "--out", str(tmp_path / "o.png"))
    assert code == 0, err
    (tmp_path / "o.png").unlink()
    missing = path.replace(".png", "-gone.png")
    code, err = run(capsys, "colorize", "--demo", "--image", missing, "--steps", "2", "--out", str(tmp_path / "o.png"))
    assert code == 2 and len(err) == 1 and "no file called" in err[0]


def test_transparency_is_kept_headless(capsys, tmp_path, photo):
    rgba = np.dstack([photo, np.tile(np.linspace(0, 255, photo.shape[1], dtype=np.uint8), (photo.shape[0], 1))])
    Image.fromarray(rgba).save(tmp_path / "clear.png")
    code, err = run(capsys, "uncrop", "--demo", "--image", str(tmp_path / "clear.png"), "--extend", "0,0,64,0", "--steps", "2",
                    "--out", str(tmp_path / "o.png"))
    assert code == 0, err
    out = np.asarray(Image.open(tmp_path / "o.png"))
    assert out.shape == (photo.shape[0], photo.shape[1] + 64, 4)
    assert np.array_equal(out[:, : photo.shape[1], 3], rgba[..., 3]) and out[:, photo.shape[1]:, 3].min() == 255
