import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engines.api import InputError
from engines.diffae.convert import convert
from engines.diffae.model import DiffAE
from tests.unit.test_diffae_model import TINY

ROOT = Path(__file__).resolve().parents[2]


def lightning_checkpoint(model_state, extra_state=None, hyper=None):
    """The layout of the official files: a Lightning wrapper, the live model under model., EMA under ema_model."""
    state = {f"model.{k}": v.clone() + 1 for k, v in model_state.items()}
    state.update({f"ema_model.{k}": v for k, v in model_state.items()})
    state.update(extra_state or {})
    return {"epoch": 3, "global_step": 12000, "pytorch-lightning_version": "1.4.5", "state_dict": state,
            "hyper_parameters": hyper or {"conf": {"net_ch": 32, "beatgans_gen_type": "ddim", "T": 1000}},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4}]}], "lr_schedulers": []}


def test_autoencoder_round_trip_takes_the_ema_weights(tmp_path):
    torch.manual_seed(0)
    original = DiffAE(TINY)
    torch.save(lightning_checkpoint(original.state_dict()), tmp_path / "last.ckpt")
    assert convert(tmp_path / "last.ckpt", tmp_path / "diffae.safetensors") == "autoencoder"
    loaded = DiffAE(TINY)
    loaded.load_state_dict(load_file(str(tmp_path / "diffae.safetensors")), strict=True)
    for k, v in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k  # the EMA copy, not model.* (which differs by 1)


def test_classifier_round_trip(tmp_path):
    state = {"classifier.weight": torch.randn(40, 512), "classifier.bias": torch.randn(40),
             "conds_mean": torch.randn(1, 512), "conds_std": torch.rand(1, 512) + 0.5}
    torch.save(lightning_checkpoint({"x": torch.zeros(1)}, state), tmp_path / "cls.ckpt")
    assert convert(tmp_path / "cls.ckpt", tmp_path / "cls.safetensors") == "classifier"
    out = load_file(str(tmp_path / "cls.safetensors"))
    assert torch.equal(out["weight"], state["classifier.weight"]) and out["mean"].shape == (512,)


class RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp/sandcastle-pickle-ran")


def test_a_checkpoint_carrying_a_pickled_object_is_refused_without_running_it(tmp_path):
    MARKER.unlink(missing_ok=True)
    torch.manual_seed(0)
    torch.save(lightning_checkpoint(DiffAE(TINY).state_dict(), hyper={"conf": RunsCode()}), tmp_path / "evil.ckpt")
    MARKER.unlink(missing_ok=True)
    with pytest.raises(InputError, match="carries pickled Python objects"):
        convert(tmp_path / "evil.ckpt", tmp_path / "out.safetensors")
    assert not MARKER.exists() and not (tmp_path / "out.safetensors").exists()


def test_not_a_diffae_checkpoint(tmp_path):
    torch.save({"state_dict": {"model.w": torch.zeros(2)}}, tmp_path / "other.ckpt")
    with pytest.raises(InputError, match="no EMA weights"):
        convert(tmp_path / "other.ckpt", tmp_path / "o.safetensors")


def test_command_line(tmp_path):
    torch.save(lightning_checkpoint(DiffAE(TINY).state_dict()), tmp_path / "last.ckpt")
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "convert-diffae", str(tmp_path / "last.ckpt"), str(tmp_path / "d.safetensors")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "autoencoder" in done.stderr and (tmp_path / "d.safetensors").is_file()
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "convert-diffae", str(tmp_path / "nope.ckpt"), str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no checkpoint called nope.ckpt" in done.stderr


LIGHTNING_LIKE = '''
import pathlib
MARKER = pathlib.Path({marker!r})
MARKER.touch()  # importing this module leaves a trace: it must not be imported when converting


class AttributeDict(dict):
    def __setstate__(self, state):
        MARKER.touch()


class ModelCheckpoint:
    def __init__(self):
        self.monitor = "loss"

    def __setstate__(self, state):
        MARKER.touch()
'''

WRITE_CHECKPOINT = '''
import sys, torch
from pytorch_lightning.utilities.parsing import AttributeDict
from pytorch_lightning.callbacks.model_checkpoint import ModelCheckpoint
state = torch.load(sys.argv[1])
hyper = AttributeDict(conf={{"net_ch": 32, "T": 1000}})
checkpoint = {{"epoch": 3, "global_step": 12000, "pytorch-lightning_version": "1.4.5", "state_dict": state,
              "callbacks": {{ModelCheckpoint: {{"monitor": "loss", "best_model_score": torch.tensor(0.1)}}}},
              "hparams_name": "conf", "hyper_parameters": hyper, "optimizer_states": [], "lr_schedulers": [],
              {extra}}}
torch.save(checkpoint, sys.argv[2])
'''


