"""Issue 18's second corpus: every way a command line can be wrong ends in one line on stderr, the
exit code that says why (2 bad input, 3 model unavailable, 1 anything else), and a folder exactly as
it was: no result, no half-written or temporary file, nothing the person had changed.

The cases run in-process (main.main) so that the corpus stays quick; the signal cases and the check
for library warnings run a real process, as a person's terminal would.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import main
from tests.conftest import blob_mask

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, photo):
    """The person's folder: a photo, its mask and hints, a model folder and damaged copies of it."""
    folder = tmp_path_factory.mktemp("person")
    small = photo[::4, ::4].copy()  # 128×128: every case that gets as far as generating stays quick
    Image.fromarray(small).save(folder / "photo.png")
    Image.fromarray(blob_mask(128, 128)).save(folder / "mask.png")
    hints = np.zeros((128, 128, 4), np.uint8)
    hints[40:60, 40:60] = (200, 30, 30, 255)
    Image.fromarray(hints).save(folder / "hints.png")
    for name, size in (("huge-mask.png", 30000), ("huge-hints.png", 30000)):
        huge_header_png(folder / name, size, size)
    (folder / "a-file.txt").write_text("not a folder")
    (folder / "previous-result.png").write_bytes((folder / "photo.png").read_bytes())
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory, model_dir):
    """A good tiny inpainting model and broken copies: no unet/, a damaged model_index.json, no JSON object."""
    import shutil

    folder = tmp_path_factory.mktemp("models")
    good = model_dir("inpaint")
    no_unet = folder / "no-unet"
    shutil.copytree(good, no_unet)
    shutil.rmtree(no_unet / "unet")
    damaged = folder / "damaged-index"
    shutil.copytree(good, damaged)
    (damaged / "model_index.json").write_text('{"_class_name": "StableDiffusionInpaintPipeline", "unet": [')
    listed = folder / "index-is-a-list"
    shutil.copytree(good, listed)
    (listed / "model_index.json").write_text("[1, 2, 3]")
    empty = folder / "empty"
    empty.mkdir()
    return {"good": good, "no-unet": no_unet, "damaged-index": damaged, "index-is-a-list": listed, "empty": empty}


