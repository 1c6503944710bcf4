"""What a single checkpoint file is, read from its safetensors header alone (no torch, no weights).

People own Stable Diffusion checkpoints as one `.safetensors` file in the original (CompVis /
Stability) layout, the format model sites ship. Such a file carries weights but no configuration,
so Sandcastle pairs it with a configuration-only diffusers folder it ships for each model type
(resources/checkpoints/<type>/, written by tools/make_checkpoint_configs.py): nothing is fetched
from the hub, online or off.

The model type is the name diffusers' `infer_diffusers_model_type` gives; the loader (engines.models)
asks diffusers itself. `model_type` here answers the same question from the header, without torch,
for the Models dialog and for refusing a file before anything loads; a test holds the two together
on every real layout in tests/data/single_file.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from engines.api import ModelUnavailable

MAX_HEADER_BYTES = 100 * 1024 * 1024  # real headers are a few hundred KB; anything larger is damaged or hostile


def read_header(path: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Every tensor of a .safetensors file: name → (dtype, shape). Raises ModelUnavailable with one
    sentence when the file is not a whole safetensors file."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError("it is shorter than a safetensors header")
            (length,) = struct.unpack("<Q", raw)
            if length > MAX_HEADER_BYTES:
                raise ValueError(f"its header claims {length:,} bytes")
            header = json.loads(f.read(length))
        size = path.stat().st_size
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"{path.name} is not a readable .safetensors file ({exc}).") from None
    if not isinstance(header, dict):
        raise ModelUnavailable(f"{path.name} has a damaged safetensors header (not a table of tensors).")
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = entry["data_offsets"]
            shape = entry["shape"]
            if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end and isinstance(shape, list)
                    and all(isinstance(n, int) and n >= 0 for n in shape)):
                raise ValueError
            tensors[name] = (str(entry["dtype"]), tuple(shape))
        except (KeyError, TypeError, ValueError):
            raise ModelUnavailable(f"{path.name} has a damaged safetensors header (entry {name!r}).") from None
        if 8 + length + end > size:
            raise ModelUnavailable(f"{path.name} is incomplete: it is {size:,} bytes, its header needs {8 + length + end:,} "
                                   "(was the download cut short?).")
    return tensors


# ---- model types ------------------------------------------------------------------------------

# The keys diffusers tells model types apart by (diffusers.loaders.single_file_utils.CHECKPOINT_KEY_NAMES).
CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
SD2_CROSS_ATTENTION = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
XL_BASE = "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"
XL_REFINER = "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias"
UPSCALE = "model.diffusion_model.input_blocks.10.0.skip_connection.bias"


def model_type(shapes: dict[str, tuple[int, ...]]) -> str:
    """diffusers' model type for a checkpoint, from tensor shapes alone: the same decisions, in the
    same order, as `infer_diffusers_model_type` for every type of the Stable Diffusion family; files
    of other families are named by what they are (flux, sd3, lora, vae, …) or "unknown"."""
    def has(key: str, rank: int = 1) -> bool:
        return key in shapes and len(shapes[key]) >= rank

    if has(CONV_IN, 2) and shapes[CONV_IN][1] == 9:
        if has(SD2_CROSS_ATTENTION) and shapes[SD2_CROSS_ATTENTION][-1] == 1024:
            return "inpainting_v2"
        return "xl_inpaint" if has(XL_BASE) else "inpainting"
    if has(SD2_CROSS_ATTENTION) and shapes[SD2_CROSS_ATTENTION][-1] == 1024:
        return "v2"
    if has("edm_mean"):
        return "playground-v2-5"
    if has(XL_BASE):
        return "xl_base"
    if has(XL_REFINER):
        return "xl_refiner"
    if has(UPSCALE):
        return "upscale"
    if has("control_model.time_embed.0.weight") or has("controlnet_cond_embedding.conv_in.weight"):
        return "controlnet"
    if any(k.endswith("double_blocks.0.img_attn.norm.key_norm.scale") for k in shapes):
        return "flux"
    if any(k.endswith("joint_blocks.0.context_block.adaLN_modulation.1.bias") for k in shapes):
        return "sd3"
    if has(CONV_IN, 2) and shapes[CONV_IN][1] == 8:
        return "instruct-pix2pix"
    if any(k.startswith("model.diffusion_model.") for k in shapes):
        return "v1" if has(CONV_IN, 2) and shapes[CONV_IN][1] == 4 else "unknown"
    # Not a whole model: diffusers would call these "v1" and fail later; say what they are instead.
    if any("lora" in k.lower() for k in shapes):
        return "lora"
    if any(k.startswith(("encoder.conv_in", "decoder.conv_out", "first_stage_model.")) for k in shapes):
        return "vae"
    return "unknown"


@dataclass(frozen=True)
class CheckpointKind:
    """A model type, and what Sandcastle does with it: the pipeline purposes it serves (see
    engines.models.PURPOSES) and the editor tasks those are, or why it cannot be used."""

    model_type: str
    title: str
    purposes: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    instead: str = ""  # for a file that cannot be used: what the person can do instead

    @property
    def usable(self) -> bool:
        return bool(self.purposes)


ORDINARY = (("inpaint", "img2img"), ("inpaint", "uncrop", "edit (img2img)", "colorize"))
INPAINTING = (("inpaint",), ("inpaint", "uncrop"))
KINDS = {
    kind.model_type: kind
    for kind in (
        CheckpointKind("v1", "Stable Diffusion 1.x", *ORDINARY),
        CheckpointKind("inpainting", "Stable Diffusion 1.x inpainting", *INPAINTING),
        CheckpointKind("instruct-pix2pix", "InstructPix2Pix (SD 1.x)", ("instruct",), ("edit (instruct)",)),
        CheckpointKind("v2", "Stable Diffusion 2.x (768 px, v-prediction)", *ORDINARY),
        CheckpointKind("inpainting_v2", "Stable Diffusion 2.x inpainting", *INPAINTING),
        CheckpointKind("xl_base", "Stable Diffusion XL", *ORDINARY),
        CheckpointKind("xl_inpaint", "Stable Diffusion XL inpainting", *INPAINTING),
        CheckpointKind("xl_refiner", "an SDXL refiner", instead="a refiner only finishes SDXL pictures; choose an SDXL base or inpainting checkpoint"),
        CheckpointKind("playground-v2-5", "Playground v2.5", instead="use an SDXL checkpoint, or a diffusers folder of it"),
        CheckpointKind("upscale", "the SD x4 upscaler", instead="it only enlarges pictures; choose an SD 1.x, 2.x or SDXL checkpoint"),
        CheckpointKind("controlnet", "a ControlNet", instead="a ControlNet steers another model and cannot paint alone; choose an SD checkpoint"),
        CheckpointKind("flux", "a FLUX.1 checkpoint", instead="FLUX single files are not supported; use a diffusers folder of the model"),
        CheckpointKind("sd3", "a Stable Diffusion 3 checkpoint", instead="SD 3 is not supported; choose an SD 1.x, 2.x or SDXL checkpoint"),
        CheckpointKind("lora", "a LoRA", instead="a LoRA adds to a model and cannot paint alone; choose a whole SD checkpoint"),
        CheckpointKind("vae", "a VAE only", instead="it holds no diffusion model; choose a whole SD checkpoint"),
        CheckpointKind("unknown", "not a checkpoint Sandcastle knows", instead="choose an SD 1.x, 2.x or SDXL .safetensors checkpoint"),
    )
}


def describe(path: str | Path) -> CheckpointKind:
    """The kind of a single .safetensors checkpoint, from its header."""
    shapes = {name: shape for name, (_, shape) in read_header(path).items()}
    return KINDS.get(model_type(shapes), KINDS["unknown"])


PURPOSE_WORDS = {"inpaint": "inpainting and uncropping", "img2img": "img2img edits and colorizing", "instruct": "instruction edits"}


def refusal(path: str | Path, purpose: str, kind: CheckpointKind | None = None) -> str | None:
    """One sentence saying why a single file (of `kind`, read from its header when not given) cannot
    serve `purpose`, or None when it can."""
    name = Path(path).name
    kind = kind or describe(path)
    if not kind.usable:
        return f"{name} is {kind.title}, which Sandcastle cannot use: {kind.instead}."
    if purpose not in kind.purposes:
        can = " and ".join(PURPOSE_WORDS[p] for p in kind.purposes)
        return f"{name} is a {kind.title} model: it serves {can}, not {PURPOSE_WORDS[purpose]}."
    return None


def config_folder(model_type: str) -> Path:
    """The shipped configuration-only diffusers folder for a model type."""
    folder = Path(str(resources.files("resources").joinpath("checkpoints", model_type)))
    if not (folder / "model_index.json").is_file():
        raise ModelUnavailable(f"Sandcastle has no configuration for {model_type} checkpoints.")
    return folder


def tokenizer_files() -> tuple[Path, Path]:
    """CLIP's vocabulary and merges, shared by every SD text encoder (resources/checkpoints/clip_tokenizer)."""
    folder = Path(str(resources.files("resources").joinpath("checkpoints", "clip_tokenizer")))
    return folder / "vocab.json", folder / "merges.txt"


