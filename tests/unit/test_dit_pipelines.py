"""The tiny DiT pipelines of engines.testing_dit: written to a folder, loaded back offline, and run.

For each kind, every pipeline class that serves it (the folder's main class and its inpainting
variant) runs 2 steps at 64×64 with a seeded generator: the output has the right shape and is
finite, the same seed gives the same picture, another seed another picture, the step callback sees
the latents at every step, and the last step's latents, unpacked as the notes say (`to_vae_latents`),
decode to the very picture the pipeline returned.

Qwen-Image-Edit's pipelines work at about one megapixel whatever size is asked (the edit pipeline
VAE-encodes its reference picture at 1024², the inpainting pipeline does everything at 1024²); on a
CPU the Qwen VAE takes seconds there, so these tests shrink that area to 64² by patching the
pipeline modules' size constants; SANDCASTLE_SLOW_TESTS=1 adds a run of both at their own size.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

from engines.testing_dit import (  # noqa: E402
    DIT_KINDS,
    PIPELINES,
    build_dit_pipeline,
    load_qwen_vl_processor,
    torchvision_available,
    write_dit_model,
)

SIZE = 64  # pixels; the smallest multiple of 16 (vae_scale_factor 8 × 2×2 packing) that leaves a 2×2 latent grid of tokens
STEPS = 2
SLOW = os.environ.get("SANDCASTLE_SLOW_TESTS") == "1"


def _available(kind: str) -> bool:
    main, variants = PIPELINES[kind]
    return all(hasattr(diffusers, name) for name in (main, *variants))


# ---- latents → VAE latents (the code the notes give for previews) ---------------------------------


def to_vae_latents(pipe, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The `latents` a step callback receives, as the VAE decoder takes them (FLUX: (B, C, H/8, W/8);
    Qwen: (B, C, 1, H/8, W/8)), with the pipeline's latent normalisation undone."""
    name = type(pipe).__name__
    b, n, c = latents.shape
    h, w = height // 16, width // 16  # tokens: one per 2×2 patch of the 8× latent
    assert n == h * w
    if name.startswith("Flux2"):
        x = latents.reshape(b, h, w, c).permute(0, 3, 1, 2)  # (B, 128, H/16, W/16), patchified
        bn = pipe.vae.bn
        x = x * torch.sqrt(bn.running_var.view(1, -1, 1, 1) + pipe.vae.config.batch_norm_eps) + bn.running_mean.view(1, -1, 1, 1)
        return x.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, h * 2, w * 2)
    x = latents.view(b, h, w, c // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c // 4, h * 2, w * 2)
    if name.startswith("QwenImage"):
        mean = torch.tensor(pipe.vae.config.latents_mean).view(1, -1, 1, 1)
        std = torch.tensor(pipe.vae.config.latents_std).view(1, -1, 1, 1)
        return (x * std + mean).unsqueeze(2)
    return x / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor


def decode(pipe, vae_latents: torch.Tensor) -> np.ndarray:
    image = pipe.vae.decode(vae_latents.to(pipe.vae.dtype), return_dict=False)[0]
    if image.ndim == 5:
        image = image[:, :, 0]
    return pipe.image_processor.postprocess(image, output_type="np")


# ---- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pictures():
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    picture = np.stack([xx * 4, yy * 4, (xx + yy) * 2], -1).clip(0, 255).astype(np.uint8)
    picture = (picture * 0.8 + rng.integers(0, 50, picture.shape)).astype(np.uint8)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:48, 20:44] = 255
    return Image.fromarray(picture), Image.fromarray(mask)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """Factory: (folder, main pipeline loaded back from it) per kind, written and loaded once."""
    cache: dict = {}

    def get(kind: str):
        if kind not in cache:
            folder = write_dit_model(tmp_path_factory.mktemp(kind), kind)
            pipe = diffusers.DiffusionPipeline.from_pretrained(folder, local_files_only=True, **_extra(kind, folder))
            pipe.set_progress_bar_config(disable=True)
            cache[kind] = folder, pipe
        return cache[kind]

    return get


def _extra(kind: str, folder) -> dict:
    # transformers 5 builds Qwen2VLProcessor only with its video processor, which needs torchvision.
    if kind == "qwen-edit" and not torchvision_available():
        return {"processor": load_qwen_vl_processor(folder / "processor")}
    return {}


@pytest.fixture
def small_qwen(monkeypatch):
    """Qwen-Image-Edit's pipelines at 64² instead of their fixed ~1 MP working area (see the module doc)."""
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_inpaint as inpaint
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as plus

    monkeypatch.setattr(plus, "VAE_IMAGE_SIZE", SIZE * SIZE)
    real = inpaint.calculate_dimensions
    monkeypatch.setattr(inpaint, "calculate_dimensions", lambda area, ratio: real(SIZE * SIZE, ratio))