def huge_header_png(path: Path, width: int, height: int) -> None:
    """A PNG whose header declares width×height but holds a few bytes: decoding it would take gigabytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


PROGRESS = ("Loading ", "step ", "pass ")  # what a run says while it works; refusals are the other lines


def state(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) with a hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def run(capsys, *argv: str) -> tuple[int, list[str]]:
    try:
        code = main.main([str(a) for a in argv])
    except SystemExit as exit:  # argparse's refusals exit from inside parse_args
        code = exit.code
    return code, capsys.readouterr().err.strip().splitlines()


def refused(capsys, folder: Path, code: int, *argv: str, says: str = "") -> str:
    """Run, and check the refusal: the exit code, one line on stderr, the folder unchanged."""
    before = state(folder)
    got, err = run(capsys, *argv)
    err = [line for line in err if not line.startswith(PROGRESS)]
    assert got == code and len(err) == 1, (got, err)
    assert says.lower() in err[0].lower(), err[0]
    assert state(folder) == before, "a file was written, changed or left behind"
    return err[0]


# ---- the cases: (name, exit code, words the line must hold, the arguments after `run` or the command) ----

def base(inputs, task="inpaint", out=None):
    args = [task, "--demo", "--image", inputs / "photo.png", "--steps", "2", "--out", out or inputs / "out.png"]
    if task == "inpaint":
        args += ["--mask", inputs / "mask.png", "--prompt", "a bench"]
    return ["run", *args]


ARGUMENT_CASES = [
    # argparse itself: one line naming the fix, never the usage block
    ("no --out", 2, "--out", lambda i, m: ["run", "inpaint", "--demo", "--image", i / "photo.png"]),
    ("no --image", 2, "--image", lambda i, m: ["run", "inpaint", "--demo", "--out", i / "out.png"]),
    ("unknown option", 2, "--colour", lambda i, m: base(i) + ["--colour", "red"]),
    ("steps not a number", 2, "invalid int", lambda i, m: base(i) + ["--steps", "many"]),
    ("seed with a fraction", 2, "invalid int", lambda i, m: base(i) + ["--seed", "1.5"]),
    ("guidance not a number", 2, "invalid float", lambda i, m: base(i) + ["--guidance", "strong"]),
    ("--out with no value", 2, "expected one argument", lambda i, m: base(i) + ["--out"]),
    # values: checked before any model loads
    ("negative extend", 2, "four whole numbers", lambda i, m: base(i, "uncrop") + ["--extend", "-10,0,0,0"]),
    ("extend with three numbers", 2, "four whole numbers", lambda i, m: base(i, "uncrop") + ["--extend", "0,0,64"]),
    ("guidance nan", 2, "guidance", lambda i, m: base(i) + ["--guidance", "nan"]),
    ("guidance inf", 2, "guidance", lambda i, m: base(i) + ["--guidance", "inf"]),
    ("strength above 1", 2, "strength", lambda i, m: base(i) + ["--strength", "2"]),
    ("strength nan", 2, "strength", lambda i, m: base(i) + ["--strength", "nan"]),
    ("no steps", 2, "steps", lambda i, m: base(i) + ["--steps", "0"]),
    ("negative seed", 2, "seed", lambda i, m: base(i) + ["--seed", "-1"]),
    ("feather not a number", 2, "feather radius must be a whole number", lambda i, m: base(i) + ["--param", "feather=soft"]),
    ("feather with a fraction", 2, "feather radius must be a whole number", lambda i, m: base(i) + ["--param", "feather=2.5"]),
    ("feather inf", 2, "finite", lambda i, m: base(i) + ["--param", "feather=inf"]),
    ("feather huge", 2, "feather radius must be at most", lambda i, m: base(i) + ["--param", "feather=1e9"]),
    ("colour match not on or off", 2, "on or off", lambda i, m: base(i) + ["--param", "color_match=perhaps"]),
    ("unknown setting", 2, "no setting called", lambda i, m: base(i) + ["--param", "sharpness=3"]),
    ("setting without a value", 2, "NAME=VALUE", lambda i, m: base(i) + ["--param", "feather"]),
    ("unknown scheduler", 2, "scheduler", lambda i, m: base(i) + ["--param", "scheduler=Heun"]),
    ("region with two numbers", 2, "X,Y,SIZE", lambda i, m: base(i, "attributes") + ["--region", "1,2"]),
    ("attribute amount nan", 2, "", lambda i, m: base(i, "attributes") + ["--attribute", "Smiling=nan"]),
    ("attribute amount inf", 2, "", lambda i, m: base(i, "attributes") + ["--attribute", "Smiling=inf"]),
    ("attribute amount absurd", 2, "", lambda i, m: base(i, "attributes") + ["--attribute", "Smiling=99"]),
    ("unknown task", 2, "unknown task", lambda i, m: base(i, "sharpen")),
    # devices and precision
    ("unknown device", 2, "--device must be", lambda i, m: base(i) + ["--device", "tpu"]),
    ("device with a bad number", 2, "--device must be", lambda i, m: base(i) + ["--device", "cuda:first"]),
    ("unknown precision", 2, "precision", lambda i, m: base(i) + ["--dtype", "float8"]),
    # --out and --previews: found before the generation, not after it
    ("--out with an unknown ending", 2, "ends in .tiff", lambda i, m: base(i, out=i / "out.tiff")),
    ("--out with no ending", 2, "has no ending", lambda i, m: base(i, out=i / "out")),
    ("--out is a folder", 2, "is a folder", lambda i, m: base(i, out=i)),
    ("--out in a missing folder", 2, "does not exist", lambda i, m: base(i, out=i / "gone" / "out.png")),
    ("--previews names a file", 2, "is a file", lambda i, m: base(i) + ["--previews", i / "a-file.txt"]),
    ("--previews under a file", 2, "", lambda i, m: base(i) + ["--previews", i / "a-file.txt" / "steps"]),
    # files that are not what they claim
    ("mask header declares 30000²", 2, "", lambda i, m: base(i) + ["--mask", i / "huge-mask.png"]),
    ("hints header declares 30000²", 2, "", lambda i, m: base(i, "colorize") + ["--hints", i / "huge-hints.png"]),
    ("missing mask file", 2, "no mask file", lambda i, m: base(i) + ["--mask", i / "gone.png"]),
    # models
    ("model folder without unet/", 3, "unet", lambda i, m: base(i) + ["--model", m["no-unet"]]),
    ("damaged model_index.json", 3, "damaged", lambda i, m: base(i) + ["--model", m["damaged-index"]]),
    ("model_index.json not an object", 3, "damaged", lambda i, m: base(i) + ["--model", m["index-is-a-list"]]),
    ("empty model folder", 3, "model_index.json", lambda i, m: base(i) + ["--model", m["empty"]]),
    ("model path that does not exist", 3, "no model folder or file", lambda i, m: base(i) + ["--model", i / "no-such-model"]),
    # other commands
    ("demo-model of an unknown kind", 2, "invalid choice", lambda i, m: ["demo-model", i / "new-model", "--kind", "flux-9"]),
    ("convert-diffae without an output", 2, "required", lambda i, m: ["convert-diffae", i / "photo.png"]),
    ("convert-diffae of a picture", 2, "", lambda i, m: ["convert-diffae", i / "photo.png", i / "converted.safetensors"]),
    ("convert-diffae of a missing file", 2, "", lambda i, m: ["convert-diffae", i / "gone.ckpt", i / "converted.safetensors"]),
]


@pytest.mark.parametrize("name,code,says,argv", ARGUMENT_CASES, ids=[c[0] for c in ARGUMENT_CASES])
def test_each_refusal_is_one_line_with_its_exit_code_and_touches_nothing(capsys, inputs, models, name, code, says, argv):
    refused(capsys, inputs, code, *argv(inputs, models), says=says)


def test_the_corpus_has_at_least_forty_new_cases():
    assert len(ARGUMENT_CASES) + len(DISK_CASES) + 2 >= 40  # + the two signals


# ---- the disk: full, read-only, gone ------------------------------------------------------------------

def full_disk(monkeypatch):
    """The next picture written finds the disk full, as the system reports it (ENOSPC) part-way through."""
    real_save = Image.Image.save

    def save(self, fp, *args, **kwargs):
        if not isinstance(fp, (str, os.PathLike)):  # the temporary file save_image writes through
            fp.write(b"\x89PNG partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)


DISK_CASES = ["full disk, new file", "full disk, replacing a file", "read-only folder", "read-only existing result"]


@pytest.mark.parametrize("case", DISK_CASES)
def test_the_disk_refusing_a_write_says_so_and_keeps_what_was_there(capsys, monkeypatch, inputs, case):
    folder = inputs / case.replace(" ", "-").replace(",", "")
    folder.mkdir(exist_ok=True)
    (folder / "photo.png").write_bytes((inputs / "photo.png").read_bytes())
    out = folder / "out.png"
    if "replacing" in case or "existing" in case:
        out.write_bytes((inputs / "previous-result.png").read_bytes())
    argv = ["run", "colorize", "--demo", "--image", folder / "photo.png", "--steps", "2", "--out", out]
    if case.startswith("full disk"):
        full_disk(monkeypatch)
        refused(capsys, folder, 2, *argv, says="no space left")
        return
    os.chmod(out if "existing" in case else folder, 0o555 if "folder" in case else 0o444)
    try:
        if os.access(out if "existing" in case else folder, os.W_OK):
            pytest.skip("running as root: file permissions do not stop root, so nothing here is read-only")
        refused(capsys, folder, 2, *argv, says="read-only")
    finally:
        os.chmod(folder, 0o755)
        if out.exists():
            os.chmod(out, 0o644)


# ---- signals and warnings: a real process ----------------------------------------------------------


def sandcastle(*args, **kwargs):
    return subprocess.Popen([sys.executable, str(ROOT / "main.py"), *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl+C", "SIGTERM"])
def test_a_signal_during_the_steps_stops_with_one_line_and_writes_nothing(inputs, model_dir, tmp_path, signal_number):
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "photo.png").write_bytes((inputs / "photo.png").read_bytes())
    before = state(folder)
    process = sandcastle("run", "colorize", "--model", model_dir("img2img"), "--image", folder / "photo.png", "--steps", "500",
                         "--out", folder / "out.png", "--previews", tmp_path / "steps")
    lines = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait for the steps to start, then interrupt
        line = process.stderr.readline()
        lines.append(line)
        if not line or "step 2/" in line:  # not line: the process ended
            break
    process.send_signal(signal_number)
    try:
        _, rest = process.communicate(timeout=60)
    finally:
        process.kill()
    said = [line for line in rest.strip().splitlines() if not line.startswith(PROGRESS)]
    assert process.returncode == 128 + signal_number, (process.returncode, rest[-2000:])
    assert len(said) == 1 and "stopped by" in said[0] and "nothing was written" in said[0], said
    assert state(folder) == before


def test_a_normal_run_prints_no_library_warnings(inputs, model_dir, tmp_path):
    process = sandcastle("run", "inpaint", "--model", model_dir("inpaint"), "--image", inputs / "photo.png", "--mask", inputs / "mask.png",
                         "--prompt", "a bench", "--steps", "2", "--out", tmp_path / "out.png")
    _, err = process.communicate(timeout=240)
    assert process.returncode == 0, err
    lines = err.strip().splitlines()
    assert all(line.startswith((*PROGRESS, "wrote ")) for line in lines), lines
    assert json.dumps(lines).count("Warning") == 0