def lightning_1_4_checkpoint(tmp_path, state, marker, extra=""):
    """A checkpoint pickled from classes at pytorch-lightning's real paths, in a package that exists only
    while writing it (as the official files were written by Lightning 1.4)."""
    package = tmp_path / "fake-lightning"
    for folder in ("pytorch_lightning", "pytorch_lightning/utilities", "pytorch_lightning/callbacks"):
        (package / folder).mkdir(parents=True, exist_ok=True)
        (package / folder / "__init__.py").write_text("")
    (package / "pytorch_lightning/utilities/parsing.py").write_text(LIGHTNING_LIKE.format(marker=str(marker)))
    (package / "pytorch_lightning/callbacks/model_checkpoint.py").write_text(LIGHTNING_LIKE.format(marker=str(marker)))
    (package / "elsewhere.py").write_text(LIGHTNING_LIKE.format(marker=str(marker)).replace("class AttributeDict", "class Thing"))
    torch.save(state, tmp_path / "state.pt")
    done = subprocess.run([sys.executable, "-c", WRITE_CHECKPOINT.format(extra=extra), str(tmp_path / "state.pt"), str(tmp_path / "last.ckpt")],
                          env={**os.environ, "PYTHONPATH": str(package)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert marker.exists()  # the fake Lightning really was imported while writing
    marker.unlink()
    return tmp_path / "last.ckpt"


def test_a_lightning_1_4_checkpoint_converts_without_importing_or_calling_lightning(tmp_path):
    torch.manual_seed(0)
    original = DiffAE(TINY)
    marker = tmp_path / "lightning-ran"
    state = lightning_checkpoint(original.state_dict())["state_dict"]
    checkpoint = lightning_1_4_checkpoint(tmp_path, state, marker)
    with pytest.raises(Exception):  # weights_only alone refuses it: the class references are what the second reader is for
        torch.load(str(checkpoint), weights_only=True)

    assert convert(checkpoint, tmp_path / "diffae.safetensors") == "autoencoder"
    assert not marker.exists() and "pytorch_lightning" not in sys.modules
    loaded = load_file(str(tmp_path / "diffae.safetensors"))
    assert all(torch.equal(loaded[k], v) for k, v in original.state_dict().items())


def test_a_lightning_checkpoint_naming_any_other_class_is_refused(tmp_path):
    marker = tmp_path / "ran"
    checkpoint = lightning_1_4_checkpoint(tmp_path, {"ema_model.w": torch.zeros(2)}, marker,
                                          extra='"loops": __import__("elsewhere").Thing()')
    with pytest.raises(InputError, match="global 'elsewhere.Thing' is not allowed"):
        convert(checkpoint, tmp_path / "out.safetensors")
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_a_checkpoint_that_would_inflate_far_beyond_its_size_is_refused_before_reading(tmp_path):
    import zipfile

    bomb = tmp_path / "bomb.ckpt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("archive/data/0", "w", force_zip64=True) as member:
            for _ in range(256):
                member.write(bytes(1024 * 1024))  # 256 MiB of zeros, a few hundred KB compressed
    assert bomb.stat().st_size < 2_000_000
    with pytest.raises(InputError, match="would unpack to 268,435,456"):
        convert(bomb, tmp_path / "out.safetensors")


def test_a_checkpoint_with_a_million_tiny_tensors_is_refused_before_reading(tmp_path, monkeypatch):
    """The tensor count is bounded too: each storage is one archive entry, counted from the zip's
    directory before anything is unpickled (the limit is lowered here so the file stays small)."""
    import zipfile

    from engines import checkpoints

    monkeypatch.setattr(checkpoints, "MAX_ARCHIVE_ENTRIES", 500)
    many = tmp_path / "many.ckpt"
    with zipfile.ZipFile(many, "w") as archive:
        for k in range(501):
            archive.writestr(f"archive/data/{k}", b"\0" * 4)
    with pytest.raises(InputError, match="holds 501 entries"):
        convert(many, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_a_pickle_may_not_change_a_class_or_allocate_without_limit(tmp_path):
    """Beyond globals: BUILD on an allowed class (which would change it for the whole process) and
    bytearray(huge) (which would fill the memory) are refused too."""
    import collections
    import pickle
    import zipfile

    def checkpoint_with(payload: bytes, name: str):
        path = tmp_path / name
        torch.save({"state_dict": {"ema_model.w": torch.zeros(2)}}, path)
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: archive.read(info.filename) for info in archive.infolist()}
        pkl = next(n for n in members if n.endswith("data.pkl"))
        members[pkl] = payload
        with zipfile.ZipFile(path, "w") as archive:
            for member, data in members.items():
                archive.writestr(member, data)
        return path

    # GLOBAL collections.Counter; {"most_common": None}; BUILD: would set Counter.most_common = None for everyone
    build_on_a_class = b"\x80\x02ccollections\nCounter\n}X\x0b\x00\x00\x00most_commonNsb."
    with pytest.raises(InputError, match="setting the state of a type is not allowed"):
        convert(checkpoint_with(build_on_a_class, "build.ckpt"), tmp_path / "o.safetensors")
    assert collections.Counter.most_common is not None
    huge = b"\x80\x02cbuiltins\nbytearray\nJ\x00\xe8vH\x85R."  # bytearray(1_215_752_192)
    with pytest.raises(InputError, match="global 'builtins.bytearray' is not allowed"):
        convert(checkpoint_with(huge, "huge.ckpt"), tmp_path / "o.safetensors")
    assert pickle  # the payloads above are hand-written protocol-2 pickles
