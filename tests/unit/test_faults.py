"""Faults in the middle of a run: a float16 VAE that returns NaN, a prompt longer than CLIP reads,
cancel at every step, and many generations back to back."""

import numpy as np
import pytest

from engines.api import InputError
import torch

from engines import models, registry
from engines.api import CancelToken, Cancelled, Request, SandcastleError, Task
from tests.conftest import blob_mask as make_blob_mask


@pytest.fixture
def blob_mask(photo):
    return make_blob_mask(*photo.shape[:2])


def request(photo, blob_mask, model, **kw):
    return Request(Task.INPAINT, photo, blob_mask, prompt=kw.pop("prompt", "a bench"), steps=kw.pop("steps", 3), seed=3, model=model, **kw)


def nan_when_half(vae):
    """Make the VAE behave like SD's in float16 on a bad picture: NaN out, fine in float32."""
    original = vae.decode

    def decode(latents, *args, **kwargs):
        out = original(latents, *args, **kwargs)
        if vae.dtype == torch.float16:
            sample = out[0] if isinstance(out, tuple) else out.sample
            sample.fill_(float("nan"))
        return out

    vae.decode = decode
    return original


def test_a_nan_float16_decode_is_decoded_again_in_float32(model_dir, photo, blob_mask):
    engine = registry.get("inpaint")
    folder = str(model_dir("inpaint"))
    good = engine.run(request(photo, blob_mask, folder, dtype="float32"), lambda s: None, CancelToken()).image
    models.CACHE.clear()
    loaded = models.load_pipeline("inpaint", folder, torch.device("cpu"), torch.float16)
    original = nan_when_half(loaded.pipe.vae)
    try:
        result = engine.run(request(photo, blob_mask, folder, dtype="float16"), lambda s: None, CancelToken())
        assert loaded.pipe.vae.dtype == torch.float16  # put back after the float32 decode
    finally:
        loaded.pipe.vae.decode = original
        models.CACHE.clear()
    assert result.image.shape == photo.shape and result.image[blob_mask > 127].max() > 0  # not black
    # Float16 UNet steps differ from float32 a little; the decoded picture must still be close to the float32 run.
    assert np.abs(result.image.astype(int) - good.astype(int))[blob_mask > 127].mean() < 12


def test_nan_even_in_float32_is_a_clear_error(model_dir, photo, blob_mask, monkeypatch):
    engine = registry.get("inpaint")
    folder = str(model_dir("inpaint"))
    loaded = models.load_pipeline("inpaint", folder, torch.device("cpu"), torch.float32)
    monkeypatch.setattr(loaded.pipe.vae, "decode", lambda latents, *a, **k: (torch.full((1, 3, *[s * 8 for s in latents.shape[2:]]),
                                                                                         float("nan")),))
    with pytest.raises(SandcastleError, match="invalid picture"):
        engine.run(request(photo, blob_mask, folder), lambda s: None, CancelToken())


def test_a_prompt_longer_than_clip_reads_is_warned_about(model_dir, photo, blob_mask):
    words = " ".join(f"word{i % 50}" for i in range(500))
    result = registry.get("inpaint").run(request(photo, blob_mask, str(model_dir("inpaint")), prompt=words), lambda s: None, CancelToken())
    assert len(result.info["warnings"]) == 1 and "longer than the text encoder reads" in result.info["warnings"][0]
    short = registry.get("inpaint").run(request(photo, blob_mask, str(model_dir("inpaint"))), lambda s: None, CancelToken())
    assert short.info["warnings"] == []


@pytest.mark.parametrize("stop_at", [0, 1, 2, 3, 4, 5])
def test_cancel_at_every_step_index_stops_there_and_changes_nothing(model_dir, photo, blob_mask, stop_at, monkeypatch):
    """0 cancels before the first step; k cancels right after step k (5: after the last one). The run
    stops there: no further step, nothing decoded (the partial result is discarded, not finished),
    no result, and the picture it was given is unchanged."""
    folder = str(model_dir("inpaint"))
    vae = models.load_pipeline("inpaint", folder, torch.device("cpu"), torch.float32).pipe.vae  # the cached pipeline the run uses
    decodes = []
    decode = vae.decode
    monkeypatch.setattr(vae, "decode", lambda *args, **kwargs: decodes.append(1) or decode(*args, **kwargs))
    token, seen = CancelToken(), []
    if stop_at == 0:
        token.cancel()

    def on_step(step):
        if step.stage:
            return
        seen.append(step.step)
        if step.step == stop_at:
            token.cancel()

    image = photo.copy()
    with pytest.raises(Cancelled):
        registry.get("inpaint").run(request(image, blob_mask, folder, steps=5, device="cpu", dtype="float32"), on_step, token)
    assert seen == list(range(1, stop_at + 1))
    assert decodes == []
    assert np.array_equal(image, photo)


def test_a_full_disk_mid_write_never_truncates_the_original(tmp_path, monkeypatch):
    import errno

    from PIL import Image

    from engines import imaging

    target = tmp_path / "keep.png"
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(target)
    before = target.read_bytes()

    def full_disk(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(InputError, match="No space left"):
        imaging.save_image(target, np.zeros((20, 20, 3), np.uint8))
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]


def test_a_read_only_folder_is_an_error_not_a_half_file(tmp_path, monkeypatch):
    import tempfile

    from engines import imaging

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # what a read-only folder answers (root ignores chmod, so it is injected)
    with pytest.raises(InputError, match="read-only"):
        imaging.save_image(tmp_path / "new.png", np.zeros((8, 8, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []
