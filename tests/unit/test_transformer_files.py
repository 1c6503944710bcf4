"""Diffusion transformers as the files people download: Black Forest Labs' single .safetensors files
(their own key names), ComfyUI's whole-model files (the prefix), and GGUF files quantized Q8_0 or
Q4_K, each loaded offline with the configuration Sandcastle ships and the text encoder and VAE of
the kind's preset, installed as `hf download <id> --exclude "transformer/*"` leaves it.

At the real structure (meta tensors, nothing allocated) the published layout is held to diffusers'
own converters and to the shipped configurations; tiny files run through the engines.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from engines import checkpoints, dit, kinds, models, services, sources
from engines.api import CancelToken, ModelUnavailable, Request, Task
from engines.sd import Crop
from engines.testing_dit import original_layout, write_dit_model, write_transformer_file
from tests.conftest import blob_mask

SIZE = 64
KINDS = ("flux2-klein", "qwen-edit", "flux-fill", "flux-kontext")


def real_model(kind: str):
    import diffusers

    config = json.loads((models.transformer_config_folder(kind) / "transformer" / "config.json").read_text())
    with torch.device("meta"):
        return getattr(diffusers, models.TRANSFORMER_CLASSES[kind]).from_config(config), config


@pytest.mark.parametrize("kind", KINDS)
def test_a_published_file_of_real_structure_is_recognised_and_sized_as_its_release(kind):
    model, config = real_model(kind)
    state = model.state_dict()
    shapes = {name: tuple(value.shape) for name, value in original_layout(kind, state).items()}
    kind_of_file = checkpoints.KINDS[checkpoints.model_type(shapes)]
    assert kind_of_file.transformer == kind
    structure = checkpoints.transformer_structure(checkpoints.model_type(shapes), shapes, config["attention_head_dim"], config["patch_size"])
    assert {key: config[key] for key in structure} == structure
    # ComfyUI's whole-model files keep the same tensors under a prefix, beside the VAE and text encoders.
    prefixed = {checkpoints.COMFY_PREFIX + name: shape for name, shape in shapes.items()} | {"vae.decoder.conv_in.weight": (512, 16, 3, 3)}
    assert checkpoints.model_type(prefixed) == checkpoints.model_type(shapes)


@pytest.mark.parametrize("kind", ["flux2-klein", "flux-fill", "flux-kontext"])
def test_diffusers_converts_the_published_layout_back_onto_the_real_model(kind):
    from diffusers.loaders.single_file_utils import (
        convert_flux2_transformer_checkpoint_to_diffusers, convert_flux_transformer_checkpoint_to_diffusers,
    )

    model, _ = real_model(kind)
    state = model.state_dict()
    convert = convert_flux2_transformer_checkpoint_to_diffusers if kind == "flux2-klein" else convert_flux_transformer_checkpoint_to_diffusers
    back = convert(checkpoint=original_layout(kind, state))
    assert {name: tuple(value.shape) for name, value in back.items()} == {name: tuple(value.shape) for name, value in state.items()}


def test_other_flux2_sizes_and_flux1_variants_are_refused_with_what_to_choose(tmp_path):
    from safetensors.torch import save_file

    nine_b = tmp_path / "flux-2-klein-9b.safetensors"
    save_file({"single_stream_modulation.lin.weight": torch.zeros(1, 1), "txt_in.weight": torch.zeros(1, 12288)}, str(nine_b))
    depth = tmp_path / "flux1-depth-dev.safetensors"
    save_file({"double_blocks.0.img_attn.norm.key_norm.scale": torch.zeros(1), "img_in.weight": torch.zeros(1, 128)}, str(depth))
    with pytest.raises(ModelUnavailable, match=r"9B or \[dev\] transformer, which Sandcastle cannot use: .*\[klein\] 4B"):
        sources.resolve_source(str(nine_b), purpose="instruct")
    with pytest.raises(ModelUnavailable, match=r"FLUX.1 \[schnell\], Depth, Canny or other variant.*Fill and Kontext"):
        sources.resolve_source(str(depth), purpose="inpaint")


def test_a_cut_gguf_file_is_one_sentence(tmp_path):
    whole = tmp_path / "whole.gguf"
    write_transformer_file(whole, "flux2-klein", "Q8_0")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    with pytest.raises(ModelUnavailable, match=r"^cut.gguf is not a readable GGUF file \(") as caught:
        sources.resolve_source(str(cut), purpose="instruct")
    assert "\n" not in str(caught.value)


# ---- tiny files through the engines -------------------------------------------------------------


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """The tiny pipelines without their transformers, as diffusers folders to copy into a hub cache."""
    made = {}
    for kind in ("flux2-klein", "qwen-edit"):
        folder = write_dit_model(tmp_path_factory.mktemp(kind), kind)
        shutil.rmtree(folder / "transformer")
        made[kind] = folder
    return made


def install_base(kind: str, bases, cache) -> None:
    """Lay the base out in the hub cache as `hf download <id> --exclude "transformer/*"` does: blobs,
    links to them in a snapshot, refs/main. model_index.json still names the transformer."""
    hub_id = kinds.base_preset(kind).hub_id
    repo = cache / ("models--" + hub_id.replace("/", "--"))
    snapshot = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    for number, file in enumerate(sorted(p for p in bases[kind].rglob("*") if p.is_file())):
        blob = repo / "blobs" / f"{number:040x}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, blob)
        link = snapshot / file.relative_to(bases[kind])
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    models.CACHE.clear()
    yield tmp_path / "hub"
    models.CACHE.clear()


@pytest.fixture(autouse=True)
def small_qwen(monkeypatch):
    """Qwen-Image-Edit's pipelines work at about a megapixel whatever they are given; 64² keeps the runs
    quick. Both sides of the comparison run the same patched pipeline code."""
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_inpaint as inpaint
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as plus

    monkeypatch.setattr(plus, "VAE_IMAGE_SIZE", SIZE * SIZE)
    real = inpaint.calculate_dimensions
    monkeypatch.setattr(inpaint, "calculate_dimensions", lambda area, ratio: real(SIZE * SIZE, ratio))


def test_without_its_preset_a_transformer_file_says_what_to_download(tmp_path, cache):
    file = tmp_path / "flux-2-klein-4b-Q8_0.gguf"
    write_transformer_file(file, "flux2-klein", "Q8_0")
    status = services.model_status(str(file))
    assert not status.installed and "FLUX.2 [klein] transformer" in status.title
    assert ('hf download black-forest-labs/FLUX.2-klein-4B --include model_index.json "scheduler/*" "text_encoder/*" "tokenizer/*" '
            '"vae/*"') in status.unusable
    with pytest.raises(ModelUnavailable, match="its text encoder and VAE come from FLUX.2 \\[klein\\] 4B"):
        models.load_pipeline("instruct", str(file), torch.device("cpu"), torch.float32)


def edit_with(model: str, picture, kind: str, memory: str | None = None):
    mask = blob_mask(SIZE, SIZE, seed=5) if kind == "qwen-edit" else None
    purpose = "inpaint" if mask is not None else "instruct"
    request = Request(task=Task.INPAINT if mask is not None else Task.EDIT, image=picture, mask=mask, prompt="make it winter",
                      negative_prompt="blurry", guidance_scale=3.5, strength=1.0, steps=2, seed=7, model=model, device="cpu", dtype="float32",
                      memory=memory)
    loaded = models.load_pipeline(purpose, model, torch.device("cpu"), torch.float32, memory=memory)
    crop = Crop(model_image=picture, model_mask=mask, shown_under=picture, alpha=np.ones((SIZE, SIZE), np.float32), box=(0, 0, SIZE, SIZE))
    out, _ = dit.generate_crop(loaded=loaded, request=request, params={"resolution": SIZE}, crop=crop, previewer=None,
                               on_step=lambda step: None, cancel=CancelToken())
    return out, loaded


@pytest.fixture(scope="module")
def picture(photo):
    return np.asarray(Image.fromarray(photo).resize((SIZE, SIZE), Image.LANCZOS))


@pytest.mark.parametrize("kind,name,prefix", [
    ("flux2-klein", "flux-2-klein-4b.safetensors", ""),
    ("qwen-edit", "qwen_image_edit_comfy.safetensors", checkpoints.COMFY_PREFIX),  # 2511 by ComfyUI's marker, not by name
])
def test_a_single_file_transformer_edits_exactly_as_its_diffusers_form(tmp_path, cache, bases, picture, kind, name, prefix):
    import diffusers

    install_base(kind, bases, cache)
    file = tmp_path / name
    transformer = write_transformer_file(file, kind, prefix=prefix, qwen_2511_marker=kind == "qwen-edit")
    assert kinds.dit_kind(str(file)) == kind
    ours, loaded = edit_with(str(file), picture, kind)
    assert loaded.pipe.transformer.config.num_layers == 1

    # Bare diffusers: the base's other components with the transformer in its diffusers form, same inputs and seed.
    base = kinds.base_preset(kind).hub_id
    folder = cache / ("models--" + base.replace("/", "--")) / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    purpose = "inpaint" if kind == "qwen-edit" else "instruct"
    extra = {} if models.torchvision_available() or kind != "qwen-edit" else {"processor": models.load_qwen_vl_processor(folder / "processor")}
    bare = getattr(diffusers, kinds.DIT_PIPELINES[kind][purpose]).from_pretrained(
        folder, transformer=transformer, torch_dtype=torch.float32, local_files_only=True, **extra)
    bare.set_progress_bar_config(disable=True)
    inputs = dict(prompt="make it winter", num_inference_steps=2, generator=torch.Generator("cpu").manual_seed(7), output_type="np",
                  height=SIZE, width=SIZE)
    if kind == "qwen-edit":
        inputs.update(negative_prompt="blurry", true_cfg_scale=3.5, image=Image.fromarray(picture),
                      mask_image=Image.fromarray(blob_mask(SIZE, SIZE, seed=5)), strength=1.0)
    else:
        inputs.update(image=[Image.fromarray(picture)])
    theirs = np.clip(np.round(bare(**inputs).images[0] * 255.0), 0, 255).astype(np.uint8)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() == 0


@pytest.mark.parametrize("kind,quant", [("flux2-klein", "Q4_K"), ("flux2-klein", "Q8_0"), ("qwen-edit", "Q8_0")])
def test_a_gguf_transformer_stays_quantized_and_dequantizes_to_its_weights(tmp_path, cache, bases, picture, kind, quant):
    from diffusers.quantizers.gguf.utils import GGUFParameter, dequantize_gguf_tensor

    install_base(kind, bases, cache)
    file = tmp_path / f"{kind}-{quant}.gguf"
    expected = write_transformer_file(file, kind, quant)
    out, loaded = edit_with(str(file), picture, kind)
    assert out.shape == (SIZE, SIZE, 3) and out.std() > 0
    quantized = {name: module for name, module in loaded.pipe.transformer.named_modules() if isinstance(getattr(module, "weight", None), GGUFParameter)}
    assert quantized, "no layer kept its quantized weights"
    full = sum(t.numel() * 4 for t in expected.state_dict().values())
    assert models.component_bytes(loaded.pipe)["transformer"] < full  # the memory decision sees the quantized size
    assert {m.weight.quant_type.name for m in quantized.values()} == {quant}
    reference = dict(expected.named_modules())
    for name, module in quantized.items():
        # gguf-py's dequantization (llama.cpp's reference) against diffusers' own, which works in float16.
        want = reference[name].weight
        got = dequantize_gguf_tensor(module.weight).float()
        assert got.shape == want.shape
        assert (got - want).abs().max() <= 1e-3 * want.abs().max() + 1e-6, name


@pytest.mark.parametrize("name,marker,is_2511", [
    ("qwen_image_edit_2509_fp16.safetensors", False, False),
    ("qwen-image-edit-2511-Q8_0.safetensors", False, True),
    ("qwen_image_edit_comfy.safetensors", True, True),
])
def test_qwen_image_edit_2511_is_told_from_earlier_edits_by_comfyuis_marker_or_its_name(tmp_path, cache, bases, name, marker, is_2511):
    install_base("qwen-edit", bases, cache)
    file = tmp_path / name
    write_transformer_file(file, "qwen-edit", prefix=checkpoints.COMFY_PREFIX, qwen_2511_marker=marker)
    loaded = models.load_pipeline("instruct", str(file), torch.device("cpu"), torch.float32)
    assert loaded.pipe.transformer.config.zero_cond_t is is_2511


def test_comfyuis_scaled_fp8_files_and_flux_schnell_are_refused(tmp_path):
    from safetensors.torch import save_file

    scaled = tmp_path / "qwen_image_edit_2511_fp8mixed.safetensors"
    save_file({"txt_norm.weight": torch.zeros(1), "transformer_blocks.0.img_mod.1.weight": torch.zeros(1, 1),
               "transformer_blocks.0.img_mod.1.weight_scale": torch.ones(())}, str(scaled))
    with pytest.raises(ModelUnavailable, match="scaled 8-bit format.*cannot apply its weight scales"):
        sources.resolve_source(str(scaled), purpose="instruct")
    schnell = tmp_path / "flux1-schnell.safetensors"
    save_file({"double_blocks.0.img_attn.norm.key_norm.scale": torch.zeros(1), "img_in.weight": torch.zeros(1, 64)}, str(schnell))
    with pytest.raises(ModelUnavailable, match=r"\[schnell\]"):
        sources.resolve_source(str(schnell), purpose="instruct")


def test_a_transformer_file_of_another_text_width_is_refused_before_loading(tmp_path, cache, bases):
    install_base("flux2-klein", bases, cache)
    file = tmp_path / "wide.safetensors"
    write_transformer_file(file, "flux2-klein", text_width=64)
    with pytest.raises(ModelUnavailable, match="reads 64-wide text features, but FLUX.2 \\[klein\\] 4B's text encoder gives 48"):
        models.load_pipeline("instruct", str(file), torch.device("cpu"), torch.float32)


def test_the_models_list_shows_a_transformer_file_with_its_tasks(tmp_path, cache, bases):
    install_base("flux2-klein", bases, cache)
    file = tmp_path / "flux-2-klein-4b-Q4_K_M.gguf"
    write_transformer_file(file, "flux2-klein", "Q4_K")
    status = services.model_status(str(file))
    assert status.installed and not status.unusable
    assert status.tasks == ("inpaint", "uncrop", "edit", "colorize") and status.disk_bytes == file.stat().st_size
    assert services.model_controls(str(file)).guidance is None  # FLUX.2 [klein]'s controls, not Stable Diffusion's


# ---- the automatic memory mode ------------------------------------------------------------------


def real_bytes(kind: str):
    """Component bytes of the real pipeline in bfloat16, and its transformer's size as Q8_0 (meta tensors)."""
    from engines.testing_dit import build_dit_pipeline

    pipe = build_dit_pipeline(kind, "real", dtype=torch.bfloat16)
    return models.component_bytes(pipe), models.q8_0_bytes(pipe.transformer)


