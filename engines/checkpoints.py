"""What a single checkpoint file is, read from its safetensors header alone (no torch, no weights).

People own Stable Diffusion checkpoints as one `.safetensors` file in the original (CompVis /
Stability) layout, the format model sites ship. Such a file carries weights but no configuration,
so Sandcastle pairs it with a configuration-only diffusers folder it ships for each model type
(resources/checkpoints/<type>/, written by tools/make_checkpoint_configs.py): nothing is fetched
from the hub, online or off.

They own diffusion transformers the same way: the transformer alone, as Black Forest Labs publish
FLUX (`flux-2-klein-4b.safetensors`, `flux1-fill-dev.safetensors`), as ComfyUI splits Qwen-Image-Edit,
or quantized as a `.gguf` file (Q8_0, Q4_K…, the llama.cpp formats city96 and others publish). The
transformer's configuration is shipped (resources/transformers/<kind>/, tools/make_transformer_configs.py)
with its size read from the file's shapes; the text encoder and VAE come from the kind's preset.

The model type is the name diffusers' `infer_diffusers_model_type` gives; the loader (engines.models)
asks diffusers itself. `model_type` here answers the same question from the header, without torch,
for the Models dialog and for refusing a file before anything loads; a test holds the two together
on every real layout in tests/data/single_file.
"""

from __future__ import annotations

import functools
import json
import struct
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from engines.api import ModelUnavailable

MAX_HEADER_BYTES = 100 * 1024 * 1024  # real headers are a few hundred KB; anything larger is damaged or hostile
WEIGHT_FILE_SUFFIXES = (".safetensors", ".gguf")


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


