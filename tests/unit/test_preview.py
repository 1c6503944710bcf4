import numpy as np
import pytest
import torch

from engines import preview


def test_linear_map_matches_a_hand_computation():
    latents = torch.zeros(1, 4, 2, 3)
    latents[0, 0] = 1.0  # only the first latent channel is on
    latents[0, 3, 1, 2] = 0.5
    rgb = preview.LinearPreview("sd", torch.device("cpu"), torch.float32)(latents)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    expected = np.round((np.array([0.3512, 0.2297, 0.3227]) + 1) * 127.5)
    assert np.abs(rgb[0, 0].astype(float) - expected).max() <= 1
    corner = np.array([0.3512, 0.2297, 0.3227]) + 0.5 * np.array([-0.2120, -0.2616, -0.7177])
    assert np.abs(rgb[1, 2].astype(float) - np.round((corner + 1) * 127.5)).max() <= 1


def test_sdxl_map_has_its_own_factors_and_bias():
    zero = torch.zeros(1, 4, 1, 1)
    sd = preview.LinearPreview("sd", torch.device("cpu"), torch.float32)(zero)
    xl = preview.LinearPreview("sdxl", torch.device("cpu"), torch.float32)(zero)
    assert sd[0, 0].tolist() == [127, 127, 127]
    assert xl[0, 0, 0] > sd[0, 0, 0]  # SDXL's map has a positive red bias


def test_compose_shows_the_preview_only_where_alpha_is_set():
    base = np.full((16, 16, 3), 10, np.uint8)
    small = np.full((2, 2, 3), 250, np.uint8)
    alpha = np.zeros((16, 16), np.float32)
    alpha[:8] = 1.0
    out = preview.compose(small, base, alpha)
    assert (out[:8] == 250).all() and (out[8:] == 10).all()


@pytest.mark.parametrize("name", ["DDIM", "Euler ancestral", "DPM++ 2M"])
def test_x0_capture_reads_the_schedulers_clean_estimate(name):
    from diffusers import DDIMScheduler

    from engines.models import make_scheduler

    base = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False)
    scheduler = make_scheduler(name, base.config)
    scheduler.set_timesteps(10)
    capture = preview.X0Capture(scheduler)
    clean = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t = scheduler.timesteps[0]
    sample = scheduler.add_noise(clean, noise, t.reshape(1))
    out = scheduler.step(noise, t, sample, return_dict=False)  # a perfect noise prediction
    assert isinstance(out, tuple) and out[0].shape == clean.shape
    assert capture.x0 is not None
    assert torch.allclose(capture.x0, clean, atol=1e-3)


def test_taesd_previews_at_full_resolution(tmp_path):
    from engines.testing import write_taesd

    write_taesd(tmp_path / "taesd")
    previewer = preview.make_previewer("auto", "sd", torch.device("cpu"), torch.float32, taesd_source=str(tmp_path / "taesd"))
    assert previewer.name == "taesd"
    rgb = previewer(torch.randn(1, 4, 8, 6))
    assert rgb.shape == (64, 48, 3) and rgb.dtype == np.uint8


def test_without_taesd_auto_falls_back_to_the_linear_map(tmp_path):
    previewer = preview.make_previewer("auto", "sd", torch.device("cpu"), torch.float32, taesd_source=str(tmp_path / "none"))
    assert previewer.name == "linear"
    assert preview.make_previewer("off", "sd", torch.device("cpu"), torch.float32) is None


@pytest.mark.parametrize("name", ["DDIM", "Euler ancestral", "DPM++ 2M"])
def test_x0_capture_with_v_prediction(name):
    """SD 2.x 768 models predict v, not noise; the clean estimate must still be right."""
    from diffusers import DDIMScheduler

    from engines.models import make_scheduler

    base = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, prediction_type="v_prediction")
    scheduler = make_scheduler(name, base.config)
    scheduler.set_timesteps(10)
    capture = preview.X0Capture(scheduler)
    clean = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t = scheduler.timesteps[0]
    sample = scheduler.add_noise(clean, noise, t.reshape(1))
    a = base.alphas_cumprod[int(t)]
    v = a.sqrt() * noise - (1 - a).sqrt() * clean  # the same v whether the scheduler works in sigma or alpha form
    scheduler.step(v, t, sample, return_dict=False)
    assert torch.allclose(capture.x0, clean, atol=1e-3)


def test_the_step_callback_hands_over_and_makes_no_picture(model_dir, photo, monkeypatch):
    """The denoising thread does nothing per step beyond the model: the latents → RGB map, the scaling
    and the blend run only when the receiver renders the step, and rendering a step after the run
    (as the preview thread does, when it gets to it) gives the very picture it had at that step."""
    from tests.conftest import blob_mask
    from engines import registry
    from engines.api import CancelToken, Request, Task

    def request():
        return Request(Task.INPAINT, photo, blob_mask(512, 512), prompt="a door", steps=4, seed=3, model=str(model_dir("inpaint")),
                       device="cpu", dtype="float32", params={"preview": "linear", "scheduler": "DPM++ 2M"})

    engine = registry.get("inpaint")
    rendered_at_once: list[np.ndarray] = []
    engine.run(request(), lambda step: step.stage or rendered_at_once.append(step.render()), CancelToken())  # not "Loading …"

    calls = []
    real_call = preview.LinearPreview.__call__
    monkeypatch.setattr(preview.LinearPreview, "__call__", lambda self, latents: calls.append(1) or real_call(self, latents))
    handed_over = []
    engine.run(request(), lambda step: step.stage or handed_over.append(step), CancelToken())
    assert calls == [] and all(step.image is None and step.render is not None for step in handed_over)
    rendered_later = [step.picture() for step in handed_over]
    assert len(calls) == 4
    assert all(np.array_equal(now, later) for now, later in zip(rendered_at_once, rendered_later, strict=True))


def test_on_apple_mps_previews_render_on_the_cpu():
    """Metal crashes when two threads use it at once, and previews are rendered off the denoising thread."""
    assert preview.render_device(torch.device("mps")) == torch.device("cpu")
    assert preview.render_device(torch.device("cuda", 0)) == torch.device("cuda", 0)
    cpu = torch.zeros(1, 4, 8, 8)
    assert preview.handed_over(cpu) is cpu  # elsewhere the callback hands over the tensor itself, no copy