GB = 1024**3
CUDA = torch.device("cuda")


def test_auto_runs_flux2_klein_whole_quantized_or_offloaded_by_the_card():
    components, eight_bit = real_bytes("flux2-klein")
    assert 7.0 * GB < components["transformer"] < 8.0 * GB and 3.8 * GB < eight_bit < 4.4 * GB
    choose = models.choose_dit_memory_mode
    assert choose(None, CUDA, components, 79 * GB, eight_bit) == "off"  # an 80 GB card
    assert choose(None, CUDA, components, int(15.5 * GB), eight_bit) == "balanced"  # a 16 GB card: one component at a time
    assert choose(None, CUDA, components, int(11.5 * GB), eight_bit) == "quantized"  # a 12 GB card: the 8-bit transformer fits
    assert choose(None, CUDA, components, int(11.5 * GB), None) == "lowest"  # nothing to quantize: group offload
    assert choose(None, CUDA, components, 6 * GB, eight_bit) == "lowest"
    assert choose(None, torch.device("cpu"), components, None, eight_bit) == "off"


def test_auto_runs_qwen_image_edit_on_24_gb_offloaded_or_with_a_q4_k_file():
    components, eight_bit = real_bytes("qwen-edit")
    choose = models.choose_dit_memory_mode
    free = int(23.5 * GB)
    assert choose(None, CUDA, components, free, eight_bit) == "lowest"  # 20B in 8 bits is still 21 GB
    # A person's Q4_K GGUF file (about 4.5 bits a weight) is counted at its own size, and then fits with model offload.
    with_q4_k = dict(components, transformer=int(components["transformer"] / 16 * 4.5))
    assert choose(None, CUDA, with_q4_k, free, None) == "balanced"


