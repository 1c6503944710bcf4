"""Presets and downloads. Downloads run against a real HTTP server on 127.0.0.1 (tests/hubserver.py)
with the real huggingface_hub client pointed at it."""

import json
import threading

import pytest

from engines import catalog, sources
from engines.api import CancelToken, Cancelled, ModelUnavailable

REPO = "tiny/inpaint"
PARTS = ("scheduler", "text_encoder", "tokenizer", "unet", "vae")
UNET = "unet/diffusion_pytorch_model.safetensors"


def fetch(hub, **kw):
    events = []
    path = catalog.download(REPO, PARTS, events.append, endpoint=hub.url, **kw)
    return path, events


def test_presets_cover_every_task_and_name_size_and_licence():
    presets = sources.presets()
    ids = {p.id for p in presets}
    assert {"sd15-inpaint", "sd2-inpaint", "sdxl-inpaint", "sd15", "instruct-pix2pix", "taesd", "taesdxl",
            "diffae-ffhq256", "flux2-klein-4b", "qwen-image-edit-2511", "flux1-fill-dev", "flux1-kontext-dev"} <= ids
    assert len(ids) == len(presets)  # ids are unique
    assert not any(p.architecture.startswith("controlnet") for p in presets)  # nothing uses one: none is offered
    for p in presets:
        assert p.licence and p.description and p.download_bytes > 0
        assert p.hub_id or p.manual  # where there is no hub copy, the preset says how to get it
    assert sources.default_preset("inpaint").hub_id == "stable-diffusion-v1-5/stable-diffusion-inpainting"
    assert sources.preset("timbrooks/instruct-pix2pix").id == "instruct-pix2pix"


def test_only_safetensors_and_half_precision_when_offered():
    files = ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.bin", "unet/diffusion_pytorch_model.safetensors",
             "unet/diffusion_pytorch_model.fp16.safetensors", "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
             "safety_checker/model.safetensors", "README.md", "v1-5-pruned.ckpt"]
    assert catalog.wanted(files, ("unet", "vae")) == [
        "model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors", "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
    ]
    # TAESD's repository keeps its encoder and decoder a second time for other tools: the previewer reads one file.
    taesd = ["config.json", "diffusion_pytorch_model.safetensors", "taesd_decoder.safetensors", "taesd_encoder.safetensors", "README.md"]
    assert catalog.wanted(taesd, ()) == ["config.json", "diffusion_pytorch_model.safetensors"]


def test_download_reports_byte_progress_and_installs(hub):
    assert catalog.installed_path(REPO) is None
    path, events = fetch(hub)
    total = events[-1].total_bytes
    assert total == sum(len(d) for n, d in hub.repos[REPO].items() if n in catalog.wanted(list(hub.repos[REPO]), PARTS))
    assert events[-1].done_bytes == total and events[-1].files_done == events[-1].files_total == 10
    done = [e.done_bytes for e in events]
    assert done == sorted(done) and len(events) >= 10
    assert catalog.installed_path(REPO) == path
    assert (path / UNET).read_bytes() == hub.repos[REPO][UNET]
    assert total <= catalog.disk_bytes(path) < total + 4096  # plus our small completeness manifest
    from engines import models
    import torch

    assert models.load_pipeline("inpaint", str(path), torch.device("cpu"), torch.float32).unet_channels == 9


def test_cancel_stops_mid_file_and_the_next_download_resumes(hub):
    hub.delay = 0.02
    token = CancelToken()
    unet_events = []

    def cancel_inside_the_unet(event):
        if event.file == UNET:
            unet_events.append(event.done_bytes)
            if unet_events[-1] > unet_events[0]:  # some of the UNet's bytes have arrived
                token.cancel()

    with pytest.raises(Cancelled):
        catalog.download(REPO, PARTS, cancel_inside_the_unet, token, endpoint=hub.url)
    assert catalog.installed_path(REPO) is None
    partial = list((catalog.repo_folder(REPO) / "blobs").glob("*.sandcastle-partial"))
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < len(hub.repos[REPO][UNET])
    had = partial[0].stat().st_size

    hub.delay = 0.0
    hub.requests.clear()
    path, events = fetch(hub)
    ranges = [r for m, p, r in hub.requests if p.endswith(UNET) and m == "GET"]
    assert ranges == [f"bytes={had}-"]  # resumed where it stopped, not restarted
    assert (path / UNET).read_bytes() == hub.repos[REPO][UNET]
    assert catalog.installed_path(REPO) == path


def test_a_corrupted_file_is_caught_and_removed(hub):
    hub.corrupt.add(UNET)
    with pytest.raises(ModelUnavailable, match="arrived damaged"):
        fetch(hub)
    assert catalog.installed_path(REPO) is None
    snapshot = catalog.repo_folder(REPO) / "snapshots" / hub.commit
    assert not (snapshot / UNET).exists()
    assert not list((catalog.repo_folder(REPO) / "blobs").glob("*partial"))  # the damaged bytes are gone
    hub.corrupt.clear()
    path, _ = fetch(hub)
    assert (path / UNET).read_bytes() == hub.repos[REPO][UNET]


def test_a_dropped_connection_is_resumed(hub):
    hub.cut_after = 700_000  # every response stops after 700 kB
    path, _ = fetch(hub)
    assert (path / UNET).read_bytes() == hub.repos[REPO][UNET]
    assert any(r for m, p, r in hub.requests if p.endswith(UNET) and m == "GET" and r)


