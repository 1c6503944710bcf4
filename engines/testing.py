"""Tiny random-weight models in diffusers format, built fully offline.

Tests, benchmarks and `--demo` use these: they are saved to a folder and loaded back through the
same `models.py` code as real models, so every code path runs for real — only the weights are
random, which is why their pictures are noise.

Sizes: "tiny" (tests; a step takes milliseconds), "small" (benchmarks on the CPU; a step takes a
few hundred milliseconds at 512×512), "sd15" (the real SD 1.5 UNet and VAE structure, for GPU
benchmarks), "sdxl" (the real SDXL UNet, VAE and text-encoder widths, for the SDXL kinds on a GPU).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

KINDS = ("inpaint", "img2img", "instruct", "sd2", "sdxl-inpaint", "sdxl")

UNET_SIZES = {
    # block widths, layers per block, attention head dim, text width, native sample size (latent px)
    "tiny": dict(block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=8, cross_attention_dim=32, sample_size=32),
    "small": dict(block_out_channels=(128, 256, 256), layers_per_block=1, attention_head_dim=8, cross_attention_dim=256, sample_size=64),
    "sd15": dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, attention_head_dim=8, cross_attention_dim=768, sample_size=64),
    "sdxl": dict(block_out_channels=(320, 640, 1280), layers_per_block=2, attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
                 sample_size=128),
}
SDXL_TEXT = {"sdxl": (768, 1280)}  # the two text encoders' widths (CLIP ViT-L and OpenCLIP bigG); smaller sizes use width/2 each


def bytes_to_unicode() -> dict[int, str]:
    """The byte→character table of GPT-2/CLIP byte-level BPE: every byte gets a printable character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_clip_tokenizer(folder: Path) -> int:
    """A CLIP tokenizer written from scratch: one token per byte (and per word-final byte), no merges.

    Returns the vocabulary size. Real CLIP has 49,408 tokens learned by BPE; this one spells every
    word out letter by letter, which exercises the same code (padding, truncation at 77 tokens).
    """
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    raw = folder / "_raw"
    raw.mkdir(exist_ok=True)
    (raw / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (raw / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(str(raw / "vocab.json"), str(raw / "merges.txt"), model_max_length=77)
    tokenizer.save_pretrained(str(folder))
    for f in raw.iterdir():
        f.unlink()
    raw.rmdir()
    return len(vocab)


def build_pipeline(kind: str, size: str = "tiny", seed: int = 0):
    """A random-weight diffusers pipeline of `kind` (see KINDS) in memory."""
    import tempfile

    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionInpaintPipeline,
        StableDiffusionInstructPix2PixPipeline,
        StableDiffusionPipeline,
        StableDiffusionXLInpaintPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    torch.manual_seed(seed)
    u = dict(UNET_SIZES[size])
    width = u.pop("cross_attention_dim")
    n = len(u["block_out_channels"])
    sdxl = kind.startswith("sdxl")
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1)
    up = ("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",)
    if size == "sd15":  # SD 1.x's own layout: attention at every level but the deepest
        down = ("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",)
        up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1)
    extra = {}
    text_widths = SDXL_TEXT.get(size, (width // 2, width // 2))
    if sdxl:
        # SDXL conditions on both text encoders (concatenated) plus pooled text and size "time ids".
        time_dim = 256 if size == "sdxl" else 8
        extra = dict(addition_embed_type="text_time", addition_time_embed_dim=time_dim,
                     projection_class_embeddings_input_dim=text_widths[1] + 6 * time_dim,
                     transformer_layers_per_block=(1, 2, 10) if size == "sdxl" else 1)
        if size == "sdxl":
            down, up = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"), ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
            extra["use_linear_projection"] = True
    if kind == "sd2":
        # SD 2.x: linear projections in the transformer blocks and (for the 768 models) v-prediction.
        extra = dict(use_linear_projection=True)
    unet = UNet2DConditionModel(
        in_channels={"inpaint": 9, "sdxl-inpaint": 9, "instruct": 8}.get(kind, 4), out_channels=4, down_block_types=down, up_block_types=up,
        cross_attention_dim=width, norm_num_groups=32, **u, **extra,
    )
    # Real VAE geometry (8× down, 4 latent channels) with few channels, so latents look like SD's.
    vae_width = {"tiny": (8, 16, 16, 16), "small": (32, 64, 64, 64), "sd15": (128, 256, 512, 512), "sdxl": (128, 256, 512, 512)}[size]
    vae = AutoencoderKL(
        block_out_channels=vae_width, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4, norm_num_groups=8 if size == "tiny" else 32, layers_per_block=2 if size in ("sd15", "sdxl") else 1,
        sample_size=u["sample_size"] * 8, scaling_factor=0.13025 if sdxl else 0.18215,
    )
    with tempfile.TemporaryDirectory() as tmp:
        vocab_size = write_clip_tokenizer(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp)

    def text_config(hidden: int) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=77, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
            projection_dim=hidden,
        )  # two layers whatever the size: the text encoders run once per generation, the UNet every step

    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                              steps_offset=1, prediction_type="v_prediction" if kind == "sd2" else "epsilon")
    if sdxl:
        cls = StableDiffusionXLInpaintPipeline if kind == "sdxl-inpaint" else StableDiffusionXLPipeline
        return cls(
            vae=vae, unet=unet, scheduler=scheduler, tokenizer=tokenizer, tokenizer_2=tokenizer,
            text_encoder=CLIPTextModel(text_config(text_widths[0])), text_encoder_2=CLIPTextModelWithProjection(text_config(text_widths[1])),
        )
    cls = {"inpaint": StableDiffusionInpaintPipeline, "instruct": StableDiffusionInstructPix2PixPipeline}.get(kind, StableDiffusionPipeline)
    return cls(
        vae=vae, unet=unet, scheduler=scheduler, tokenizer=tokenizer, text_encoder=CLIPTextModel(text_config(width)),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def write_model(folder: str | Path, kind: str, size: str = "tiny", seed: int = 0) -> Path:
    """Build a random-weight pipeline and save it as a diffusers folder (safetensors). Returns the folder."""
    folder = Path(folder)
    build_pipeline(kind, size, seed).save_pretrained(str(folder), safe_serialization=True)
    if not kind.startswith("sdxl"):
        # Like the real SD repositories: the index names a safety checker and its image processor,
        # whose folders Sandcastle never downloads, so loading must cope with their absence.
        index_path = folder / "model_index.json"
        index = json.loads(index_path.read_text())
        index.update(safety_checker=["stable_diffusion", "StableDiffusionSafetyChecker"],
                     feature_extractor=["transformers", "CLIPImageProcessor"], requires_safety_checker=True)
        index_path.write_text(json.dumps(index, indent=2))
    return folder


def write_taesd(folder: str | Path, seed: int = 0) -> Path:
    """A tiny random-weight TAESD (AutoencoderTiny) with the real 8× geometry, for the preview path."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    folder = Path(folder)
    AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8), num_encoder_blocks=(1, 1, 1, 1),
                    num_decoder_blocks=(1, 1, 1, 1), latent_channels=4).save_pretrained(str(folder), safe_serialization=True)
    return folder


# ---- single-file checkpoints ------------------------------------------------------------------


def read_layout(path: str | Path) -> list[tuple[str, str, tuple[int, ...]]]:
    """A checkpoint key layout (tests/data/single_file/*.txt: `KEY DTYPE SHAPE` per line)."""
    import ast

    entries = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            key, dtype, shape = line.split(" ", 2)
            entries.append((key, dtype, tuple(ast.literal_eval(shape))))
    return entries


_DTYPES = {"F16": "float16", "F32": "float32", "I64": "int64", "I32": "int32"}


def _real_buffers(key: str, shape: tuple[int, ...]):
    """The values real releases carry for bookkeeping tensors (CLIP's position ids, the DDPM schedule,
    the EMA's decay, CLIP's logit scale), so a built file looks like a real one to a loader."""
    import numpy as np

    if key.endswith("position_ids"):
        return np.arange(shape[-1]).reshape(shape)
    if key == "model_ema.decay":
        return np.array(0.9999)
    if key == "model_ema.num_updates":
        return np.array(0)
    if key.endswith("logit_scale"):
        return np.array(np.log(1 / 0.07))
    if "." in key or shape != (1000,):
        return None
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2  # SD's "scaled_linear" schedule
    alphas = 1 - betas
    cumprod = np.cumprod(alphas)
    previous = np.append(1.0, cumprod[:-1])
    posterior_variance = betas * (1 - previous) / (1 - cumprod)
    return {
        "betas": betas, "alphas_cumprod": cumprod, "alphas_cumprod_prev": previous, "sqrt_alphas_cumprod": np.sqrt(cumprod),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1 - cumprod), "log_one_minus_alphas_cumprod": np.log(1 - cumprod),
        "sqrt_recip_alphas_cumprod": np.sqrt(1 / cumprod), "sqrt_recipm1_alphas_cumprod": np.sqrt(1 / cumprod - 1),
        "posterior_variance": posterior_variance, "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(previous) / (1 - cumprod),
        "posterior_mean_coef2": (1 - previous) * np.sqrt(alphas) / (1 - cumprod),
    }.get(key)


def write_checkpoint_from_layout(layout: str | Path, out: str | Path, random: bool = False, seed: int = 0,
                                 marks: dict[str, float] | None = None) -> Path:
    """A single-file checkpoint at real structure, from a key layout: every tensor of a real release,
    written one at a time (never the whole model in memory).

    Weights are zeros (left as holes: a sparse file, seconds for any size) or, with `random`, small
    normal values N(0, 0.02). Bookkeeping tensors get their real values. `marks` fills the named
    tensors with one value each, so a test can see where the loader put them."""
    import struct

    import numpy as np

    out = Path(out)
    marks = marks or {}
    entries = read_layout(layout)
    header, offset = {}, 0
    for key, dtype, shape in entries:
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[dtype]).itemsize
        header[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    rng = np.random.default_rng(seed)
    with out.open("wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        start = f.tell()
        for key, dtype, shape in entries:
            begin, end = header[key]["data_offsets"]
            value = _real_buffers(key, shape)
            if key in marks:
                value = np.full(shape, marks[key])
            elif value is None and random and dtype in ("F16", "F32"):
                value = rng.standard_normal(shape, dtype=np.float32) * 0.02
            if value is not None:
                f.seek(start + begin)
                f.write(np.ascontiguousarray(value, dtype=_DTYPES[dtype]).tobytes())
        f.truncate(start + offset)
    return out


# ---- DiffAE ----------------------------------------------------------------------------------------

DIFFAE_TINY = dict(image_size=32, channels=32, channel_mult=[1, 2], encoder_channel_mult=[1, 2], num_res_blocks=1,
                   attention_resolutions=[16], embed_channels=64, style_channels=16, groups=8)


def build_diffae(seed: int = 0):
    """A tiny DiffAE with random weights. Its last convolution is scaled down so the noise
    prediction is small and smooth, as a trained model's is near its data (the real network starts
    that layer at zero); with a full-size random output, DDIM inversion has nothing to be faithful to."""
    from engines.diffae.model import DiffAE, DiffAEConfig

    torch.manual_seed(seed)
    model = DiffAE(DiffAEConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in DIFFAE_TINY.items()}))
    with torch.no_grad():
        model.out[2].weight.mul_(0.05)
        model.out[2].bias.zero_()
    return model


def write_diffae(folder: str | Path, seed: int = 0) -> Path:
    """A tiny DiffAE model folder as the Attributes engine reads it: autoencoder, classifier (40
    attributes over z_sem), config."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = build_diffae(seed)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "autoencoder.safetensors"))
    dim = DIFFAE_TINY["style_channels"]
    g = torch.Generator().manual_seed(seed + 1)
    save_file({"weight": torch.randn(40, dim, generator=g), "bias": torch.randn(40, generator=g),
               "mean": torch.randn(dim, generator=g) * 0.1, "std": torch.rand(dim, generator=g) + 0.5}, str(folder / "classifier.safetensors"))
    (folder / "config.json").write_text(json.dumps(DIFFAE_TINY))
    return folder