# ---- the runs --------------------------------------------------------------------------------------

# (kind, class, call arguments beyond prompt/steps/generator/output_type); "image"/"mask" are filled in.
CASES = [
    ("flux2-klein", "Flux2KleinPipeline", dict(image="image", height=SIZE, width=SIZE)),
    ("flux2-klein", "Flux2KleinInpaintPipeline", dict(image="image", mask_image="mask", strength=0.8)),
    ("qwen-edit", "QwenImageEditPlusPipeline", dict(image="image", height=SIZE, width=SIZE, negative_prompt=" ", true_cfg_scale=4.0)),
    ("qwen-edit", "QwenImageEditInpaintPipeline", dict(image="image", mask_image="mask", strength=0.9, negative_prompt=" ",
                                                       true_cfg_scale=4.0)),
    ("flux-fill", "FluxFillPipeline", dict(image="image", mask_image="mask", height=SIZE, width=SIZE)),
    ("flux-kontext", "FluxKontextPipeline", dict(image="image", height=SIZE, width=SIZE, max_area=SIZE * SIZE, _auto_resize=False)),
    ("flux-kontext", "FluxKontextInpaintPipeline", dict(image="image", mask_image="mask", height=SIZE, width=SIZE, strength=0.9,
                                                        max_area=SIZE * SIZE, _auto_resize=False)),
]