def test_the_server_going_away_gives_a_plain_error(hub):
    hub.delay = 0.02
    stopped = threading.Event()

    def stop_in_the_unet(event):
        if event.file == UNET and event.done_bytes and not stopped.is_set():
            stopped.set()
            threading.Thread(target=hub.stop).start()

    with pytest.raises(ModelUnavailable) as err:
        catalog.download(REPO, PARTS, stop_in_the_unet, endpoint=hub.url)
    assert "could not reach the Hugging Face hub to download tiny/inpaint: the connection to the hub failed" in str(err.value)
    assert "resumes" in str(err.value)
    assert "\n" not in str(err.value)
    assert catalog.installed_path(REPO) is None


def test_offline_refuses_before_any_network_call(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailable, match="offline"):
        fetch(hub)
    assert hub.requests == []


def test_unknown_repository(hub):
    with pytest.raises(ModelUnavailable, match="no model called tiny/absent"):
        catalog.download("tiny/absent", PARTS, endpoint=hub.url)


def test_delete_frees_the_space(hub):
    path, _ = fetch(hub)
    size = catalog.disk_bytes(catalog.repo_folder(REPO))
    assert size >= catalog.disk_bytes(path) > 4_000_000
    assert catalog.delete(REPO) == size
    assert catalog.installed_path(REPO) is None and not catalog.repo_folder(REPO).exists()


def test_manifest_marks_completeness(hub):
    path, _ = fetch(hub)
    manifest = json.loads((path / ".sandcastle-complete.json").read_text())
    assert UNET in manifest["files"]
    (path / UNET).unlink()
    assert catalog.installed_path(REPO) is None  # a file removed by hand makes it not installed


def test_a_cache_written_by_hf_download_counts_as_installed(hub):
    """`hf download` / snapshot_download lay the cache out without our manifest: it is judged from its own
    layout, and a half-finished one (a weights link whose blob is missing) is not installed."""
    from pathlib import Path

    from huggingface_hub import snapshot_download

    from engines import services

    folder = Path(snapshot_download(REPO, endpoint=hub.url, cache_dir=catalog.hub_cache()))  # the cache HF_HUB_CACHE names
    assert not (folder / ".sandcastle-complete.json").exists()
    assert catalog.installed_path(REPO) == folder
    assert services.model_status(REPO).installed
    import numpy as np

    from engines import registry
    from engines.api import CancelToken, Request, Task

    image, mask = np.full((64, 64, 3), 128, np.uint8), np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    result = registry.get("inpaint").run(Request(Task.INPAINT, image, mask, prompt="x", steps=2, model=REPO, device="cpu", dtype="float32"),
                                         lambda step: None, CancelToken())
    assert result.info["model"] and result.image.shape == image.shape  # it loads from that cache, with no network
    (folder / UNET).resolve().unlink()  # the blob goes, the snapshot's link stays: an interrupted copy
    assert catalog.installed_path(REPO) is None and not services.model_status(REPO).installed


def test_a_download_that_cannot_fit_is_refused_before_it_starts(hub, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))  # 1 kB free
    with pytest.raises(ModelUnavailable, match=r"needs .* GB but only 0\.0 GB is free"):
        fetch(hub)
    assert not any(r[0] == "GET" and "/resolve/" in r[1] for r in hub.requests)  # not one byte was fetched
    assert catalog.installed_path(REPO) is None


def test_a_model_folder_with_python_code_is_refused_and_its_code_never_runs(model_dir, tmp_path):
    """A model folder can ship a custom pipeline or component as Python; loading it must not run it."""
    import shutil as sh

    from engines import services

    folder = tmp_path / "with-code"
    sh.copytree(model_dir("inpaint"), folder)
    ran = tmp_path / "code-ran"
    (folder / "unet" / "my_unet.py").write_text(f"open({str(ran)!r}, 'w').write('ran')\n")
    index = json.loads((folder / "model_index.json").read_text())
    index["unet"] = ["my_unet", "MyUNet"]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelUnavailable, match="carries Python code .*unet/my_unet.py"):
        services.model_status(str(folder))
    from engines import registry
    from engines.api import Request, Task
    import numpy as np

    mask = np.zeros((64, 64), np.uint8)
    mask[8:32, 8:32] = 255
    with pytest.raises(ModelUnavailable):
        registry.get("inpaint").check(Request(Task.INPAINT, np.zeros((64, 64, 3), np.uint8), mask, model=str(folder)))
    assert not ran.exists()


@pytest.mark.parametrize("status", [401, 403])
def test_a_gated_repository_says_which_licence_to_accept_and_how_to_log_in(hub, status):
    hub.gated[REPO] = status  # 401: not logged in; 403: logged in, licence not accepted
    with pytest.raises(ModelUnavailable) as caught:
        fetch(hub)
    message = str(caught.value)
    assert f"huggingface.co/{REPO}" in message and "hf auth login" in message and "licence" in message
    assert catalog.installed_path(REPO) is None


def test_network_failures_are_said_in_plain_words():
    import socket

    def raised_from(cause: BaseException) -> BaseException:
        try:
            try:
                raise cause
            except BaseException as inner:
                raise RuntimeError("Cannot send a request, as the client has been closed.") from inner
        except RuntimeError as outer:
            return outer

    lookup = catalog._hub_error("tiny/model", raised_from(socket.gaierror(-2, "Name or service not known")))
    assert "Errno" not in str(lookup) and "seems to be offline" in str(lookup) and "download again" in str(lookup)
    assert "did not answer in time" in str(catalog._hub_error("tiny/model", raised_from(TimeoutError("timed out"))))
    assert "connection to the hub failed" in str(catalog._hub_error("tiny/model", ConnectionRefusedError(111, "Connection refused")))
    assert "stopped (disk quota)" in str(catalog._hub_error("tiny/model", OSError("disk quota")))  # not a network failure: said as it is
