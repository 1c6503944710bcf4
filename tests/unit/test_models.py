import pytest
import torch

from engines import models, sources
from engines.api import InputError, ModelUnavailable


def test_resolve_source_kinds(tmp_path, model_dir):
    assert sources.resolve_source(str(model_dir("inpaint"))).kind == "folder"
    assert sources.resolve_source("stable-diffusion-v1-5/stable-diffusion-inpainting") == sources.ModelSource(
        "hub", "stable-diffusion-v1-5/stable-diffusion-inpainting"
    )
    (tmp_path / "weights.safetensors").write_bytes(b"")
    assert sources.resolve_source(str(tmp_path / "weights.safetensors")).kind == "file"


def test_bad_sources_are_refused_with_a_reason(tmp_path):
    (tmp_path / "model.ckpt").write_bytes(b"\x80\x04")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "empty").mkdir()
    cases = {
        str(tmp_path / "model.ckpt"): "pickle",
        str(tmp_path / "notes.txt"): "not a model file",
        str(tmp_path / "empty"): "model_index.json",
        str(tmp_path / "nowhere" / "model"): "no model folder",
    }
    for source, words in cases.items():
        with pytest.raises(ModelUnavailable, match=words):
            sources.resolve_source(source)


def test_offline_hub_model_names_the_id_and_the_way_out(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailable) as err:
        models.load_pipeline("inpaint", "sandcastle-tests/not-downloaded", torch.device("cpu"), torch.float32)
    message = str(err.value)
    assert "sandcastle-tests/not-downloaded" in message and "offline" in message and "--model" in message


def test_loading_a_local_folder_detects_family_and_unet(model_dir):
    for kind, family, channels in [("inpaint", "sd", 9), ("img2img", "sd", 4), ("sdxl-inpaint", "sdxl", 9), ("sdxl", "sdxl", 4)]:
        loaded = models.load_pipeline("inpaint", str(model_dir(kind)), torch.device("cpu"), torch.float32)
        assert (loaded.family, loaded.unet_channels, loaded.native) == (family, channels, 256)


def test_entry_count_limit():
    cache = models.PipelineCache(max_entries=2)
    entry = lambda name: models.LoadedPipeline(name, "sd", 512, 9, sources.ModelSource("folder", name))
    for key in ("a", "b"):
        cache.put(key, entry(key))
    assert cache.get("a").pipe == "a"  # a is now the most recent
    assert cache.put("c", entry("c")) == ["b"]
    assert cache.get("b") is None and cache.get("a") and cache.get("c")


def test_device_and_dtype_policy():
    assert models.pick_device("cpu").type == "cpu"
    assert models.pick_dtype(torch.device("cpu")) == torch.float32
    assert models.pick_dtype(torch.device("cuda")) == torch.float16
    assert models.pick_dtype(torch.device("cpu"), "bfloat16") == torch.bfloat16
    with pytest.raises(InputError):
        models.pick_dtype(torch.device("cpu"), "int8")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA"):
            models.pick_device("cuda")


def test_a_corrupt_weight_file_is_reported_as_unavailable(tmp_path, model_dir):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(model_dir("inpaint"), broken)
    weights = next((broken / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])  # a download cut short
    with pytest.raises(ModelUnavailable, match="could not be loaded"):
        models.load_pipeline("inpaint", str(broken), torch.device("cpu"), torch.float32)


