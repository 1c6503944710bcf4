"""A GGUF transformer file on the command line, as a person who downloaded one would use it: the text
encoder and VAE it needs are fetched from its preset's repository without the preset's own transformer
(the consent is naming the file), or, offline, one sentence says how to get them."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from engines.testing_dit import write_dit_model, write_transformer_file

ROOT = Path(__file__).resolve().parents[2]
KLEIN = "black-forest-labs/FLUX.2-klein-4B"


def run_edit(tmp_path, model, env_extra):
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub-cache"), **env_extra}
    return subprocess.run([sys.executable, str(ROOT / "main.py"), "run", "edit", "--image", str(tmp_path / "photo.png"), "--prompt",
                           "make it winter", "--model", str(model), "--steps", "2", "--out", str(tmp_path / "out.png"),
                           "--previews", str(tmp_path / "steps")], capture_output=True, text=True, timeout=300, env=env)


def test_a_gguf_file_fetches_only_its_text_encoder_and_vae_then_edits(tmp_path, photo):
    from tests.hubserver import Hub

    Image.fromarray(photo).resize((128, 128)).save(tmp_path / "photo.png")
    model = tmp_path / "flux-2-klein-4b-Q8_0.gguf"
    write_transformer_file(model, "flux2-klein", "Q8_0")

    offline = run_edit(tmp_path, model, {"HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 3
    assert f'hf download {KLEIN} --include model_index.json "scheduler/*"' in offline.stderr.strip().splitlines()[-1]

    server = Hub()
    server.add_folder(KLEIN, write_dit_model(tmp_path / "klein-repo", "flux2-klein"))
    server.start()
    try:
        done = run_edit(tmp_path, model, {"HF_HUB_OFFLINE": "0", "SANDCASTLE_HUB_ENDPOINT": server.url})
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    assert f"downloading its text encoder and VAE, {KLEIN}" in done.stderr
    snapshot = next((tmp_path / "hub-cache" / "models--black-forest-labs--FLUX.2-klein-4B" / "snapshots").iterdir())
    assert (snapshot / "text_encoder").is_dir() and (snapshot / "vae").is_dir()
    assert not list(snapshot.glob("transformer/*.safetensors"))  # the preset's own transformer is not fetched
    os.environ["HF_HUB_CACHE"], before = str(tmp_path / "hub-cache"), os.environ.get("HF_HUB_CACHE")
    try:  # what was fetched serves transformer files, and is not taken for the whole preset
        from engines import catalog

        assert catalog.installed_path(KLEIN) is None and catalog.installed_without(KLEIN, "transformer") == snapshot
    finally:
        if before is None:
            os.environ.pop("HF_HUB_CACHE")
        else:
            os.environ["HF_HUB_CACHE"] = before
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == (128, 128, 3) and len(list((tmp_path / "steps").glob("*.png"))) == 2
