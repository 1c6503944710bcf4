"""The diffusion-transformer presets (issue 23): FLUX.2 [klein] 4B, Qwen-Image-Edit-2511, FLUX.1 Fill [dev] and
FLUX.1 Kontext [dev]. What each preset says, exactly which files of each repository a download fetches (from
listings laid out as those repositories are, /work/notes/models_research.md §1b), and what a gated one says when
the hub refuses it (tests/hubserver.py answers 401 or 403)."""

import pytest

from engines import catalog, sources
from engines.api import ModelUnavailable

FLUX1 = ("scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "transformer", "vae")
FLUX1_LICENCE = "FLUX.1 [dev] Non-Commercial License"


def shards(stem: str, count: int) -> list[str]:
    return [f"{stem}-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


QWEN_TOKENIZER = ["added_tokens.json", "chat_template.jinja", "merges.txt", "special_tokens_map.json", "tokenizer.json",
                  "tokenizer_config.json", "vocab.json"]
CLIP_TOKENIZER = ["merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]
T5_TOKENIZER = ["special_tokens_map.json", "spiece.model", "tokenizer.json", "tokenizer_config.json"]

# What a download fetches: the component folders' configs, tokenizers and one set of weights, and model_index.json.
KLEIN_WANTED = sorted(
    ["model_index.json", "scheduler/scheduler_config.json",
     "text_encoder/config.json", "text_encoder/generation_config.json", "text_encoder/model.safetensors.index.json",
     *(f"text_encoder/{f}" for f in shards("model", 2)),
     *(f"tokenizer/{f}" for f in QWEN_TOKENIZER),
     "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors",
     "vae/config.json", "vae/diffusion_pytorch_model.safetensors"]
)
QWEN_WANTED = sorted(
    ["model_index.json",
     *(f"processor/{f}" for f in QWEN_TOKENIZER + ["chat_template.json", "preprocessor_config.json", "video_preprocessor_config.json"]),
     "scheduler/scheduler_config.json",
     "text_encoder/config.json", "text_encoder/generation_config.json", "text_encoder/model.safetensors.index.json",
     *(f"text_encoder/{f}" for f in shards("model", 4)),
     *(f"tokenizer/{f}" for f in QWEN_TOKENIZER),
     "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors.index.json",
     *(f"transformer/{f}" for f in shards("diffusion_pytorch_model", 9)),
     "vae/config.json", "vae/diffusion_pytorch_model.safetensors"]
)
FLUX1_WANTED = sorted(
    ["model_index.json", "scheduler/scheduler_config.json",
     "text_encoder/config.json", "text_encoder/model.safetensors",
     "text_encoder_2/config.json", "text_encoder_2/model.safetensors.index.json", *(f"text_encoder_2/{f}" for f in shards("model", 2)),
     *(f"tokenizer/{f}" for f in CLIP_TOKENIZER), *(f"tokenizer_2/{f}" for f in T5_TOKENIZER),
     "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors.index.json",
     *(f"transformer/{f}" for f in shards("diffusion_pytorch_model", 3)),
     "vae/config.json", "vae/diffusion_pytorch_model.safetensors"]
)

# The repositories as listed on the hub: the same, plus what must stay there.
REPOS = {
    "black-forest-labs/FLUX.2-klein-4B": KLEIN_WANTED + [
        ".gitattributes", "LICENSE.md", "README.md", "flux-2-klein-4b.safetensors", "teaser_editing.png", "teaser_generation.png"],
    "Qwen/Qwen-Image-Edit-2511": QWEN_WANTED + [".gitattributes", "README.md"],
    "black-forest-labs/FLUX.1-Fill-dev": FLUX1_WANTED + [
        ".gitattributes", "LICENSE.md", "README.md", "ae.safetensors", "flux1-fill-dev.safetensors", "flux_fill_example.png"],
    "black-forest-labs/FLUX.1-Kontext-dev": FLUX1_WANTED + [
        ".gitattributes", "LICENSE.md", "README.md", "ae.safetensors", "flux1-kontext-dev.safetensors", "teaser.png"],
}
WANTED = {"black-forest-labs/FLUX.2-klein-4B": KLEIN_WANTED, "Qwen/Qwen-Image-Edit-2511": QWEN_WANTED,
          "black-forest-labs/FLUX.1-Fill-dev": FLUX1_WANTED, "black-forest-labs/FLUX.1-Kontext-dev": FLUX1_WANTED}


def test_the_four_presets_say_what_the_research_notes_say():
    by_id = {p.id: p for p in sources.presets()}
    klein, qwen, fill, kontext = (by_id[i] for i in ("flux2-klein-4b", "qwen-image-edit-2511", "flux1-fill-dev", "flux1-kontext-dev"))
    assert (klein.hub_id, klein.architecture, klein.licence, klein.tasks, klein.components, klein.gated) == (
        "black-forest-labs/FLUX.2-klein-4B", "flux2-klein", "Apache-2.0", ("edit", "inpaint", "uncrop", "colorize"),
        ("scheduler", "text_encoder", "tokenizer", "transformer", "vae"), False)
    assert (qwen.hub_id, qwen.architecture, qwen.licence, qwen.tasks, qwen.components, qwen.gated) == (
        "Qwen/Qwen-Image-Edit-2511", "qwen-edit", "Apache-2.0", ("edit", "inpaint", "colorize"),
        ("processor", "scheduler", "text_encoder", "tokenizer", "transformer", "vae"), False)
    assert (fill.hub_id, fill.architecture, fill.licence, fill.tasks, fill.components, fill.gated) == (
        "black-forest-labs/FLUX.1-Fill-dev", "flux-fill", FLUX1_LICENCE, ("inpaint", "uncrop"), FLUX1, True)
    assert (kontext.hub_id, kontext.architecture, kontext.licence, kontext.tasks, kontext.components, kontext.gated) == (
        "black-forest-labs/FLUX.1-Kontext-dev", "flux-kontext", FLUX1_LICENCE, ("edit", "inpaint"), FLUX1, True)
    # Sizes: klein ≈ 7.75 + 8.05 + 0.17 GB; Qwen ≈ 57.7 GB; FLUX.1 ≈ 23.8 + 9.52 + CLIP-L and VAE, without the 23.8 GB single file.
    assert klein.download_bytes == 15_970_000_000 and qwen.download_bytes == 57_700_000_000
    assert 33e9 < fill.download_bytes == kontext.download_bytes < 34e9
    assert "13 GB" in klein.description  # its model card; the others say what the notes support, without a made-up figure
    for p in (klein, qwen, fill, kontext):
        assert not p.default_for and p.description.count(".") <= 3 and "\n" not in p.description
    assert {t: sources.default_preset(t).id for t in ("inpaint", "uncrop", "edit", "colorize")} == {
        "inpaint": "sd15-inpaint", "uncrop": "sd15-inpaint", "edit": "instruct-pix2pix", "colorize": "sd15"}
    assert "small choice" in by_id["instruct-pix2pix"].description
    assert [p.id for p in sources.presets() if p.gated] == ["flux1-fill-dev", "flux1-kontext-dev"]
    assert sources.preset("black-forest-labs/FLUX.1-Fill-dev") is not None and sources.preset_for_hub("Qwen/Qwen-Image-Edit-2511") == qwen


def test_a_gated_preset_says_which_licence_to_accept_where_and_how_to_log_in():
    fill = sources.preset("flux1-fill-dev")
    steps = fill.access_steps()
    assert "FLUX.1 [dev] Non-Commercial License" in steps and "https://huggingface.co/black-forest-labs/FLUX.1-Fill-dev" in steps
    assert "hf auth login" in steps and "HF_TOKEN" in steps
    assert sources.preset("flux2-klein-4b").access_steps() == ""  # not gated: nothing to do first


@pytest.mark.parametrize("hub_id", sorted(REPOS))
def test_each_repository_gives_exactly_its_components_files(hub_id):
    preset = sources.preset(hub_id)
    assert catalog.wanted(sorted(REPOS[hub_id]), preset.components) == WANTED[hub_id]


def test_duplicates_in_other_formats_are_never_fetched():
    decoys = [
        "flux1-fill-dev.safetensors", "ae.safetensors", "flux1-fill-dev-Q8_0.gguf",  # single files at the top
        "transformer/diffusion_pytorch_model.fp8.safetensors", "transformer/flux1-fill-dev-fp8.safetensors",  # fp8 copies
        "transformer/fp8/diffusion_pytorch_model.safetensors", "transformer/fp8/config.json",  # a component's subfolder
        "transformer/diffusion_pytorch_model.bin", "transformer/diffusion_pytorch_model.bin.index.json",  # pickle and its index
        "text_encoder_2/pytorch_model-00001-of-00002.bin", "text_encoder_2/pytorch_model.bin.index.json",
        "text_encoder_2/model.gguf", "text_encoder/model.onnx", "text_encoder/flax_model.msgpack", "vae/diffusion_flax_model.msgpack",
        "onnx/transformer.onnx", "onnx/config.json", "vae/.DS_Store", "transformer/README.md", "vae/preview.png",
    ]
    assert catalog.wanted(sorted(FLUX1_WANTED + decoys), FLUX1) == FLUX1_WANTED


def test_weights_sets_half_precision_shards_and_a_single_file_beside_its_shards():
    fp16 = ["unet/config.json", "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
            "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors", "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors"]
    assert catalog.wanted(fp16, ("unet",)) == [
        "unet/config.json", "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
        "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors", "unet/diffusion_pytorch_model.safetensors.index.fp16.json"]
    # A single file and shards of the same weights: the single file alone (without the index, diffusers reads it).
    both = ["transformer/config.json", "transformer/diffusion_pytorch_model.safetensors",
            "transformer/diffusion_pytorch_model.safetensors.index.json", *(f"transformer/{f}" for f in shards("diffusion_pytorch_model", 2))]
    assert catalog.wanted(both, ("transformer",)) == ["transformer/config.json", "transformer/diffusion_pytorch_model.safetensors"]
    # One shard counts as sharded: transformers needs the index to find it.
    one = ["text_encoder/config.json", "text_encoder/model-00001-of-00001.safetensors", "text_encoder/model.safetensors.index.json"]
    assert catalog.wanted(one, ("text_encoder",)) == sorted(one)
    # Only an fp8 copy: no weights, so plan() refuses the repository rather than fetching the wrong ones.
    assert catalog.wanted(["vae/config.json", "vae/diffusion_pytorch_model.fp8.safetensors"], ("vae",)) == ["vae/config.json"]


def serve(hub, hub_id: str) -> dict[str, bytes]:
    """The repository on the fake hub, with small stand-ins for its files (each file's own bytes)."""
    files = {name: (f'{{"file": "{name}"}}'.encode() if name.endswith(".json") else name.encode() * 50) for name in REPOS[hub_id]}
    hub.repos[hub_id] = files
    return files


@pytest.mark.parametrize("hub_id", ["black-forest-labs/FLUX.1-Fill-dev", "black-forest-labs/FLUX.2-klein-4B"])
def test_a_download_fetches_the_components_and_leaves_the_single_file_on_the_hub(hub, hub_id):
    files = serve(hub, hub_id)
    preset = sources.preset(hub_id)
    path = catalog.download(hub_id, preset.components, endpoint=hub.url)
    got = sorted(str(f.relative_to(path)) for f in path.rglob("*") if f.is_file() and f.name != ".sandcastle-complete.json")
    assert got == WANTED[hub_id]
    fetched = {p.split("/resolve/")[1].split("/", 1)[1] for m, p, r in hub.requests if m == "GET" and "/resolve/" in p}
    assert fetched == set(WANTED[hub_id])  # flux1-fill-dev.safetensors (23.8 GB on the hub) was never asked for
    assert all((path / f).read_bytes() == files[f] for f in WANTED[hub_id])
    assert catalog.installed_path(hub_id) == path


@pytest.mark.parametrize("status, why", [(401, "not logged in"), (403, "no access to it yet")])
def test_a_gated_flux_repository_names_its_licence_page_and_login_when_a_file_is_refused(hub, status, why):
    """The hub lists a gated repository's files to anyone and refuses the files themselves (401 without a login,
    403 for an account that has not accepted the licence): the refusal comes on the first file."""
    hub_id = "black-forest-labs/FLUX.1-Fill-dev"
    serve(hub, hub_id)

    def gate_the_files(event):
        hub.gated[hub_id] = status

    with pytest.raises(ModelUnavailable) as caught:
        catalog.download(hub_id, FLUX1, gate_the_files, endpoint=hub.url)
    message = str(caught.value)
    assert message.startswith(f"{hub_id} is gated") and why in message
    assert FLUX1_LICENCE in message and "https://huggingface.co/black-forest-labs/FLUX.1-Fill-dev" in message
    assert "hf auth login" in message and "HF_TOKEN" in message and "\n" not in message
    assert any(m == "GET" and "/resolve/" in p for m, p, r in hub.requests)  # it got as far as the files
    assert catalog.installed_path(hub_id) is None


@pytest.mark.parametrize("status", [401, 403])
def test_a_refusal_without_the_hubs_gated_code_still_guides_for_a_gated_preset(hub, monkeypatch, status):
    """A proxy or an older hub may answer 401/403 without X-Error-Code: GatedRepo. For a preset known to be gated
    the message is the same guidance; for another repository it stays general but still says how to log in."""
    from tests.hubserver import Hub

    monkeypatch.setattr(hub, "_json", lambda h, payload, code=200, error_code=None: Hub._json(hub, h, payload, code, None))
    kontext = "black-forest-labs/FLUX.1-Kontext-dev"
    hub.gated[kontext] = status
    with pytest.raises(ModelUnavailable) as caught:
        catalog.download(kontext, FLUX1, endpoint=hub.url)
    assert str(caught.value).startswith(f"{kontext} is gated") and FLUX1_LICENCE in str(caught.value)
    assert f"https://huggingface.co/{kontext}" in str(caught.value) and "hf auth login" in str(caught.value)

    hub.gated["someone/private"] = status
    with pytest.raises(ModelUnavailable) as caught:
        catalog.download("someone/private", (), endpoint=hub.url)
    assert "someone/private" in str(caught.value) and "hf auth login" in str(caught.value)


def test_a_token_the_hub_rejects_says_to_log_in_again():
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import get_session

    httpx = __import__(type(get_session()).__module__)  # whichever HTTP client this huggingface_hub uses
    request = httpx.Request("GET", "https://huggingface.co/api/models/black-forest-labs/FLUX.1-Fill-dev")
    response = httpx.Response(401, headers={"X-Error-Message": "Invalid credentials in Authorization header"}, request=request)
    message = str(catalog._hub_error("black-forest-labs/FLUX.1-Fill-dev", HfHubHTTPError("401 Client Error", response=response)))
    assert "refused the access token" in message and "hf auth login" in message


def test_a_gated_model_says_what_to_do_before_generate_offers_its_download():
    from engines import services

    status = services.model_status("black-forest-labs/FLUX.1-Fill-dev")
    assert not status.installed and "hf auth login" in status.access and "huggingface.co/black-forest-labs/FLUX.1-Fill-dev" in status.access
    assert services.model_status("black-forest-labs/FLUX.2-klein-4B").access == ""  # Apache-2.0, not gated
