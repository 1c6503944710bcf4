"""The architecture's boundaries, checked on the source rather than hoped for."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
QT_PACKAGES = ("PySide6", "PyQt5", "PyQt6", "qtpy", "shiboken6")


def qt_imports(source: str) -> list[str]:
    """Every Qt module a piece of Python source imports, wherever the import statement is."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("import_module", "__import__"):
            names = [a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        found += [n for n in names if n.split(".")[0] in QT_PACKAGES]
    return found


def test_the_scan_finds_qt_imports_in_any_form():
    source = "import os\ndef f():\n    from PySide6.QtGui import QImage\nimport PyQt5.QtCore as q\nimportlib.import_module('PySide6.QtWidgets')\n"
    assert sorted(qt_imports(source)) == ["PyQt5.QtCore", "PySide6.QtGui", "PySide6.QtWidgets"]
    assert qt_imports("import numpy\nfrom engines.api import Request\n") == []


def test_nothing_under_engines_imports_qt():
    offenders = {
        str(path.relative_to(ROOT)): found
        for path in sorted((ROOT / "engines").rglob("*.py"))
        if (found := qt_imports(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}


def test_import_contracts_hold():
    """import-linter (contracts in pyproject.toml): engines never import Qt; the editor uses only
    engines.api, engines.registry and engines.services; the engine modules keep their layers (api at
    the bottom, shared steps, engines that never import each other, services at the top)."""
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kept, 0 broken" in done.stdout


def test_no_engine_runs_code_from_a_model_repository():
    """Model repositories can ship Python; Sandcastle never asks diffusers or transformers to run it."""
    for path in sorted((ROOT / "engines").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.keyword) and node.arg in ("trust_remote_code", "custom_pipeline"):
                raise AssertionError(f"{path.relative_to(ROOT)} passes {node.arg}")


def test_no_undefined_names_or_unused_imports():
    """ruff's pyflakes rules: an undefined name is a crash waiting in a code path no test reached."""
    ruff = Path(sys.executable).with_name("ruff")
    done = subprocess.run([str(ruff), "check", "main.py", "editor", "engines", "tests", "benchmarks"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


HEAVY = ("torch", "diffusers", "transformers")

WITHOUT_TORCH = """
import json, sys
from engines import services

folder, picture, model, weights, diffae, sliders = sys.argv[1:]
image, alpha = services.load_picture(picture, 10**6)
mask = services.load_mask(picture.replace("photo", "mask"), (image.shape[1], image.shape[0]))
services.save_mask(folder + "/mask-copy.png", services.fill_mask_region(services.grow_mask(mask, 2), 0, 0, 255))
services.save_image(folder + "/copy.png", image, alpha)
found = {
    "presets": len(services.model_presets()),
    "default": services.default_model("inpaint"),
    "offline": services.is_offline(),
    "size": services.picture_size(picture),
    "image": services.load_image(picture).shape,
    "embedded": services.embed(mask, (40, 50), (4, 2), 0).shape,
    "statuses": [services.model_status(m).kind for m in (model, weights, diffae, "stable-diffusion-v1-5/stable-diffusion-inpainting")],
    "own": services.own_sliders(),
    "own_there": services.own_sliders(sliders),
    "data": str(services.user_data_folder()),
}
services.delete_own_slider("Freckles", sliders)
found["own_after"] = services.own_sliders(sliders)
found["heavy"] = sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)
print(json.dumps(found))
"""


def test_the_editors_services_need_no_torch(model_dir, tmp_path):
    """The editor calls these on the GUI thread before any engine is loaded, so the window opens
    without torch: importing engines.services and calling them imports no torch, diffusers or
    transformers (only device_summary, demo_model and download_model may)."""
    from PIL import Image

    from engines.diffae import directions
    import torch

    Image.fromarray(np.full((30, 20, 3), 120, np.uint8)).save(tmp_path / "photo.png")
    Image.fromarray(np.zeros((30, 20), np.uint8)).save(tmp_path / "mask.png")
    from engines import testing

    layout = Path(__file__).resolve().parent.parent / "data" / "single_file" / "sd15.txt"
    testing.write_checkpoint_from_layout(layout, tmp_path / "weights.safetensors")  # a real SD 1.5 header (zeros: a sparse file)
    (tmp_path / "diffae").mkdir()
    (tmp_path / "diffae" / "autoencoder.safetensors").write_bytes(b"")
    directions.save_direction(tmp_path / "sliders", "Freckles", torch.ones(16) / 4, 2, 2, "model")
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, str(tmp_path), str(tmp_path / "photo.png"), str(model_dir("inpaint")),
         str(tmp_path / "weights.safetensors"), str(tmp_path / "diffae"), str(tmp_path / "sliders")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["heavy"] == []
    assert found["presets"] > 0 and found["default"] == "sd15-inpaint" and found["offline"] is True
    assert found["size"] == [20, 30] and found["image"] == [30, 20, 3] and found["embedded"] == [40, 50]
    assert found["statuses"] == ["folder", "file", "folder", "hub"]
    assert found["own"] == [] and found["own_there"] == ["Freckles"] and found["own_after"] == []
    assert (tmp_path / "copy.png").is_file() and (tmp_path / "mask-copy.png").is_file()
