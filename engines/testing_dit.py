"""Tiny random-weight DiT pipelines (FLUX.2 [klein], Qwen-Image-Edit, FLUX.1 Fill and Kontext), built offline.

Like `engines.testing`, these are saved to a folder in diffusers format and loaded back with
`DiffusionPipeline.from_pretrained(folder)` (offline), so every loading and denoising code path runs
for real; only the weights are random. Nothing is downloaded: the tokenizers (Qwen's byte-level BPE,
T5's Unigram, CLIP's BPE) are written from scratch with one token per byte/character, and the Qwen
vision processor gets its configuration in code.

Sizes:
- "tiny": CPU tests. Real latent layouts (FLUX.2: 32 latent channels, patchified to 128 with the
  VAE's batch-norm statistics; Qwen: 16 channels with the real latents_mean/std; FLUX.1: 16 channels
  with the real scaling/shift factors; FLUX Fill: 384 input channels), real 8× VAE geometry and real
  scheduler configurations, but a few thousand parameters per model. A folder is a few MB.
- "real": the structure of FLUX.2 [klein] 4B, Qwen-Image-Edit-2511 (20B) and FLUX.1 Fill/Kontext
  [dev] (12B) with their text encoders, from the released config.json files (values in REAL below).
  Built on the meta device by default (no memory), or on a GPU with `device="cuda"` for a speed
  benchmark. Never build it in tests on the CPU.

The main pipeline class of each kind is the folder's model_index `_class_name`; the other classes of
that kind (inpainting variants) load from the same folder: `Flux2KleinInpaintPipeline.from_pretrained(folder)`
and `QwenImageEditInpaintPipeline.from_pretrained(folder)` and `FluxKontextInpaintPipeline.from_pretrained(folder)`
all work, as does `Variant.from_pipe(pipe)` (see `PIPELINES`).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from engines import models
from engines.models import image_only_processor_class, load_qwen_vl_processor, torchvision_available  # noqa: F401 (the tests load with it)
from engines.testing import bytes_to_unicode, write_clip_tokenizer

DIT_KINDS = ("flux2-klein", "qwen-edit", "flux-fill", "flux-kontext")
DIT_SIZES = ("tiny", "real")

# kind → (the folder's main pipeline class, other diffusers classes that load from the same folder)
PIPELINES = {
    "flux2-klein": ("Flux2KleinPipeline", ("Flux2KleinInpaintPipeline",)),
    "qwen-edit": ("QwenImageEditPlusPipeline", ("QwenImageEditInpaintPipeline",)),
    "flux-fill": ("FluxFillPipeline", ()),
    "flux-kontext": ("FluxKontextPipeline", ("FluxKontextInpaintPipeline",)),
}

# ---- configurations -----------------------------------------------------------------------------
# "real" values are the released repositories' config.json files (diffusers/transformers keys):
#   FLUX.2 [klein] 4B: black-forest-labs/FLUX.2-klein-4B transformer/, vae/ (the FLUX.2 VAE), text_encoder/ (Qwen3-4B);
#   Qwen-Image-Edit-2511: Qwen/Qwen-Image-Edit-2511 transformer/ (Qwen-Image's plus zero_cond_t), vae/, text_encoder/
#   (Qwen2.5-VL-7B-Instruct), processor/; FLUX.1 Fill/Kontext [dev]: black-forest-labs/FLUX.1-Fill-dev,
#   FLUX.1-Kontext-dev (FLUX.1-dev's transformer; Fill with in_channels 384, out_channels 64), vae/, text_encoder/
#   (CLIP ViT-L/14), text_encoder_2/ (T5 v1.1 XXL), scheduler/.

FLOW_FLUX1 = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                  base_image_seq_len=256, max_image_seq_len=4096)
# FLUX.2 (dev and klein): the klein pipeline computes its own mu (compute_empirical_mu), so only
# use_dynamic_shifting=True (mu is required) and time_shift_type matter.
FLOW_FLUX2 = dict(FLOW_FLUX1, time_shift_type="exponential", shift_terminal=None, invert_sigmas=False,
                  stochastic_sampling=False, use_karras_sigmas=False, use_exponential_sigmas=False, use_beta_sigmas=False)
FLOW_QWEN = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
                 base_image_seq_len=256, max_image_seq_len=8192, shift_terminal=0.02, time_shift_type="exponential",
                 invert_sigmas=False, stochastic_sampling=False, use_karras_sigmas=False, use_exponential_sigmas=False,
                 use_beta_sigmas=False)

_KL4 = dict(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)

REAL = {
    "flux2-klein": dict(
        transformer=dict(patch_size=1, in_channels=128, out_channels=None, num_layers=5, num_single_layers=20,
                         attention_head_dim=128, num_attention_heads=24, joint_attention_dim=7680,
                         timestep_guidance_channels=256, mlp_ratio=3.0, axes_dims_rope=(32, 32, 32, 32), rope_theta=2000,
                         eps=1e-6, guidance_embeds=False),
        vae=dict(**_KL4, block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=32, norm_num_groups=32,
                 sample_size=1024, use_quant_conv=True, use_post_quant_conv=True, mid_block_add_attention=True,
                 batch_norm_eps=1e-4, batch_norm_momentum=0.1, patch_size=(2, 2)),
        text=dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                  head_dim=128, max_position_embeddings=40960, rms_norm_eps=1e-6, rope_theta=1000000, tie_word_embeddings=True,
                  vocab_size=151936, attention_bias=False),
        scheduler=FLOW_FLUX2,
    ),
    "qwen-edit": dict(
        transformer=dict(patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128,
                         num_attention_heads=24, joint_attention_dim=3584, guidance_embeds=False, axes_dims_rope=(16, 56, 56),
                         zero_cond_t=True),
        vae=dict(base_dim=96, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=2, attn_scales=(), temperal_downsample=(False, True, True)),
        text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                  max_position_embeddings=128000, rms_norm_eps=1e-6, vocab_size=152064, rope_theta=1000000.0,
                  mrope_section=(16, 24, 24), sliding_window=32768, max_window_layers=28),
        vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584, patch_size=14,
                    spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=(7, 15, 23, 31),
                    tokens_per_second=2, in_channels=3),
        processor=dict(min_pixels=56 * 56, max_pixels=28 * 28 * 16384),
        scheduler=FLOW_QWEN,
    ),
    "flux1": dict(
        transformer=dict(patch_size=1, in_channels=64, out_channels=None, num_layers=19, num_single_layers=38,
                         attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                         guidance_embeds=True, axes_dims_rope=(16, 56, 56)),
        vae=dict(**_KL4, block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=16, norm_num_groups=32,
                 sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False,
                 force_upcast=True, mid_block_add_attention=True),
        clip=dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768),
        t5=dict(vocab_size=32128, d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, feed_forward_proj="gated-gelu",
                relative_attention_num_buckets=32, relative_attention_max_distance=128, layer_norm_epsilon=1e-6,
                tie_word_embeddings=False),
        scheduler=FLOW_FLUX1,
    ),
}

# Tiny: the real latent layouts and 8× VAE geometry, everything else as small as the code allows.
# FLUX.2's pipeline reads hidden states 9, 18 and 27 of the text encoder by default, so its tiny
# Qwen3 keeps 28 (very narrow) layers; axes_dims_rope must sum to attention_head_dim.
TINY = {
    "flux2-klein": dict(
        transformer=dict(REAL["flux2-klein"]["transformer"], num_layers=1, num_single_layers=1, attention_head_dim=16,
                         num_attention_heads=2, joint_attention_dim=3 * 16, timestep_guidance_channels=32,
                         axes_dims_rope=(4, 4, 4, 4)),
        vae=dict(REAL["flux2-klein"]["vae"], block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=8,
                 sample_size=64),
        text=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=28, num_attention_heads=2, num_key_value_heads=1,
                  head_dim=8, max_position_embeddings=1024, rms_norm_eps=1e-6, rope_theta=1000000, tie_word_embeddings=True,
                  attention_bias=False),
        scheduler=FLOW_FLUX2,
    ),
    "qwen-edit": dict(
        transformer=dict(REAL["qwen-edit"]["transformer"], num_layers=2, attention_head_dim=16, num_attention_heads=2,
                         joint_attention_dim=32, axes_dims_rope=(4, 6, 6)),
        vae=dict(REAL["qwen-edit"]["vae"], base_dim=8, num_res_blocks=1),
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                  max_position_embeddings=4096, rms_norm_eps=1e-6, rope_theta=1000000.0, mrope_section=(2, 3, 3),
                  sliding_window=None, max_window_layers=2),
        vision=dict(REAL["qwen-edit"]["vision"], depth=2, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32,
                    fullatt_block_indexes=(1,)),
        # Real: max 16384 merged tokens per image. Tiny: about 224×224 at most (64 image tokens), so the
        # vision tower stays cheap on the CPU whatever size the pipeline hands it.
        processor=dict(min_pixels=56 * 56, max_pixels=28 * 28 * 64),
        scheduler=FLOW_QWEN,
    ),
    "flux1": dict(
        transformer=dict(REAL["flux1"]["transformer"], num_layers=1, num_single_layers=1, attention_head_dim=16,
                         num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 6, 6)),
        vae=dict(REAL["flux1"]["vae"], block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=8, sample_size=64),
        clip=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                  hidden_act="quick_gelu", projection_dim=32),
        t5=dict(d_model=32, d_ff=64, d_kv=16, num_heads=2, num_layers=2, feed_forward_proj="gated-gelu",
                relative_attention_num_buckets=32, relative_attention_max_distance=128, layer_norm_epsilon=1e-6,
                tie_word_embeddings=False),
        scheduler=FLOW_FLUX1,
    ),
}


# ---- tokenizers, written from scratch -------------------------------------------------------------

# Qwen2/2.5 special tokens in their real order (real ids start at 151643; here right after the learned vocabulary).
QWEN_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
                "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
                "<|image_pad|>", "<|video_pad|>")
QWEN_PLAIN = ("<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>",
              "<|file_sep|>")
QWEN3_PLAIN = ("<tool_response>", "</tool_response>", "<think>", "</think>")

# The output of Qwen3's chat template for plain messages (its tool-calling branches left out):
# with add_generation_prompt and enable_thinking=False, as FLUX.2 [klein] calls it, it ends with an
# empty think block.
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)
QWEN25_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


# What the tiny Qwen BPE learns its merges from: the prompt templates the diffusers pipelines wrap
# around a prompt. Qwen's own vocabulary has a token for each of these words, so with these merges
# the templates split as they do for the real models, and the pipelines' fixed "drop the template"
# offsets (Qwen-Image-Edit: the first 64 tokens; Qwen-Image: 34) fall where they do for them.
QWEN_TEMPLATE_TEXTS = (
    "system\nDescribe the key features of the input image (color, shape, size, texture, objects, background), then explain "
    "how the user's text instruction should alter or modify the image. Generate a new image that meets the user's "
    "requirements while maintaining consistency with the original input where appropriate.",
    "system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, spatial relationships of the "
    "objects and background:",
    "user\n", "assistant\n", "Picture 1: Picture 2: Picture 3: ",
)
QWEN_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def write_qwen_tokenizer(folder: str | Path, qwen3: bool = False) -> int:
    """A Qwen2 byte-level BPE tokenizer (Qwen2TokenizerFast) made from scratch: the 256 byte
    characters, merges learned (by the `tokenizers` trainer, deterministically) from the pipelines'
    prompt templates only, so any other word is spelled in pieces, then Qwen's special tokens in
    their real order, eos <|im_end|>, pad <|endoftext|> and a ChatML chat template (Qwen3's, whose
    `enable_thinking=False` adds an empty think block, when `qwen3`). Returns its size.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    folder = Path(folder)
    tok = Tokenizer(models.BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False,
                               byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=100_000, min_frequency=1, show_progress=False, special_tokens=[],
                                  initial_alphabet=list(bytes_to_unicode().values()))
    tok.train_from_iterator(QWEN_TEMPLATE_TEXTS, trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN_PLAIN + (QWEN3_PLAIN if qwen3 else ())])
    tokenizer = Qwen2TokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token=None, bos_token=None, model_max_length=131072, errors="replace",
                                   split_special_tokens=False, clean_up_tokenization_spaces=False)
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE if qwen3 else QWEN25_CHAT_TEMPLATE
    tokenizer.save_pretrained(str(folder))
    return len(tokenizer)


