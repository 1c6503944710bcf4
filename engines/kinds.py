"""What kind of diffusion transformer a model is (FLUX.2 [klein], Qwen-Image-Edit, FLUX.1 Fill or
Kontext), the pipeline each purpose runs it with, and what the panel's common controls mean to it.

Torch-free: the editor asks on the GUI thread, when the person picks a model or a task, which
controls to show; engines.models and engines.dit load and run the pipelines named here.
"""

from __future__ import annotations

import json
from pathlib import Path

from engines import catalog, checkpoints, sources
from engines.api import ModelControls, ModelUnavailable

# A folder's kind, from the pipeline its model_index.json names (any class of the family: a folder
# saved from the inpainting variant is the same model), and the pipeline each purpose runs it with:
# "inpaint" (a mask: inpainting and uncropping) or "instruct" (an instruction on the whole picture:
# edits, and colorizing when asked to colour the photo). FLUX.1 Fill only inpaints.
DIT_KINDS = {
    "Flux2KleinPipeline": "flux2-klein", "Flux2KleinInpaintPipeline": "flux2-klein", "Flux2KleinKVPipeline": "flux2-klein",
    "QwenImageEditPlusPipeline": "qwen-edit", "QwenImageEditInpaintPipeline": "qwen-edit",
    "FluxFillPipeline": "flux-fill",
    "FluxKontextPipeline": "flux-kontext", "FluxKontextInpaintPipeline": "flux-kontext",
}
DIT_PIPELINES = {
    "flux2-klein": {"inpaint": "Flux2KleinInpaintPipeline", "instruct": "Flux2KleinPipeline"},
    "qwen-edit": {"inpaint": "QwenImageEditInpaintPipeline", "instruct": "QwenImageEditPlusPipeline"},
    "flux-fill": {"inpaint": "FluxFillPipeline"},
    "flux-kontext": {"inpaint": "FluxKontextInpaintPipeline", "instruct": "FluxKontextPipeline"},
}
DIT_TITLES = {"flux2-klein": "FLUX.2 [klein]", "qwen-edit": "Qwen-Image-Edit", "flux-fill": "FLUX.1 Fill", "flux-kontext": "FLUX.1 Kontext"}
DIT_NATIVE = 1024  # all four were trained at about one megapixel


# The preset whose text encoder, VAE and scheduler run a transformer file of each kind.
BASE_PRESETS = {"flux2-klein": "flux2-klein-4b", "qwen-edit": "qwen-image-edit-2511", "flux-fill": "flux1-fill-dev",
                "flux-kontext": "flux1-kontext-dev"}


def dit_kind(model: str, allow_pickle: tuple[str, ...] = ()) -> str | None:
    """"flux2-klein", "qwen-edit", "flux-fill" or "flux-kontext" when `model` is a diffusers folder (or
    an installed hub model, or a preset) of one of those pipelines, or a transformer file of one; None
    for Stable Diffusion and for what is not on this computer. Reads one small JSON file or a file's
    header (kept while the file is unchanged), no weights."""
    try:
        source = sources.resolve_source(model, allow_pickle)
    except ModelUnavailable:
        return None
    if source.kind == "file":
        if Path(source.location).suffix.lower() not in checkpoints.WEIGHT_FILE_SUFFIXES:
            return None
        try:
            return checkpoints.describe(source.location).transformer or None
        except ModelUnavailable:
            return None
    folder = Path(source.location) if source.kind == "folder" else catalog.installed_path(source.location)
    if folder is None:
        for preset in sources.presets():
            if preset.hub_id == source.location and preset.architecture in DIT_PIPELINES:
                return preset.architecture
        return None
    try:
        index = json.loads((Path(folder) / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return DIT_KINDS.get(index.get("_class_name")) if isinstance(index, dict) else None


# What the request's guidance scale and negative prompt are to each kind. Values are the model cards'
# and diffusers' examples (FLUX.1 Fill: 30, Kontext: 2.5, Qwen-Image-Edit: true CFG 4 with a negative
# prompt, FLUX.2 [klein] 4B: 4 steps, no guidance).
CONTROLS = {
    "flux-fill": ModelControls(
        guidance=("Guidance", "FLUX.1 Fill's built-in (distilled) guidance: how strongly the fill follows the prompt. "
                  "Black Forest Labs use 30.", 1.0, 30.0),
        negative=False, scheduler=False, steps_help="FLUX.1 Fill: Black Forest Labs use 50 steps."),
    "flux-kontext": ModelControls(
        guidance=("Guidance", "FLUX.1 Kontext's built-in (distilled) guidance: how strongly the edit follows the instruction. "
                  "Black Forest Labs use 2.5.", 1.0, 10.0),
        negative=False, scheduler=False, steps_help="FLUX.1 Kontext: 28 steps is its default."),
    "flux2-klein": ModelControls(guidance=None, negative=False, scheduler=False,
                                 steps_help="FLUX.2 [klein] is step-distilled: 4 steps are what it was made for."),
    "qwen-edit": ModelControls(
        guidance=("True CFG", "Qwen-Image-Edit's classifier-free guidance: each step runs twice, with the prompt and with the "
                  "negative prompt, and pushes away from the second. Qwen use 4.", 1.0, 10.0),
        negative=True, scheduler=False, steps_help="Qwen-Image-Edit: Qwen use 40 steps."),
}


def base_preset(kind: str) -> sources.Preset:
    """The preset whose text encoder, VAE and scheduler run a `kind` transformer file."""
    return sources.preset(BASE_PRESETS[kind])


def transformer_base(kind: str, file_name: str) -> Path:
    """The installed preset folder whose other components run a `kind` transformer file (the preset
    downloaded whole, or without its transformer); ModelUnavailable saying how to get it otherwise."""
    preset = base_preset(kind)
    folder = catalog.installed_without(preset.hub_id, "transformer")
    if folder is not None:
        return folder
    access = f" ({preset.access_steps()})" if preset.gated else ""
    raise ModelUnavailable(
        f"{file_name} is a {DIT_TITLES[kind]} transformer; its text encoder and VAE come from {preset.title} ({preset.hub_id}), "
        f"which are not on this computer: Sandcastle downloads them when online (not the preset's own transformer), or run "
        f"`{base_download_command(kind)}`{access}.")


def base_download_command(kind: str) -> str:
    """The `hf download` command that fetches what a `kind` transformer file runs with and nothing more:
    listing the components, because Black Forest Labs' repositories also hold the transformer as one
    file at the top (flux1-fill-dev.safetensors, 23.8 GB), which excluding transformer/ would still fetch."""
    preset = base_preset(kind)
    folders = " ".join(f'"{name}/*"' for name in preset.components if name != "transformer")
    return f"hf download {preset.hub_id} --include model_index.json {folders}"


def controls_for(model: str, allow_pickle: tuple[str, ...] = ()) -> ModelControls:
    """The controls `model` uses; Stable Diffusion's (all of them) for anything not a transformer kind."""
    kind = dit_kind(model, allow_pickle)
    return CONTROLS[kind] if kind else ModelControls()
