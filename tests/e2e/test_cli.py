"""The headless command line, run as a person would run it: a real process per command."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from tests.conftest import blob_mask

ROOT = Path(__file__).resolve().parents[2]


def sandcastle(*args, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def files(tmp_path_factory, photo):
    d = tmp_path_factory.mktemp("cli")
    Image.fromarray(photo).save(d / "photo.png")
    Image.fromarray(blob_mask(512, 512, seed=2)).save(d / "mask.png")
    Image.fromarray(np.zeros((512, 512), np.uint8)).save(d / "empty.png")
    Image.fromarray(np.zeros((300, 512), np.uint8)).save(d / "small-mask.png")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    return d


def test_demo_model_then_inpaint_with_previews(files):
    model = files / "model"
    done = sandcastle("demo-model", model, "--kind", "inpaint")
    assert done.returncode == 0, done.stderr
    assert (model / "model_index.json").is_file() and (model / "tokenizer").is_dir()
    out = files / "out.png"
    done = sandcastle("run", "inpaint", "--image", files / "photo.png", "--mask", files / "mask.png", "--prompt", "a red door",
                      "--guidance", "6.5", "--steps", "3", "--seed", "4", "--model", model, "--out", out, "--previews", files / "steps")
    assert done.returncode == 0, done.stderr
    result = np.asarray(Image.open(out))
    original = np.asarray(Image.open(files / "photo.png"))
    assert result.shape == original.shape
    mask = np.asarray(Image.open(files / "mask.png"))
    far = ndimage.distance_transform_edt(mask < 128) > 4 + 8  # default grow + feather
    assert np.array_equal(result[far], original[far])
    assert sorted(p.name for p in (files / "steps").iterdir()) == ["step-001.png", "step-002.png", "step-003.png"]


def frames(folder: Path) -> list[np.ndarray]:
    """The preview frames in the order they were written (their names sort that way)."""
    return [np.asarray(Image.open(p)) for p in sorted(folder.iterdir())]


def test_demo_flag_needs_no_model(files):
    done = sandcastle("run", "inpaint", "--image", files / "photo.png", "--mask", files / "mask.png", "--steps", "2", "--demo", "--out", files / "demo.png",
                      "--previews", files / "demo-steps")
    assert done.returncode == 0, done.stderr
    assert Image.open(files / "demo.png").size == (512, 512)
    # A normal run says only what Sandcastle has to say: no library's warnings.
    for line in done.stderr.splitlines():
        assert re.fullmatch(r"Loading .*…|step \d+/\d+  [\d.]+ s|wrote .*", line), done.stderr
    # Every preview is the whole picture: the input, with the step's picture over the crop the model works on.
    from engines import imaging
    from engines.inpaint import InpaintEngine

    original, mask = np.asarray(Image.open(files / "photo.png")), np.asarray(Image.open(files / "mask.png"))
    p = InpaintEngine.spec.values({})
    x, y, w, h = imaging.expand_box(imaging.mask_bbox(mask, 128), p["grow"] + p["feather"] + p["padding"], 512, 512)
    outside = np.ones((512, 512), bool)
    outside[y : y + h, x : x + w] = False
    shown = frames(files / "demo-steps")
    assert len(shown) == 2
    for frame in shown:
        assert frame.shape == original.shape
        assert outside.any() and np.array_equal(frame[outside], original[outside])
        assert np.abs(frame[mask >= 128].astype(int) - original[mask >= 128]).mean() > 10  # the random model's noise shows in the hole


def test_an_installed_taesd_is_found_and_a_missing_one_is_not_looked_up(tmp_path, monkeypatch):
    """TAESD comes from an installed hub-cache folder only: asking huggingface_hub about a model that is
    not there warned on every run."""
    import warnings

    import torch

    from engines import preview
    from engines.testing import write_taesd

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        assert preview.find_taesd("sd", torch.device("cpu"), torch.float32) is None
    assert not warned, [str(w.message) for w in warned]
    repo = tmp_path / "models--madebyollin--taesd"
    write_taesd(repo / "snapshots" / "0123abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    found = preview.find_taesd("sd", torch.device("cpu"), torch.float32)
    assert found is not None and found.name == "taesd"


@pytest.mark.parametrize(
    "args,words",
    [
        (["--mask", "empty.png"], "mask is empty"),
        (["--mask", "small-mask.png"], "same size"),
        (["--image", "broken.png"], "could not be read"),
        (["--image", "nothing.png"], "no file called"),
        ([], "Paint a mask"),
        (["--steps", "0"], "Steps"),
        (["--param", "feather=-1"], "Feather radius"),
        (["--param", "shiny=yes"], "no setting called"),
        (["--out", "no-such-folder/out.png"], "does not exist"),
    ],
)
def test_bad_input_exits_2_with_one_line(files, args, words):
    base = {"--image": "photo.png", "--out": "x.png"}
    extra = []
    it = iter(args)
    for a in it:
        if a in base:
            base[a] = next(it)
        else:
            extra += [a, next(it)] if a in ("--mask", "--steps", "--param") else [a]
    cmd = ["run", "inpaint", "--image", files / base["--image"], "--out", files / base["--out"], "--demo"]
    cmd += [files / e if str(e).endswith(".png") else e for e in extra]
    done = sandcastle(*cmd)
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], done.stderr


def test_unknown_task_and_missing_model(files):
    done = sandcastle("run", "sharpen", "--image", files / "photo.png", "--out", files / "x.png")
    assert done.returncode == 2 and "Unknown task" in done.stderr
    done = sandcastle("run", "inpaint", "--image", files / "photo.png", "--mask", files / "mask.png", "--model", files / "absent", "--out", files / "x.png")
    assert done.returncode == 3 and "no model folder" in done.stderr


def test_a_missing_hub_model_is_downloaded_with_progress_then_used(files, hub, tmp_path):
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "0", "SANDCASTLE_HUB_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "hub-cache")}
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "run", "inpaint", "--image", str(files / "photo.png"), "--mask",
                           str(files / "mask.png"), "--model", "tiny/inpaint", "--steps", "2", "--out", str(tmp_path / "o.png")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "downloading tiny/inpaint" in done.stderr and " MB/s" in done.stderr
    assert (tmp_path / "o.png").is_file()


def test_offline_hub_model_exits_3_naming_it(files):
    done = sandcastle("run", "inpaint", "--image", files / "photo.png", "--mask", files / "mask.png", "--out", files / "x.png")
    assert done.returncode == 3
    line = done.stderr.strip().splitlines()[-1]
    assert "stable-diffusion-v1-5/stable-diffusion-inpainting" in line and "offline" in line


def test_uncrop_headless(files):
    # The generation size is given (the demo model's own) so the test knows the passes' windows.
    done = sandcastle("run", "uncrop", "--image", files / "photo.png", "--extend", "64,0,128,32", "--steps", "1", "--demo",
                      "--param", "resolution=256", "--out", files / "wide.png", "--previews", files / "uncrop-steps")
    assert done.returncode == 0, done.stderr
    assert Image.open(files / "wide.png").size == (512 + 64 + 128, 512 + 32)
    # One preview per step of every pass, each the whole extended picture: the input at its place, and
    # the passes so far over it, as the window shows them.
    from engines import imaging
    from engines.uncrop import plan_tiles

    original = np.asarray(Image.open(files / "photo.png"))
    known = np.zeros((544, 704), bool)
    known[0:512, 64:576] = True
    tiles = plan_tiles(known, (64, 0, 512, 512), (64, 0, 128, 32), 256, 128)
    assert sorted(p.name for p in (files / "uncrop-steps").iterdir()) == [f"pass-{k:02d}-step-001.png" for k in range(1, len(tiles) + 1)]
    base = imaging.embed(original, (544, 704), (64, 0), 0)
    shown = np.zeros((544, 704), bool)
    for frame, (x, y, w, h) in zip(frames(files / "uncrop-steps"), tiles):
        shown[y : y + h, x : x + w] = True
        assert frame.shape == (544, 704, 3)
        assert np.array_equal(frame[~shown], base[~shown])
    assert shown[~known].all() and (frame[~known] == 0).all(axis=-1).mean() < 0.01  # the last frame shows the whole new area
    for extend, words in (("0,0,0,0", "all four sides are 0"), ("10,20", "four whole numbers")):
        done = sandcastle("run", "uncrop", "--image", files / "photo.png", "--extend", extend, "--demo", "--out", files / "x.png")
        assert done.returncode == 2 and words in done.stderr.strip().splitlines()[-1]


def test_edit_headless_with_image_guidance(files):
    done = sandcastle("run", "edit", "--image", files / "photo.png", "--prompt", "make it winter", "--image-guidance", "2.5",
                      "--steps", "2", "--demo", "--out", files / "winter.png")
    assert done.returncode == 0, done.stderr
    assert Image.open(files / "winter.png").size == (512, 512)
    done = sandcastle("run", "edit", "--image", files / "photo.png", "--prompt", "make it winter", "--strength", "0", "--demo",
                      "--out", files / "x.png")
    assert done.returncode == 2 and "Strength must be above 0" in done.stderr
    done = sandcastle("run", "edit", "--image", files / "photo.png", "--prompt", "x", "--image-guidance", "9", "--demo", "--out", files / "x.png")
    assert done.returncode == 2 and "Image guidance must be at most 5" in done.stderr


def test_colorize_headless_with_hints(files, photo):
    grey = Image.fromarray(photo.mean(-1).astype(np.uint8), "L")
    grey.save(files / "grey.png")
    hints = np.zeros((512, 512, 4), np.uint8)
    hints[100:120, 100:200] = (255, 0, 0, 255)
    Image.fromarray(hints, "RGBA").save(files / "hints.png")
    done = sandcastle("run", "colorize", "--image", files / "grey.png", "--hints", files / "hints.png", "--prompt", "red car",
                      "--strength", "0.8", "--steps", "2", "--demo", "--out", files / "colour.png")
    assert done.returncode == 0, done.stderr
    out = Image.open(files / "colour.png")
    assert out.mode == "RGB" and out.size == (512, 512)
    done = sandcastle("run", "colorize", "--image", files / "grey.png", "--hints", files / "small-mask.png", "--demo", "--out", files / "x.png")
    assert done.returncode == 2 and "same size" in done.stderr


def test_attributes_headless(files):
    done = sandcastle("run", "attributes", "--image", files / "photo.png", "--attribute", "Smiling=0.3", "--attribute", "Young=-0.2",
                      "--region", "100,20,256", "--steps", "5", "--param", "inversion_steps=20", "--param", "alignment=square", "--demo", "--out", files / "smile.png")
    assert done.returncode == 0, done.stderr
    out, original = np.asarray(Image.open(files / "smile.png")), np.asarray(Image.open(files / "photo.png"))
    assert out.shape == original.shape and np.array_equal(out[300:], original[300:])
    done = sandcastle("run", "attributes", "--image", files / "photo.png", "--attribute", "Smiling=0.3", "--out", files / "x.png")
    assert done.returncode == 3 and "github.com/phizaz/diffae" in done.stderr
    done = sandcastle("run", "attributes", "--image", files / "photo.png", "--attribute", "Smirking=1", "--demo", "--out", files / "x.png")
    assert done.returncode == 2 and "Unknown attribute 'Smirking'" in done.stderr