def test_pickle_files_need_an_explicit_opt_in(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.out.2.weight": torch.zeros(1)}}, ckpt)
    with pytest.raises(ModelUnavailable, match="allow this one file"):
        sources.resolve_source(str(ckpt))
    assert sources.resolve_source(str(ckpt), allow_pickle=(str(ckpt),)).kind == "file"
    other = tmp_path / "other.ckpt"
    other.write_bytes(ckpt.read_bytes())
    with pytest.raises(ModelUnavailable):
        sources.resolve_source(str(other), allow_pickle=(str(ckpt),))  # the opt-in is per file


def test_allowed_pickles_are_still_read_with_weights_only(tmp_path):
    """A pickle that would run code when loaded is refused by torch's weights_only mode."""

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": Payload()}, evil)
    with pytest.raises(ModelUnavailable, match="Weights only load failed"):
        models.load_pipeline("inpaint", str(evil), torch.device("cpu"), torch.float32, allow_pickle=(str(evil),))


def test_preset_ids_name_their_hub_model():
    assert sources.resolve_source("sdxl-inpaint") == sources.ModelSource("hub", "diffusers/stable-diffusion-xl-1.0-inpainting-0.1")


def test_memory_mode_policy():
    gib = models.GIB
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert models.choose_memory_mode(None, cpu, 2 * gib, None, "sd") == "off"
    assert models.choose_memory_mode(None, cuda, 2 * gib, 24 * gib, "sd") == "off"
    assert models.choose_memory_mode(None, cuda, 2 * gib, 4 * gib, "sd") == "balanced"
    assert models.choose_memory_mode(None, cuda, 7 * gib, 8 * gib, "sdxl") == "lowest"
    assert models.choose_memory_mode("balanced", cuda, 2 * gib, 80 * gib, "sd") == "balanced"  # the person's choice wins
    with pytest.raises(InputError):
        models.choose_memory_mode("tiny", cuda, 1, 1, "sd")


def test_memory_modes_set_up_the_pipeline(model_dir):
    models.CACHE.clear()
    loaded = models.load_pipeline("inpaint", str(model_dir("inpaint")), torch.device("cpu"), torch.float32, memory="balanced")
    assert loaded.memory == "balanced"
    assert loaded.pipe.vae.use_tiling
    assert loaded.pipe.unet.attn_processors  # attention slicing installs sliced processors
    assert any("Sliced" in type(p).__name__ for p in loaded.pipe.unet.attn_processors.values())
    plain = models.load_pipeline("inpaint", str(model_dir("inpaint")), torch.device("cpu"), torch.float32, memory="off")
    assert not plain.pipe.vae.use_tiling


def test_tasks_on_one_base_model_share_its_weights(model_dir):
    models.CACHE.clear()
    folder = str(model_dir("img2img"))
    inpaint = models.load_pipeline("inpaint", folder, torch.device("cpu"), torch.float32)
    before = models.CACHE.bytes_on("cpu")
    img2img = models.load_pipeline("img2img", folder, torch.device("cpu"), torch.float32)
    assert type(img2img.pipe).__name__ == "StableDiffusionImg2ImgPipeline"
    assert img2img.pipe.unet is inpaint.pipe.unet and img2img.pipe.vae is inpaint.pipe.vae
    assert models.CACHE.bytes_on("cpu") == before  # the second task cost no memory


def test_cache_evicts_least_recently_used_over_its_byte_budget(model_dir):
    cache = models.PipelineCache(max_entries=10)
    a = models._load_fresh("inpaint", sources.resolve_source(str(model_dir("inpaint"))), torch.float32)
    b = models._load_fresh("inpaint", sources.resolve_source(str(model_dir("img2img"))), torch.float32)
    c = models._load_fresh("inpaint", sources.resolve_source(str(model_dir("sdxl"))), torch.float32)
    size = {name: sum(models.module_bytes(p).values()) for name, p in (("a", a), ("b", b), ("c", c))}
    entry = lambda p: models.LoadedPipeline(p, "sd", 256, 9, sources.ModelSource("folder", "x"))
    budget = size["a"] + size["b"] + size["c"] // 2
    assert cache.put(("a",), entry(a), budget) == []
    assert cache.put(("b",), entry(b), budget) == []
    cache.get(("a",))  # a is used again: b is now the least recently used
    assert cache.put(("c",), entry(c), budget) == [("b",)]
    assert cache.keys() == [("a",), ("c",)]
    assert cache.bytes_on("cpu") == size["a"] + size["c"] <= budget