@pytest.mark.parametrize(("kind", "class_name", "arguments"), CASES, ids=[c[1] for c in CASES])
def test_pipeline_runs_from_the_folder(kind, class_name, arguments, loaded, pictures, small_qwen, monkeypatch):
    if not _available(kind):
        pytest.skip(f"this diffusers has no {PIPELINES[kind]}")
    folder, main = loaded(kind)
    assert type(main).__name__ == PIPELINES[kind][0]
    if class_name == PIPELINES[kind][0]:
        pipe = main
    else:
        cls = getattr(diffusers, class_name)
        pipe = cls.from_pretrained(folder, local_files_only=True, **_extra(kind, folder))  # the variant from the same folder
        assert type(pipe).__name__ == class_name
        shared = cls.from_pipe(main)  # … or from the loaded pipeline, sharing its modules
        assert type(shared).__name__ == class_name and shared.transformer is main.transformer
        pipe.set_progress_bar_config(disable=True)
    image, mask = pictures
    call = {k: {"image": image, "mask": mask}.get(v, v) if isinstance(v, str) else v for k, v in arguments.items()}

    # The flow-matching Euler step returns no x0 estimate; a preview computes it from the step's own
    # inputs: x0 = x_t - sigma_t * v (the sigma the step just used is sigmas[step_index - 1] after it).
    x0s = []
    step = pipe.scheduler.step

    @functools.wraps(step)
    def step_with_x0(model_output, timestep, sample, *args, **kwargs):
        out = step(model_output, timestep, sample, *args, **kwargs)
        x0s.append(sample - pipe.scheduler.sigmas[pipe.scheduler.step_index - 1] * model_output)
        return out

    monkeypatch.setattr(pipe.scheduler, "step", step_with_x0)

    def run(seed, seen=None):
        def callback(p, i, t, kwargs):
            seen.append((i, kwargs["latents"].clone()))
            return kwargs

        return pipe(prompt="a red door", num_inference_steps=STEPS, generator=torch.Generator().manual_seed(seed), output_type="np",
                    callback_on_step_end=callback if seen is not None else None, **call).images

    seen: list = []
    first = run(1, seen)
    assert first.shape == (1, SIZE, SIZE, 3)
    assert np.isfinite(first).all() and first.min() >= 0 and first.max() <= 1
    np.testing.assert_array_equal(run(1), first)
    assert np.abs(run(2) - first).max() > 1e-3

    assert [i for i, _ in seen] == list(range(STEPS))
    if "mask_image" not in arguments or class_name == "FluxFillPipeline":  # the others blend the kept area in after the step
        torch.testing.assert_close(x0s[STEPS - 1], seen[-1][1])  # the last step lands on sigma 0: its latents are its x0
    channels = {"flux2-klein": 128}.get(kind, 64)
    for _, latents in seen:
        assert latents.shape == (1, (SIZE // 16) ** 2, channels) and torch.isfinite(latents).all()
    with torch.no_grad():
        again = decode(pipe, to_vae_latents(pipe, seen[-1][1], SIZE, SIZE))
    np.testing.assert_allclose(again, first, atol=1e-4)


@pytest.mark.skipif(not SLOW, reason="Qwen's 1 MP working area takes a minute on the CPU; SANDCASTLE_SLOW_TESTS=1 runs it")
def test_qwen_edit_at_its_own_working_size(loaded, pictures):
    """Unpatched: the edit pipeline encodes the reference at ~1024² but returns the size asked;
    the inpainting pipeline ignores height/width and returns ~1024² (here 1024×1024 from a square)."""
    folder, plus = loaded("qwen-edit")
    image, mask = pictures
    out = plus(image=image, prompt="x", height=SIZE, width=SIZE, num_inference_steps=STEPS, output_type="np",
               generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, SIZE, SIZE, 3) and np.isfinite(out).all()
    inpaint = diffusers.QwenImageEditInpaintPipeline.from_pipe(plus)
    out = inpaint(image=image, mask_image=mask, prompt="x", height=SIZE, width=SIZE, num_inference_steps=STEPS, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 1024, 1024, 3) and np.isfinite(out).all()


def test_klein_base_runs_with_guidance(loaded, pictures):
    """The same folder as a non-distilled ([klein] Base) model: classifier-free guidance with the empty
    prompt as the negative, two transformer calls a step."""
    if not _available("flux2-klein"):
        pytest.skip("no FLUX.2 [klein] in this diffusers")
    folder, distilled = loaded("flux2-klein")
    base = diffusers.Flux2KleinPipeline.from_pretrained(folder, local_files_only=True, is_distilled=False)
    base.set_progress_bar_config(disable=True)
    calls = []
    base.transformer.register_forward_hook(lambda *a: calls.append(1))
    kw = dict(prompt="a red door", height=SIZE, width=SIZE, num_inference_steps=STEPS, output_type="np")
    guided = base(guidance_scale=4.0, generator=torch.Generator().manual_seed(1), **kw).images
    assert len(calls) == 2 * STEPS
    plain = distilled(guidance_scale=4.0, generator=torch.Generator().manual_seed(1), **kw).images
    assert np.isfinite(guided).all() and np.abs(guided - plain).max() > 1e-4


def test_qwen_tokenizer_drops_the_template_where_the_real_one_does(loaded):
    """The pipelines drop a fixed number of leading tokens (the system prompt): 64 for Qwen-Image-Edit.
    The tiny vocabulary splits the template as Qwen's does, so what is kept starts at the prompt."""
    if not _available("qwen-edit"):
        pytest.skip("no Qwen-Image-Edit in this diffusers")
    _, pipe = loaded("qwen-edit")
    ids = pipe.tokenizer(pipe.prompt_template_encode.format("a red door")).input_ids
    kept = pipe.tokenizer.decode(ids[pipe.prompt_template_encode_start_idx:])
    assert kept == "a red door<|im_end|>\n<|im_start|>assistant\n"


# ---- building ----------------------------------------------------------------------------------------


def test_tiny_models_are_the_same_for_the_same_seed():
    for kind in DIT_KINDS:
        if not _available(kind):
            continue
        a, b, c = (build_dit_pipeline(kind, seed=s) for s in (0, 0, 1))
        assert a.tokenizer.get_vocab() == c.tokenizer.get_vocab()
        for name in ("transformer", "vae", "text_encoder"):
            sa, sb, sc = (getattr(p, name).state_dict() for p in (a, b, c))
            assert all(torch.equal(sa[k], sb[k]) for k in sa)
            assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point() and sa[k].numel() > 1)


# Parameters in billions of the released models (transformer, then each text encoder): FLUX.2 [klein] 4B
# with Qwen3-4B; Qwen-Image(-Edit) with Qwen2.5-VL-7B (with its vision tower); FLUX.1 [dev] with CLIP
# ViT-L/14's text model and T5 v1.1 XXL's encoder.
REAL_SIZES = {
    "flux2-klein": {"transformer": 3.88, "text_encoder": 4.02, "vae": 0.084},
    "qwen-edit": {"transformer": 20.43, "text_encoder": 8.29, "vae": 0.127},
    "flux-fill": {"transformer": 11.90, "text_encoder": 0.123, "text_encoder_2": 4.76, "vae": 0.084},
    "flux-kontext": {"transformer": 11.90, "text_encoder": 0.123, "text_encoder_2": 4.76, "vae": 0.084},
}


@pytest.mark.parametrize("kind", DIT_KINDS)
def test_real_structure_builds_on_the_meta_device(kind):
    if not _available(kind):
        pytest.skip(f"this diffusers has no {PIPELINES[kind][0]}")
    pipe = build_dit_pipeline(kind, "real")
    assert type(pipe).__name__ == PIPELINES[kind][0]
    for name, billions in REAL_SIZES[kind].items():
        module = getattr(pipe, name)
        assert {p.device.type for p in module.parameters()} == {"meta"}
        count = sum(p.numel() for p in module.parameters()) / 1e9
        assert count == pytest.approx(billions, rel=0.01), name
    assert pipe.vae_scale_factor == 8