def read_gguf_header(path: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Every tensor of a .gguf file: name → (storage type, e.g. "Q8_0" or "F32", logical shape in
    PyTorch's order). gguf-py maps the file and reads its tables only. Raises ModelUnavailable with one
    sentence when the file is not a whole GGUF file."""
    path = Path(path)
    try:
        from gguf import GGUFReader
    except ImportError:
        raise ModelUnavailable(f"{path.name} is a GGUF file; reading it needs the gguf package (pip install gguf).") from None
    try:
        reader = GGUFReader(str(path))
        # GGUF lists dimensions fastest-varying first (ggml's order); PyTorch's is the reverse.
        return {t.name: (t.tensor_type.name, tuple(int(n) for n in reversed(t.shape.tolist()))) for t in reader.tensors}
    except Exception as exc:  # gguf-py raises ValueError, KeyError, struct and numpy errors on damaged or cut files
        raise ModelUnavailable(f"{path.name} is not a readable GGUF file ({type(exc).__name__}: {str(exc)[:200]}).") from None


@functools.lru_cache(maxsize=16)
def _shapes(path: str, size: int, modified_ns: int) -> dict[str, tuple[int, ...]]:
    read = read_gguf_header if path.lower().endswith(".gguf") else read_header
    return {name: shape for name, (_, shape) in read(path).items()}


def tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in a .safetensors or .gguf file, from its header. Kept while the file is
    unchanged: choosing a model, listing its controls and loading it each ask, and a 20 GB GGUF
    file's tables take a moment to walk."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise ModelUnavailable(f"{path.name} cannot be read ({exc.strerror or exc}).") from None
    return _shapes(str(path), stat.st_size, stat.st_mtime_ns)


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
    transformer = transformer_type(shapes)
    if transformer:
        return transformer
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


# ---- diffusion transformers -------------------------------------------------------------------

COMFY_PREFIX = "model.diffusion_model."  # ComfyUI's whole-model files keep the transformer under this prefix
# FLUX.2 transformers by the width of the text features they read (txt_in): Qwen3-4B's, Qwen3-8B's and
# Mistral Small 3.1's three stacked hidden layers. Only [klein] 4B has a preset (its text encoder).
FLUX2_TEXT_WIDTHS = {7680: "FLUX.2 [klein] 4B", 12288: "FLUX.2 [klein] 9B", 15360: "FLUX.2 [dev]"}
FLUX1_FILL_CHANNELS, FLUX1_CHANNELS = 384, 64  # img_in: Fill adds the masked picture and the mask to the 64 latent channels
# ComfyUI's "fp8 scaled" and "mixed" files keep a scale beside each 8-bit weight, which diffusers does not
# apply: loaded, the weights would be wrong by that factor, so such files are refused.
SCALED_FP8_SUFFIXES = (".weight_scale", ".scale_weight", ".input_scale", ".scale_input", ".comfy_quant")
# ComfyUI marks Qwen-Image-Edit-2511 transformers with this empty tensor (2511 treats the reference
# pictures' timestep as zero, diffusers' zero_cond_t); earlier Edit releases do not have it.
QWEN_2511_MARKER = "__index_timestep_zero__"


def transformer_tensors(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The transformer's own tensors, without ComfyUI's prefix (a whole-model file keeps its text
    encoders and VAE beside them, which are dropped)."""
    if any(k.startswith(COMFY_PREFIX) for k in shapes):
        return {k[len(COMFY_PREFIX):]: v for k, v in shapes.items() if k.startswith(COMFY_PREFIX)}
    return shapes


def transformer_type(shapes: dict[str, tuple[int, ...]]) -> str | None:
    """"flux2" (FLUX.2 [klein] 4B), "flux2-other", "flux-fill", "flux-kontext", "flux" (another FLUX.1
    variant) or "qwen-image" for a diffusion transformer, by the keys diffusers tells them apart by
    (CHECKPOINT_KEY_NAMES) and the input widths; None for anything else.

    A FLUX.1 Kontext [dev] transformer has exactly the shapes of FLUX.1 [dev]'s, and Qwen-Image-Edit's
    those of Qwen-Image: the files do not say which they are, so 64 input channels are taken as
    Kontext and a Qwen-Image transformer as the Edit model, the only ones Sandcastle runs."""
    plain = transformer_tensors(shapes)
    family = _transformer_family(plain)
    if family is not None and any(k.endswith(SCALED_FP8_SUFFIXES) for k in plain):
        return "scaled-fp8"
    return family


def _transformer_family(plain: dict[str, tuple[int, ...]]) -> str | None:
    if "single_stream_modulation.lin.weight" in plain:
        width = plain.get("txt_in.weight", (0, 0))[-1]
        return "flux2-other" if width in FLUX2_TEXT_WIDTHS and FLUX2_TEXT_WIDTHS[width] != "FLUX.2 [klein] 4B" else "flux2"
    if "double_blocks.0.img_attn.norm.key_norm.scale" in plain:
        channels = plain.get("img_in.weight", (0, 0))[-1]
        if channels == FLUX1_CHANNELS and "guidance_in.in_layer.weight" not in plain:
            return "flux"  # FLUX.1 [schnell]: no guidance embedding, so not Kontext
        return {FLUX1_FILL_CHANNELS: "flux-fill", FLUX1_CHANNELS: "flux-kontext"}.get(channels, "flux")
    if "txt_norm.weight" in plain and "transformer_blocks.0.img_mod.1.weight" in plain:
        return "qwen-image"
    return None


def qwen_edit_2511(file_name: str, shapes: dict[str, tuple[int, ...]]) -> bool:
    """Whether a Qwen-Image transformer file is Qwen-Image-Edit-2511 (run with zero_cond_t) rather than
    an earlier Edit release: ComfyUI's marker says so; without it (GGUF conversions may drop it) the file
    name is all there is, and "2511" in it is taken at its word."""
    return QWEN_2511_MARKER in transformer_tensors(shapes) or "2511" in file_name


def _blocks(plain: dict[str, tuple[int, ...]], prefix: str) -> int:
    return len({k.split(".")[1] for k in plain if k.startswith(prefix + ".")})


def transformer_structure(model_type: str, shapes: dict[str, tuple[int, ...]], head_dim: int, patch_size: int = 1) -> dict:
    """The size of a transformer file's model, read from its shapes: the configuration entries that
    differ between sizes of one architecture (depth, width, input widths). The shipped configuration
    gives the rest (position encoding, head width, patch size)."""
    plain = transformer_tensors(shapes)
    width, channels = plain["img_in.weight"]
    structure = dict(num_attention_heads=width // head_dim, in_channels=channels, joint_attention_dim=plain["txt_in.weight"][-1])
    if model_type == "qwen-image":
        return dict(structure, num_layers=_blocks(plain, "transformer_blocks"),
                    out_channels=plain["proj_out.weight"][0] // (patch_size * patch_size))
    structure.update(num_layers=_blocks(plain, "double_blocks"), num_single_layers=_blocks(plain, "single_blocks"),
                     guidance_embeds="guidance_in.in_layer.weight" in plain)
    if model_type == "flux2":
        # FLUX.2's feed-forward is a SwiGLU: its first layer gives twice the hidden width.
        return dict(structure, mlp_ratio=plain["double_blocks.0.img_mlp.0.weight"][0] / 2 / width,
                    timestep_guidance_channels=plain["time_in.in_layer.weight"][-1])
    out_channels = plain["final_layer.linear.weight"][0] // (patch_size * patch_size)
    return dict(structure, out_channels=None if out_channels == channels else out_channels,  # as the released configs say it
                pooled_projection_dim=plain["vector_in.in_layer.weight"][-1])


@dataclass(frozen=True)
class CheckpointKind:
    """A model type, and what Sandcastle does with it: the pipeline purposes it serves (see
    engines.models.PURPOSES) and the editor tasks those are, or why it cannot be used."""

    model_type: str
    title: str
    purposes: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    instead: str = ""  # for a file that cannot be used: what the person can do instead
    transformer: str = ""  # for a diffusion transformer file: its kind (engines.kinds.DIT_KINDS' values)

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
        CheckpointKind("flux2", "FLUX.2 [klein] transformer", ("inpaint", "instruct"), ("inpaint", "uncrop", "edit", "colorize"),
                       transformer="flux2-klein"),
        CheckpointKind("qwen-image", "Qwen-Image-Edit transformer", ("inpaint", "instruct"), ("inpaint", "uncrop", "edit", "colorize"),
                       transformer="qwen-edit"),
        CheckpointKind("flux-fill", "FLUX.1 Fill [dev] transformer", ("inpaint",), ("inpaint", "uncrop"), transformer="flux-fill"),
        CheckpointKind("flux-kontext", "FLUX.1 Kontext [dev] transformer", ("inpaint", "instruct"), ("inpaint", "uncrop", "edit", "colorize"),
                       transformer="flux-kontext"),
        CheckpointKind("flux2-other", "a FLUX.2 [klein] 9B or [dev] transformer",
                       instead="Sandcastle runs FLUX.2 [klein] 4B, whose text encoder does not fit this one; choose a [klein] 4B file"),
        CheckpointKind("flux", "a FLUX.1 [schnell], Depth, Canny or other variant",
                       instead="Sandcastle runs FLUX.1 Fill and Kontext; choose one of those (or FLUX.2 [klein])"),
        CheckpointKind("scaled-fp8", "a transformer in ComfyUI's scaled 8-bit format",
                       instead="diffusers cannot apply its weight scales; choose the bf16 file of the model or a GGUF file"),
        CheckpointKind("sd3", "a Stable Diffusion 3 checkpoint", instead="SD 3 is not supported; choose an SD 1.x, 2.x or SDXL checkpoint"),
        CheckpointKind("lora", "a LoRA", instead="a LoRA adds to a model and cannot paint alone; choose a whole SD checkpoint"),
        CheckpointKind("vae", "a VAE only", instead="it holds no diffusion model; choose a whole SD checkpoint"),
        CheckpointKind("unknown", "not a checkpoint Sandcastle knows", instead="choose an SD 1.x, 2.x or SDXL .safetensors checkpoint, or a FLUX.2 [klein] 4B, "
                       "FLUX.1 Fill or Kontext, or Qwen-Image-Edit transformer (.safetensors or .gguf)"),
    )
}


def describe(path: str | Path) -> CheckpointKind:
    """The kind of a single .safetensors or .gguf file, from its header. A GGUF file is only ever a
    diffusion transformer here (Stable Diffusion has no GGUF loader in diffusers)."""
    shapes = tensor_shapes(path)
    kind = KINDS.get(model_type(shapes), KINDS["unknown"])
    if Path(path).suffix.lower() == ".gguf" and not kind.transformer and kind.usable:
        return KINDS["unknown"]
    return kind


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
