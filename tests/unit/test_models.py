import pytest
import torch

from engines import models
from engines.api import InputError, ModelUnavailable


def test_resolve_source_kinds(tmp_path, model_dir):
    assert models.resolve_source(str(model_dir("inpaint"))).kind == "folder"
    assert models.resolve_source("stable-diffusion-v1-5/stable-diffusion-inpainting") == models.ModelSource(
        "hub", "stable-diffusion-v1-5/stable-diffusion-inpainting"
    )
    (tmp_path / "weights.safetensors").write_bytes(b"")
    assert models.resolve_source(str(tmp_path / "weights.safetensors")).kind == "file"


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
            models.resolve_source(source)


def test_offline_hub_model_names_the_id_and_the_way_out(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailable) as err:
        models.load_inpaint_pipeline("sandcastle-tests/not-downloaded", torch.device("cpu"), torch.float32)
    message = str(err.value)
    assert "sandcastle-tests/not-downloaded" in message and "offline" in message and "--model" in message


def test_loading_a_local_folder_detects_family_and_unet(model_dir):
    for kind, family, channels in [("inpaint", "sd", 9), ("img2img", "sd", 4), ("sdxl-inpaint", "sdxl", 9), ("sdxl", "sdxl", 4)]:
        loaded = models.load_inpaint_pipeline(str(model_dir(kind)), torch.device("cpu"), torch.float32)
        assert (loaded.family, loaded.unet_channels, loaded.native) == (family, channels, 256)


def test_loaded_pipelines_are_cached():
    cache = models.PipelineCache(max_entries=2)
    for key in ("a", "b"):
        cache.put(key, key)
    assert cache.get("a") == "a"  # a is now the most recent
    cache.put("c", "c")
    assert cache.get("b") is None and cache.get("a") == "a" and cache.get("c") == "c"


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
        models.load_inpaint_pipeline(str(broken), torch.device("cpu"), torch.float32)