def write_t5_tokenizer(folder: str | Path) -> int:
    """A T5 tokenizer (T5TokenizerFast) written from scratch: a Unigram model with T5's layout
    (<pad> 0, </s> 1, <unk> 2), the word-start marker "▁" and one piece per printable ASCII
    character (also "▁"+letter), Metaspace pre-tokenizing and </s> appended, as T5's does. No
    sentinel (<extra_id_N>) tokens. Returns its size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    folder = Path(folder)
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    chars = [chr(c) for c in range(33, 127)]
    pieces += [(c, -5.0) for c in chars] + [("▁" + c, -4.0) for c in chars]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"],
                                                       special_tokens=[("</s>", 1)])
    tokenizer = T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0,
                                model_max_length=512)
    tokenizer.save_pretrained(str(folder))
    return len(tokenizer)


# ---- building -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _building(device, dtype):
    """Construct modules on `device` in `dtype` (the meta device allocates nothing)."""
    previous = torch.get_default_dtype()
    if dtype is not None:
        torch.set_default_dtype(dtype)
    try:
        with torch.device(device) if device is not None else contextlib.nullcontext():
            yield
    finally:
        torch.set_default_dtype(previous)


def _tokenizer(cls, write, *args):
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp), *args)
        return cls.from_pretrained(tmp)


def _flux2_klein(cfg, size, building):
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, Flux2Transformer2DModel
    from transformers import Qwen2TokenizerFast, Qwen3Config, Qwen3ForCausalLM

    tokenizer = _tokenizer(Qwen2TokenizerFast, write_qwen_tokenizer, True)
    text = dict(cfg["text"])
    text.setdefault("vocab_size", len(tokenizer))
    ids = dict(bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    with building:
        vae = AutoencoderKLFlux2(**cfg["vae"])
        if size == "tiny":
            # Non-trivial batch-norm statistics (real ones are far from 0 and 1), so code that forgets
            # the normalisation gives visibly wrong latents in tests.
            g = torch.Generator().manual_seed(1234)
            n = vae.bn.running_mean.numel()
            vae.bn.running_mean.copy_(torch.randn(n, generator=g, device="cpu") * 0.5)
            vae.bn.running_var.copy_(torch.rand(n, generator=g, device="cpu") * 3 + 0.5)
        text_encoder = Qwen3ForCausalLM(Qwen3Config(**text, **ids))
        transformer = Flux2Transformer2DModel(**cfg["transformer"])
    return Flux2KleinPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**cfg["scheduler"]), vae=vae, text_encoder=text_encoder,
                              tokenizer=tokenizer, transformer=transformer, is_distilled=True)


IMAGE_MEAN, IMAGE_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]  # OpenAI CLIP's


def qwen_vl_processor(tokenizer, image_processor, video_processor=None):
    """The Qwen-Image-Edit `processor` component: a real Qwen2VLProcessor when torchvision is there
    (with `video_processor` or a default Qwen2VLVideoProcessor), else the image-only one."""
    from transformers import Qwen2VLProcessor

    if torchvision_available():
        if video_processor is None:
            from transformers import Qwen2VLVideoProcessor

            video_processor = Qwen2VLVideoProcessor(**_video_processor_config(image_processor))
        return Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor)
    return image_only_processor_class()(image_processor=image_processor, tokenizer=tokenizer)


def _video_processor_config(image_processor) -> dict:
    return dict(min_pixels=image_processor.size["shortest_edge"], max_pixels=image_processor.size["longest_edge"],
                patch_size=14, temporal_patch_size=2, merge_size=2, image_mean=IMAGE_MEAN, image_std=IMAGE_STD)


def _qwen_image_processor(cfg):
    from transformers import Qwen2VLImageProcessor

    return Qwen2VLImageProcessor(min_pixels=cfg["min_pixels"], max_pixels=cfg["max_pixels"], patch_size=14, temporal_patch_size=2,
                                 merge_size=2, image_mean=IMAGE_MEAN, image_std=IMAGE_STD)


def _save_qwen_processor(processor, folder: Path) -> None:
    """The processor folder in the layout of the released repositories (tokenizer files,
    preprocessor_config.json, video_preprocessor_config.json), which transformers 4 and 5 both load
    as a Qwen2VLProcessor, whichever class `processor` is."""
    folder.mkdir(parents=True, exist_ok=True)
    processor.tokenizer.save_pretrained(str(folder))
    processor.image_processor.save_pretrained(str(folder))
    size = processor.image_processor.size
    for name, type_key, type_name in (("preprocessor_config.json", "image_processor_type", "Qwen2VLImageProcessor"),
                                      ("video_preprocessor_config.json", "video_processor_type", "Qwen2VLVideoProcessor")):
        path = folder / name
        config = json.loads(path.read_text()) if path.exists() else _video_processor_config(processor.image_processor)
        config.pop("image_processor_type", None)
        config.update({type_key: type_name, "processor_class": "Qwen2VLProcessor", "min_pixels": size["shortest_edge"],
                       "max_pixels": size["longest_edge"], "size": dict(size)})
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["processor_class"] = "Qwen2VLProcessor"
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def _qwen_edit(cfg, size, building):
    from diffusers import (AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageEditPlusPipeline,
                           QwenImageTransformer2DModel)
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer

    tokenizer = _tokenizer(Qwen2Tokenizer, write_qwen_tokenizer, False)
    processor = qwen_vl_processor(tokenizer, _qwen_image_processor(cfg["processor"]))
    text = dict(cfg["text"])
    mrope = text.pop("mrope_section")
    text.setdefault("vocab_size", len(tokenizer))
    token = tokenizer.convert_tokens_to_ids
    text.update(bos_token_id=token("<|endoftext|>"), eos_token_id=tokenizer.eos_token_id,
                rope_scaling={"type": "mrope", "rope_type": "default", "mrope_section": list(mrope)})
    vision = dict(cfg["vision"])
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=token("<|image_pad|>"),
                              video_token_id=token("<|video_pad|>"), vision_start_token_id=token("<|vision_start|>"),
                              vision_end_token_id=token("<|vision_end|>"))
    with building:
        vae = AutoencoderKLQwenImage(**{k: list(v) if isinstance(v, tuple) else v for k, v in cfg["vae"].items()})
        text_encoder = Qwen2_5_VLForConditionalGeneration(config)
        transformer = QwenImageTransformer2DModel(**cfg["transformer"])
    return QwenImageEditPlusPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**cfg["scheduler"]), vae=vae,
                                     text_encoder=text_encoder, tokenizer=tokenizer, processor=processor, transformer=transformer)


def _flux1(kind, cfg, size, building):
    from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxFillPipeline, FluxKontextPipeline,
                           FluxTransformer2DModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

    with tempfile.TemporaryDirectory() as tmp:
        clip_size = write_clip_tokenizer(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp)
    tokenizer_2 = _tokenizer(T5TokenizerFast, write_t5_tokenizer)
    clip = dict(cfg["clip"])
    clip.setdefault("vocab_size", clip_size)
    # CLIP pools at the end token: its id is the largest in this vocabulary (as in OpenAI's), so
    # eos_token_id=2 (the released configs' legacy value, meaning "argmax") works as well as the id.
    clip.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    t5 = dict(cfg["t5"])
    t5.setdefault("vocab_size", len(tokenizer_2))
    transformer = dict(cfg["transformer"])
    vae_cfg = cfg["vae"]
    if kind == "flux-fill":
        # Packed latents (4·C) + packed masked-image latents (4·C) + the mask at pixel resolution folded
        # into the channels (vae_scale_factor² = 64, packed 2×2 → 256): 64 + 64 + 256 = 384.
        c4 = 4 * vae_cfg["latent_channels"]
        scale = 2 ** (len(vae_cfg["block_out_channels"]) - 1)
        transformer.update(in_channels=2 * c4 + 4 * scale * scale, out_channels=c4)
    with building:
        vae = AutoencoderKL(**vae_cfg)
        text_encoder = CLIPTextModel(CLIPTextConfig(**clip))
        text_encoder_2 = T5EncoderModel(T5Config(**t5))
        flux = FluxTransformer2DModel(**transformer)
    parts = dict(scheduler=FlowMatchEulerDiscreteScheduler(**cfg["scheduler"]), vae=vae, text_encoder=text_encoder,
                 tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=flux)
    if kind == "flux-fill":
        return FluxFillPipeline(**parts)
    return FluxKontextPipeline(**parts, image_encoder=None, feature_extractor=None)


def build_dit_pipeline(kind: str, size: str = "tiny", seed: int = 0, device=None, dtype=None):
    """A random-weight pipeline of `kind` (see DIT_KINDS) in memory, the folder's main class (PIPELINES).

    "tiny" is built on the CPU in float32 and is the same for the same seed. "real" is built on the
    meta device unless `device` is given (e.g. "cuda" with dtype=torch.bfloat16 for a benchmark)."""
    if kind not in DIT_KINDS:
        raise ValueError(f"kind must be one of {DIT_KINDS}")
    if size not in DIT_SIZES:
        raise ValueError(f"size must be one of {DIT_SIZES}")
    if size == "real" and device is None:
        device = "meta"
    torch.manual_seed(seed)
    table = TINY if size == "tiny" else REAL
    building = _building(device, dtype)
    with torch.no_grad():
        if kind == "flux2-klein":
            return _flux2_klein(table[kind], size, building)
        if kind == "qwen-edit":
            return _qwen_edit(table[kind], size, building)
        return _flux1(kind, table["flux1"], size, building)


# The released repositories' model_index names for components whose class transformers 5 reports
# under another name (its tokenizer classes have no separate "Fast" twin any more).
_INDEX_NAMES = {
    "flux2-klein": {"tokenizer": "Qwen2TokenizerFast"},
    "qwen-edit": {"tokenizer": "Qwen2Tokenizer", "processor": "Qwen2VLProcessor"},
    "flux-fill": {"tokenizer": "CLIPTokenizer", "tokenizer_2": "T5TokenizerFast"},
    "flux-kontext": {"tokenizer": "CLIPTokenizer", "tokenizer_2": "T5TokenizerFast"},
}


def write_dit_model(folder: str | Path, kind: str, size: str = "tiny", seed: int = 0, device=None, dtype=None) -> Path:
    """Build a random-weight pipeline of `kind` and save it as a diffusers folder (safetensors).

    Load it with `DiffusionPipeline.from_pretrained(folder)` (the main class) or any class of
    PIPELINES[kind]; without torchvision, a qwen-edit folder needs
    `processor=load_qwen_vl_processor(folder / "processor")` (see `torchvision_available`).
    "real" needs a device that holds it (not meta) and tens of GB of disk. Returns the folder."""
    folder = Path(folder)
    if size == "real" and device in (None, "meta"):
        raise ValueError("a real-size model on the meta device has no weights to write: pass device= (and dtype=)")
    pipe = build_dit_pipeline(kind, size, seed, device=device, dtype=dtype)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    for name, class_name in _INDEX_NAMES[kind].items():
        index[name] = ["transformers", class_name]
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    if kind == "qwen-edit":
        import shutil

        shutil.rmtree(folder / "processor", ignore_errors=True)
        _save_qwen_processor(pipe.processor, folder / "processor")
    return folder


# ---- transformer files: the layouts people download -------------------------------------------
# Black Forest Labs publish FLUX transformers with their own key names (double_blocks, single_blocks,
# fused qkv); ComfyUI and city96's GGUF files keep those names. Qwen-Image's are diffusers' own. The
# maps below turn a diffusers state dict into the published layout; diffusers' single-file converters
# (convert_flux2_transformer_checkpoint_to_diffusers, convert_flux_transformer_checkpoint_to_diffusers)
# turn it back, and tests hold the two together at the real structure.

TRANSFORMER_FILE_QUANTS = ("F32", "Q8_0", "Q4_K")  # what write_transformer_file stores the 2-D weights as in a .gguf


def _swap_halves(tensor):
    """Black Forest Labs' final modulation is (shift, scale); diffusers' (scale, shift)."""
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


# diffusers name → Black Forest Labs' name, for the parts renamed one to one.
_FLUX2_RENAMES = [("x_embedder", "img_in"), ("context_embedder", "txt_in"),
                  ("time_guidance_embed.timestep_embedder.linear_1", "time_in.in_layer"),
                  ("time_guidance_embed.timestep_embedder.linear_2", "time_in.out_layer"),
                  ("time_guidance_embed.guidance_embedder.linear_1", "guidance_in.in_layer"),
                  ("time_guidance_embed.guidance_embedder.linear_2", "guidance_in.out_layer"),
                  ("double_stream_modulation_img.linear", "double_stream_modulation_img.lin"),
                  ("double_stream_modulation_txt.linear", "double_stream_modulation_txt.lin"),
                  ("single_stream_modulation.linear", "single_stream_modulation.lin"), ("proj_out", "final_layer.linear")]
_FLUX2_DOUBLE = {"attn.norm_q.weight": "img_attn.norm.query_norm.scale", "attn.norm_k.weight": "img_attn.norm.key_norm.scale",
                 "attn.norm_added_q.weight": "txt_attn.norm.query_norm.scale", "attn.norm_added_k.weight": "txt_attn.norm.key_norm.scale",
                 "attn.to_out.0": "img_attn.proj", "ff.linear_in": "img_mlp.0", "ff.linear_out": "img_mlp.2",
                 "attn.to_add_out": "txt_attn.proj", "ff_context.linear_in": "txt_mlp.0", "ff_context.linear_out": "txt_mlp.2"}
_FLUX2_SINGLE = {"attn.to_qkv_mlp_proj": "linear1", "attn.to_out": "linear2", "attn.norm_q.weight": "norm.query_norm.scale",
                 "attn.norm_k.weight": "norm.key_norm.scale"}
_FLUX1_RENAMES = [("time_text_embed.timestep_embedder.linear_1", "time_in.in_layer"),
                  ("time_text_embed.timestep_embedder.linear_2", "time_in.out_layer"),
                  ("time_text_embed.text_embedder.linear_1", "vector_in.in_layer"),
                  ("time_text_embed.text_embedder.linear_2", "vector_in.out_layer"),
                  ("time_text_embed.guidance_embedder.linear_1", "guidance_in.in_layer"),
                  ("time_text_embed.guidance_embedder.linear_2", "guidance_in.out_layer"),
                  ("context_embedder", "txt_in"), ("x_embedder", "img_in"), ("proj_out", "final_layer.linear")]
_FLUX1_DOUBLE = {"norm1.linear": "img_mod.lin", "norm1_context.linear": "txt_mod.lin",
                 "attn.norm_q.weight": "img_attn.norm.query_norm.scale", "attn.norm_k.weight": "img_attn.norm.key_norm.scale",
                 "attn.norm_added_q.weight": "txt_attn.norm.query_norm.scale", "attn.norm_added_k.weight": "txt_attn.norm.key_norm.scale",
                 "ff.net.0.proj": "img_mlp.0", "ff.net.2": "img_mlp.2", "ff_context.net.0.proj": "txt_mlp.0",
                 "ff_context.net.2": "txt_mlp.2", "attn.to_out.0": "img_attn.proj", "attn.to_add_out": "txt_attn.proj"}
_FLUX1_SINGLE = {"norm.linear": "modulation.lin", "attn.norm_q.weight": "norm.query_norm.scale",
                 "attn.norm_k.weight": "norm.key_norm.scale", "proj_out": "linear2"}
# Projections Black Forest Labs keep fused: a double block's q, k, v per stream (qkv), and for FLUX.1 a
# single block's q, k, v and MLP input (linear1; FLUX.2's diffusers model keeps that one fused too).
_DOUBLE_FUSED = {"attn.to_q": ("img", "q"), "attn.to_k": ("img", "k"), "attn.to_v": ("img", "v"),
                 "attn.add_q_proj": ("txt", "q"), "attn.add_k_proj": ("txt", "k"), "attn.add_v_proj": ("txt", "v")}
_FLUX1_SINGLE_FUSED = {"attn.to_q": "q", "attn.to_k": "k", "attn.to_v": "v", "proj_mlp": "mlp"}


def _published(state: dict, renames: list, double: dict, single: dict, single_fused: dict) -> dict:
    out, fused = {}, {}
    for name, value in state.items():
        if name.startswith("norm_out.linear."):
            out["final_layer.adaLN_modulation.1." + name.rsplit(".", 1)[1]] = _swap_halves(value)
            continue
        if name.startswith(("transformer_blocks.", "single_transformer_blocks.")):
            head, index, rest = name.split(".", 2)
            stem, param = rest.rsplit(".", 1)
            if head == "transformer_blocks" and stem in _DOUBLE_FUSED:
                stream, part = _DOUBLE_FUSED[stem]
                fused.setdefault(f"double_blocks.{index}.{stream}_attn.qkv.{param}", {})[part] = value
            elif head == "single_transformer_blocks" and stem in single_fused:
                fused.setdefault(f"single_blocks.{index}.linear1.{param}", {})[single_fused[stem]] = value
            elif head == "transformer_blocks":
                out[f"double_blocks.{index}.{_renamed(rest, double)}"] = value
            else:
                out[f"single_blocks.{index}.{_renamed(rest, single)}"] = value
            continue
        for old, new in renames:
            name = name.replace(old, new)
        out[name] = value
    for name, parts in fused.items():
        out[name] = torch.cat([parts[p] for p in ("q", "k", "v", "mlp") if p in parts], dim=0)
    return out


def _renamed(rest: str, table: dict) -> str:
    for old, new in table.items():
        if rest == old or rest.startswith(old + "."):
            return new + rest[len(old):]
    raise KeyError(rest)


def original_layout(kind: str, state: dict) -> dict:
    """A diffusers transformer state dict in the layout its makers publish single files in."""
    if kind == "flux2-klein":
        return _published(state, _FLUX2_RENAMES, _FLUX2_DOUBLE, _FLUX2_SINGLE, {})
    if kind in ("flux-fill", "flux-kontext"):
        return _published(state, _FLUX1_RENAMES, _FLUX1_DOUBLE, _FLUX1_SINGLE, _FLUX1_SINGLE_FUSED)
    return dict(state)  # Qwen-Image: the diffusers names are the published ones


def small_transformer(kind: str, seed: int = 0, text_width: int | None = None):
    """A random-weight transformer of `kind` as narrow as a real file can be: one 128-wide head (the
    real head width, so the real position encoding applies), one block of each type, and the text width
    of the tiny pipelines (TINY), so it runs with their text encoders (or `text_width`)."""
    import diffusers

    tiny = TINY["flux1" if kind in ("flux-fill", "flux-kontext") else kind]["transformer"]
    real = json.loads((models.transformer_config_folder(kind) / "transformer" / "config.json").read_text(encoding="utf-8"))
    real = {k: v for k, v in real.items() if not k.startswith("_")}
    narrow = dict(real, num_layers=1, num_attention_heads=1, joint_attention_dim=text_width or tiny["joint_attention_dim"])
    if "num_single_layers" in real:
        narrow["num_single_layers"] = 1
    if "pooled_projection_dim" in real:
        narrow["pooled_projection_dim"] = tiny["pooled_projection_dim"]
    torch.manual_seed(seed)
    cls = getattr(diffusers, models.TRANSFORMER_CLASSES[kind])
    with torch.no_grad():
        model = cls(**narrow)
        for param in model.parameters():  # diffusers zero-initialises some output layers: random everywhere, so every weight matters
            param.normal_(0, 0.05)
    return model.eval()


def write_transformer_file(path: str | Path, kind: str, quant: str = "F32", seed: int = 0, prefix: str = "",
                           text_width: int | None = None, qwen_2511_marker: bool = False):
    """Write `small_transformer(kind)` as one file in the published layout: .safetensors (float32), or
    .gguf with the 2-D weights stored as `quant` (Q8_0 quantized by gguf-py; Q4_K as random valid
    blocks, since gguf-py cannot quantize K-quants) and the rest in F32, as city96's files keep them.
    `prefix` puts the keys under ComfyUI's "model.diffusion_model."; `qwen_2511_marker` adds the empty
    tensor ComfyUI marks Qwen-Image-Edit-2511 transformers with.

    Returns the transformer in diffusers form with the weights the file stands for (the dequantized
    values of a quantized file), to compare a loaded file against."""
    path = Path(path)
    model = small_transformer(kind, seed, text_width)
    state = {name: value.detach().clone() for name, value in model.state_dict().items()}
    published = original_layout(kind, state)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        tensors = {prefix + name: value.contiguous() for name, value in published.items()}
        if qwen_2511_marker:
            tensors[prefix + "__index_timestep_zero__"] = torch.empty(0)
        save_file(tensors, str(path))
        return model
    import gguf

    qtype = gguf.GGMLQuantizationType[quant]
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), arch={"flux2-klein": "flux2", "qwen-edit": "qwen_image"}.get(kind, "flux"))
    stored = {}
    for name, value in published.items():
        array = value.numpy().astype(np.float32)
        if qtype == gguf.GGMLQuantizationType.F32 or array.ndim != 2 or array.shape[1] % block:
            writer.add_tensor(prefix + name, array)
            stored[name] = value
            continue
        if qtype == gguf.GGMLQuantizationType.Q4_K:
            raw = _random_q4_k(rng, array.shape)
        else:
            raw = gguf.quants.quantize(array, qtype)
        writer.add_tensor(prefix + name, raw, raw_dtype=qtype)
        stored[name] = torch.from_numpy(gguf.quants.dequantize(raw, qtype).reshape(array.shape).copy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    _load_published(kind, model, stored)
    return model


def _random_q4_k(rng, shape) -> np.ndarray:
    """Q4_K blocks of 256 weights (llama.cpp's block_q4_K: fp16 scale d, fp16 min scale dmin, twelve
    bytes of 6-bit sub-block scales and mins, 128 bytes of 4-bit values) with random contents and small
    scales, so the weights they stand for are of a trained layer's size."""
    rows, columns = shape
    blocks = rows * columns // 256
    raw = rng.integers(0, 256, size=(blocks, 144), dtype=np.uint8)
    raw[:, 0:2] = np.frombuffer(np.float16(2e-4).tobytes(), dtype=np.uint8)
    raw[:, 2:4] = np.frombuffer(np.float16(5e-4).tobytes(), dtype=np.uint8)
    return raw.reshape(rows, columns // 256 * 144)


def _load_published(kind: str, model, stored: dict) -> None:
    """Put weights given in the published layout into a diffusers model (through diffusers' converter)."""
    from diffusers.loaders.single_file_utils import (
        convert_flux2_transformer_checkpoint_to_diffusers, convert_flux_transformer_checkpoint_to_diffusers,
    )

    convert = {"flux2-klein": convert_flux2_transformer_checkpoint_to_diffusers, "qwen-edit": lambda checkpoint: checkpoint}.get(
        kind, convert_flux_transformer_checkpoint_to_diffusers)
    model.load_state_dict(convert(checkpoint=dict(stored)), strict=True)
