"""Write resources/checkpoints/<model type>/: the configuration-only diffusers folders that single-file
Stable Diffusion checkpoints are loaded with, so no file is ever fetched from the hub for them.

One folder per model type that diffusers' `infer_diffusers_model_type` names and Sandcastle can use.
The values are those of the diffusers-format repositories diffusers itself falls back to for each type
(`DIFFUSERS_DEFAULT_PIPELINE_PATHS`), which are the official configurations of each release:
v1 stable-diffusion-v1-5/stable-diffusion-v1-5, inpainting stable-diffusion-v1-5/stable-diffusion-inpainting,
instruct-pix2pix timbrooks/instruct-pix2pix, v2 stabilityai/stable-diffusion-2-1 (768 px, v-prediction),
inpainting_v2 stabilityai/stable-diffusion-2-inpainting (512 px, epsilon), xl_base
stabilityai/stable-diffusion-xl-base-1.0, xl_inpaint diffusers/stable-diffusion-xl-1.0-inpainting-0.1.
Tokenizers share one vocabulary (clip_tokenizer/, see make_clip_tokenizer.py); each folder keeps only
the tokenizer's settings. Safety checkers are left out: the editor does not censor a person's own photos.

    python tools/make_checkpoint_configs.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "resources" / "checkpoints"

SD_SCHEDULER = {  # the SD 1.x/2.x training schedule; engines replace the scheduler class, keeping these values
    "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "clip_sample": False, "trained_betas": None, "prediction_type": "epsilon", "timestep_spacing": "leading",
}
XL_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000, "steps_offset": 1, "interpolation_type": "linear", "use_karras_sigmas": False,
    "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True, "clip_sample": False, "trained_betas": None,
    "prediction_type": "epsilon", "timestep_spacing": "leading",
}


def vae(sample_size: int, scaling_factor: float, force_upcast: bool) -> dict:
    return {
        "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4, "in_channels": 3,
        "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "sample_size": sample_size,
        "scaling_factor": scaling_factor, "force_upcast": force_upcast,
    }


def sd_unet(in_channels: int, sample_size: int, v2: bool, upcast_attention: bool = False) -> dict:
    return {
        "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": [5, 10, 20, 20] if v2 else 8,
        "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False, "cross_attention_dim": 1024 if v2 else 768,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], "downsample_padding": 1, "dual_cross_attention": False,
        "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": in_channels, "layers_per_block": 2, "mid_block_scale_factor": 1,
        "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": sample_size,
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, "use_linear_projection": v2, "upcast_attention": upcast_attention,
    }


def xl_unet(in_channels: int) -> dict:
    return {
        "_class_name": "UNet2DConditionModel", "act_fn": "silu", "addition_embed_type": "text_time", "addition_embed_type_num_heads": 64,
        "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20], "block_out_channels": [320, 640, 1280],
        "center_input_sample": False, "cross_attention_dim": 2048, "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "downsample_padding": 1, "dual_cross_attention": False, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": in_channels,
        "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4,
        "projection_class_embeddings_input_dim": 2816, "sample_size": 128, "transformer_layers_per_block": [1, 2, 10],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], "upcast_attention": False, "use_linear_projection": True,
    }


CLIP_L = {  # openai/clip-vit-large-patch14's text tower: SD 1.x, and SDXL's first encoder
    "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_size": 768, "intermediate_size": 3072,
    "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77, "vocab_size": 49408,
    "hidden_act": "quick_gelu", "projection_dim": 768, "layer_norm_eps": 1e-05, "attention_dropout": 0.0, "dropout": 0.0,
    "initializer_factor": 1.0, "initializer_range": 0.02, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
}
OPEN_CLIP_H = {  # OpenCLIP ViT-H/14's text tower as SD 2 uses it: the penultimate layer, so 23 of its 24 layers
    **CLIP_L, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23, "num_attention_heads": 16,
    "hidden_act": "gelu", "projection_dim": 512,
}
OPEN_CLIP_BIGG = {  # OpenCLIP ViT-bigG/14's text tower with its projection: SDXL's second encoder
    **CLIP_L, "architectures": ["CLIPTextModelWithProjection"], "hidden_size": 1280, "intermediate_size": 5120,
    "num_hidden_layers": 32, "num_attention_heads": 20, "hidden_act": "gelu", "projection_dim": 1280,
}


def tokenizer(pad_token: str) -> dict:
    return {
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, "errors": "replace",
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": pad_token,
    }


def sd_folder(pipeline: str, unet: dict, text_encoder: dict, pad_token: str, scheduler: dict, vae_size: int) -> dict:
    index = {
        "_class_name": pipeline, "_diffusers_version": "0.38.0",
        "feature_extractor": [None, None], "safety_checker": [None, None], "image_encoder": [None, None],
        "requires_safety_checker": False,
        "scheduler": ["diffusers", scheduler["_class_name"]], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
    }
    return {"model_index.json": index, "unet/config.json": unet, "vae/config.json": vae(vae_size, 0.18215, False),
            "text_encoder/config.json": text_encoder, "tokenizer/tokenizer_config.json": tokenizer(pad_token),
            "scheduler/scheduler_config.json": scheduler}


def xl_folder(pipeline: str, in_channels: int) -> dict:
    index = {
        "_class_name": pipeline, "_diffusers_version": "0.38.0", "force_zeros_for_empty_prompt": True,
        "feature_extractor": [None, None], "image_encoder": [None, None],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
    }
    if in_channels == 9:
        index["requires_aesthetics_score"] = False
    return {"model_index.json": index, "unet/config.json": xl_unet(in_channels), "vae/config.json": vae(1024, 0.13025, True),
            "text_encoder/config.json": CLIP_L, "text_encoder_2/config.json": OPEN_CLIP_BIGG,
            "tokenizer/tokenizer_config.json": tokenizer("<|endoftext|>"), "tokenizer_2/tokenizer_config.json": tokenizer("!"),
            "scheduler/scheduler_config.json": XL_SCHEDULER}


FOLDERS = {
    "v1": sd_folder("StableDiffusionPipeline", sd_unet(4, 64, v2=False), CLIP_L, "<|endoftext|>", SD_SCHEDULER, 512),
    "inpainting": sd_folder("StableDiffusionInpaintPipeline", sd_unet(9, 64, v2=False), CLIP_L, "<|endoftext|>", SD_SCHEDULER, 512),
    "instruct-pix2pix": sd_folder("StableDiffusionInstructPix2PixPipeline", sd_unet(8, 64, v2=False), CLIP_L, "<|endoftext|>",
                                  {**SD_SCHEDULER, "_class_name": "EulerAncestralDiscreteScheduler"}, 512),
    # SD 2.1 768-v: v-prediction at 768 px; its attention is computed in float32 (upcast) to stay finite in float16.
    "v2": sd_folder("StableDiffusionPipeline", sd_unet(4, 96, v2=True, upcast_attention=True), OPEN_CLIP_H, "!",
                    {**SD_SCHEDULER, "_class_name": "DDIMScheduler", "prediction_type": "v_prediction"}, 768),
    "inpainting_v2": sd_folder("StableDiffusionInpaintPipeline", sd_unet(9, 64, v2=True), OPEN_CLIP_H, "!",
                               {**SD_SCHEDULER, "_class_name": "DDIMScheduler"}, 512),
    "xl_base": xl_folder("StableDiffusionXLPipeline", 4),
    "xl_inpaint": xl_folder("StableDiffusionXLInpaintPipeline", 9),
}


def main() -> None:
    for name, files in FOLDERS.items():
        folder = ROOT / name
        shutil.rmtree(folder, ignore_errors=True)
        for relative, content in files.items():
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"{folder}: {len(files)} files")


if __name__ == "__main__":
    main()