# ---- pickle-based checkpoints ----------------------------------------------------------------

MAX_ARCHIVE_ENTRIES = 100_000  # the official DiffAE FFHQ-256 checkpoint has about 1,000; SDXL about 2,500 tensors
INFLATION_LIMIT = 4  # a PyTorch zip checkpoint stores its tensors uncompressed: its contents are about its own size


def check_archive_size(path: str | Path) -> None:
    """Refuse a PyTorch checkpoint (a zip archive) whose contents are out of proportion to the file,
    before any of it is read: a small file that inflates to gigabytes would exhaust memory."""
    import zipfile

    path = Path(path)
    try:
        if not zipfile.is_zipfile(path):
            return  # the legacy format is not compressed
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            inflated = sum(member.file_size for member in members)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModelUnavailable(f"{path.name} is not a readable checkpoint ({exc}).") from None
    size = path.stat().st_size
    if len(members) > MAX_ARCHIVE_ENTRIES:  # each tensor's storage is one entry: millions of tiny ones cost memory per tensor
        raise ModelUnavailable(f"{path.name} holds {len(members):,} entries; a checkpoint has at most a few thousand tensors, so it was refused.")
    if inflated > INFLATION_LIMIT * size + 64 * 1024 * 1024:
        raise ModelUnavailable(f"{path.name} is {size:,} bytes but would unpack to {inflated:,}; a real checkpoint stores its "
                               "weights uncompressed, so it was refused.")