def test_quantized_is_a_choice_for_diffusers_models_only():
    with pytest.raises(models.InputError, match="single file"):
        models.choose_dit_memory_mode("quantized", CUDA, {"transformer": 1}, 1, None)
    assert models.choose_dit_memory_mode("quantized", CUDA, {"transformer": 1}, 1, 1) == "quantized"


def test_the_8_bit_transformer_is_made_once_and_edits_close_to_the_full_one(tmp_path, picture, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    models.CACHE.clear()
    folder = str(write_dit_model(tmp_path / "klein", "flux2-klein"))
    full, _ = edit_with(folder, picture, "flux2-klein")
    models.CACHE.clear()
    eight_bit, loaded = edit_with(folder, picture, "flux2-klein", memory="quantized")
    assert loaded.memory == "quantized" and models.is_quantized(loaded.pipe.transformer)
    copies = list((tmp_path / "cache").rglob("*.Q8_0.gguf"))
    assert len(copies) == 1
    made = copies[0].stat().st_mtime_ns
    difference = np.abs(eight_bit.astype(int) - full.astype(int))
    assert 0 < difference.max() and difference.mean() < 2  # quantized, and still the same picture
    models.CACHE.clear()

    def full_transformer_loaded(*args, **kwargs):
        raise AssertionError("the full transformer was read although its 8-bit copy exists")

    import diffusers

    monkeypatch.setattr(diffusers.Flux2Transformer2DModel, "from_pretrained", full_transformer_loaded)
    models.load_pipeline("instruct", folder, torch.device("cpu"), torch.float32, memory="quantized")
    assert copies[0].stat().st_mtime_ns == made  # read again, not made again
    models.CACHE.clear()


def test_the_memory_decision_reads_component_sizes_from_the_headers_as_loading_gives_them(tmp_path):
    folder = write_dit_model(tmp_path / "klein", "flux2-klein")
    planned, eight_bit = models.planned_component_bytes(folder, torch.float32)
    models.CACHE.clear()
    loaded = models.load_pipeline("instruct", str(folder), torch.device("cpu"), torch.float32)
    loaded_bytes = models.component_bytes(loaded.pipe)
    assert planned.keys() == loaded_bytes.keys()
    for name, size in loaded_bytes.items():  # buffers made at construction (rotary frequencies) are not in the files
        assert abs(planned[name] - size) <= 0.01 * size, name
    assert eight_bit == models.q8_0_bytes(loaded.pipe.transformer)
    models.CACHE.clear()


def test_a_damaged_8_bit_copy_is_removed_and_made_again(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    models.CACHE.clear()
    folder = str(write_dit_model(tmp_path / "klein", "flux2-klein"))
    models.load_pipeline("instruct", folder, torch.device("cpu"), torch.float32, memory="quantized")
    models.CACHE.clear()
    copy = next((tmp_path / "cache").rglob("*.Q8_0.gguf"))
    copy.write_bytes(copy.read_bytes()[:1000])  # cut short, as by a full disk or a crash of another program
    with pytest.raises(ModelUnavailable, match="could not be read .* it was removed, and the next Generate makes it again"):
        models.load_pipeline("instruct", folder, torch.device("cpu"), torch.float32, memory="quantized")
    assert not copy.exists()
    loaded = models.load_pipeline("instruct", folder, torch.device("cpu"), torch.float32, memory="quantized")
    assert models.is_quantized(loaded.pipe.transformer) and copy.exists()
    assert not list((tmp_path / "cache").rglob("*.partial"))
    models.CACHE.clear()


def test_making_the_8_bit_copy_is_said_and_cancellable(tmp_path, monkeypatch, picture):
    from engines import registry
    from engines.api import Cancelled

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    models.CACHE.clear()
    folder = str(write_dit_model(tmp_path / "klein", "flux2-klein"))
    cancel, stages = CancelToken(), []

    def on_step(step):
        if step.stage:
            stages.append(step.stage)
            if step.stage.startswith("Making an 8-bit copy"):
                cancel.cancel()  # the person presses Cancel while the copy is being made

    request = Request(task=Task.EDIT, image=picture, prompt="make it winter", steps=2, seed=1, model=folder, device="cpu",
                      dtype="float32", memory="quantized")
    with pytest.raises(Cancelled):
        registry.get("edit").run(request, on_step, cancel)
    assert any(s.startswith("Making an 8-bit copy of klein's transformer") for s in stages)
    assert not list((tmp_path / "cache").rglob("*.gguf*"))  # neither a copy nor a partial one is left
    models.CACHE.clear()
