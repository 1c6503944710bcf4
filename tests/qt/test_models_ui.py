"""First run and the Models dialog, against a local hub (tests/hubserver.py)."""

import numpy as np
import pytest
from PySide6.QtCore import Qt

from engines import catalog
from tests.qt.conftest import open_window, paint_stroke


@pytest.fixture
def fresh_window(qtbot, tmp_path, photo):
    """The window as a new user sees it: no --model, no settings."""
    win = open_window(qtbot, tmp_path, photo, steps=3)
    yield win
    win.shutdown()


def test_first_generate_asks_once_downloads_with_progress_then_generates(qtbot, fresh_window, hub, photo):
    win = fresh_window
    win.settings.set_model_for("inpaint", "tiny/inpaint")
    win.settings["hub_endpoint"] = hub.url
    asked, formats = [], []
    win.generation.ask_download = lambda status: asked.append((status.title, status.location)) or True
    win.generation.downloadProgress.connect(lambda *a: formats.append(win.panel.progress.format()))
    paint_stroke(qtbot, win, [(200, 200), (260, 220)])
    with qtbot.waitSignal(win.generation.finished, timeout=120000):
        qtbot.mouseClick(win.panel.generate, Qt.LeftButton)
    assert asked == [("tiny/inpaint", "tiny/inpaint")]
    assert formats and formats[-1].startswith("Downloading inpaint:") and "/s" in formats[-1]
    assert catalog.installed_path("tiny/inpaint") is not None
    assert not np.array_equal(win.document.image, photo)  # the job went on to a result
    assert win.document.undo_stack.count() == 2

    catalog.delete("tiny/inpaint")
    with qtbot.waitSignal(win.generation.finished, timeout=120000):
        win.generation.generate()
    assert len(asked) == 1  # asked once: the second download starts without a question


def test_declining_the_download_changes_nothing(qtbot, fresh_window, hub, photo):
    win = fresh_window
    win.settings.set_model_for("inpaint", "tiny/inpaint")
    win.settings["hub_endpoint"] = hub.url
    win.generation.ask_download = lambda status: False
    paint_stroke(qtbot, win, [(200, 200), (260, 220)])
    win.generation.generate()
    assert not (win.generation.downloading is not None) and not win.generation.busy
    assert "download it in Tools → Models" in win.panel.message.text()
    assert hub.requests == []


def test_offline_says_which_model_and_how_to_install_it(qtbot, fresh_window):
    win = fresh_window  # the suite runs with HF_HUB_OFFLINE=1
    paint_stroke(qtbot, win, [(200, 200), (260, 220)])
    win.generation.generate()
    text = win.panel.message.text()
    assert "Stable Diffusion 1.5 Inpainting" in text and "offline" in text
    assert "hf download stable-diffusion-v1-5/stable-diffusion-inpainting" in text  # huggingface_hub installs `hf`, no longer huggingface-cli
    assert not win.generation.busy and not (win.generation.downloading is not None)


def test_cancel_during_the_download_stops_it(qtbot, fresh_window, hub):
    win = fresh_window
    hub.delay = 0.02
    win.settings.set_model_for("inpaint", "tiny/inpaint")
    win.settings["hub_endpoint"] = hub.url
    win.generation.ask_download = lambda status: True
    paint_stroke(qtbot, win, [(200, 200), (260, 220)])
    win.generation.downloadProgress.connect(lambda hub_id, p: p.done_bytes > 1_000_000 and qtbot.mouseClick(win.panel.cancel, Qt.LeftButton))
    with qtbot.waitSignal(win.generation.downloadCancelled, timeout=60000):
        win.generation.generate()
    assert not win.generation.busy and catalog.installed_path("tiny/inpaint") is None
    assert win.panel.progress.format() == "Download cancelled" and win.panel.generate.isEnabled()


def test_models_dialog_lists_presets_adds_local_models_and_chooses_per_task(qtbot, fresh_window, model_dir, tmp_path, monkeypatch):
    from editor.models_dialog import ModelsDialog

    win = fresh_window
    dialog = ModelsDialog(win.settings, win.generation, win)
    qtbot.addWidget(dialog)
    titles = [dialog.table.item(r, 0).text() for r in range(dialog.table.rowCount())]
    assert "Stable Diffusion 1.5 Inpainting" in titles and "DiffAE FFHQ-256 (faces)" in titles
    dialog.select("sd15-inpaint")
    assert dialog.table.item(dialog.table.currentRow(), 2).text() == "Not installed"
    assert "about 2.1 GB" in dialog.table.item(dialog.table.currentRow(), 3).text()
    assert "CreativeML OpenRAIL-M" in dialog.about.text()
    dialog.select("diffae-ffhq256")
    assert "convert-diffae" in dialog.about.text() and not dialog.download_button.isEnabled()

    folder = str(model_dir("inpaint"))
    assert dialog.add_local(folder)
    row = dialog.table.currentRow()
    assert dialog.table.item(row, 2).text() == "Installed" and dialog.table.item(row, 4).text() == folder
    combo = dialog.task_combos["inpaint"]
    combo.setCurrentIndex(combo.findData(folder))
    assert win.settings.model_for("inpaint") == folder
    assert win.generation.model_for("inpaint") == folder

    import torch

    ckpt = tmp_path / "old.ckpt"
    torch.save({"state_dict": {}}, ckpt)
    monkeypatch.setattr(dialog, "confirm", lambda text: "pickle" in text and False)
    assert not dialog.add_local(str(ckpt))  # refused: nothing allowed, nothing added
    assert win.settings["pickle_allowed"] == []
    monkeypatch.setattr(dialog, "confirm", lambda text: True)
    assert dialog.add_local(str(ckpt))
    assert win.settings["pickle_allowed"] == [str(ckpt.resolve())]

    from editor.settings import Settings

    saved = Settings.load()
    assert saved.model_for("inpaint") == folder and len(saved["local_models"]) == 2


def test_models_dialog_says_what_a_single_file_is_and_offers_it_only_for_its_tasks(qtbot, fresh_window, tmp_path):
    from pathlib import Path

    from editor.models_dialog import ModelsDialog
    from engines import testing

    layouts = Path(__file__).resolve().parent.parent / "data" / "single_file"
    inpainting = str(testing.write_checkpoint_from_layout(layouts / "sd15-inpaint.txt", tmp_path / "my-inpainting.safetensors"))
    lora_layout = tmp_path / "lora.txt"
    lora_layout.write_text("lora_unet_mid_block_attentions_0_proj_in.lora_down.weight F16 (4, 1280)\n")
    lora = str(testing.write_checkpoint_from_layout(lora_layout, tmp_path / "my-style.safetensors"))

    win = fresh_window
    dialog = ModelsDialog(win.settings, win.generation, win)
    qtbot.addWidget(dialog)
    assert dialog.add_local(inpainting)
    row = dialog.table.currentRow()
    assert dialog.table.item(row, 0).text() == "my-inpainting.safetensors"
    assert dialog.table.item(row, 1).text() == "inpaint, uncrop" and dialog.table.item(row, 2).text() == "Installed"
    assert dialog.task_combos["inpaint"].findData(inpainting) >= 0 and dialog.task_combos["colorize"].findData(inpainting) < 0

    assert dialog.add_local(lora)  # listed, so the person sees what it is
    row = dialog.table.currentRow()
    assert dialog.table.item(row, 2).text() == ("Cannot be used: my-style.safetensors is a LoRA, which Sandcastle cannot use: "
                                                "a LoRA adds to a model and cannot paint alone; choose a whole SD checkpoint.")
    assert dialog.message.text().startswith("my-style.safetensors is a LoRA")
    assert all(combo.findData(lora) < 0 for combo in dialog.task_combos.values())


def test_models_dialog_downloads_and_deletes(qtbot, fresh_window, hub, monkeypatch):
    from editor.models_dialog import ModelsDialog

    win = fresh_window
    win.settings["hub_endpoint"] = hub.url
    dialog = ModelsDialog(win.settings, win.generation, win)
    qtbot.addWidget(dialog)
    monkeypatch.setattr(dialog, "_rows", dialog._rows + [{"name": "tiny/inpaint", "title": "Tiny", "tasks": "inpaint", "hub_id": "tiny/inpaint",
                                                         "components": ("scheduler", "text_encoder", "tokenizer", "unet", "vae"),
                                                         "licence": "MIT", "estimate": 4_000_000, "about": "", "manual": ""}])
    monkeypatch.setattr(dialog, "rows", lambda: dialog._rows)
    dialog.refresh()
    dialog.select("tiny/inpaint")
    formats = []
    win.generation.downloadProgress.connect(lambda *a: formats.append(dialog.progress.format()))
    with qtbot.waitSignal(win.generation.downloadFinished, timeout=60000):
        qtbot.mouseClick(dialog.download_button, Qt.LeftButton)
    assert formats and "Downloading tiny/inpaint" in formats[-1]
    row = dialog.table.currentRow()
    assert dialog.table.item(row, 2).text() == "Installed"
    monkeypatch.setattr(dialog, "confirm", lambda text: True)
    dialog.delete_selected()
    assert dialog.table.item(dialog.table.currentRow(), 2).text() == "Not installed"
    assert "freeing" in dialog.message.text()


def test_status_bar_shows_device_and_precision(qtbot, fresh_window):
    import torch

    # "auto" picks the graphics card when there is one, else the CPU in float32
    expected = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU · float32"
    qtbot.waitUntil(lambda: fresh_window.status_device.text() != "", timeout=60000)
    assert fresh_window.status_device.text().startswith(expected)


def test_settings_dialog_saves(qtbot, fresh_window):
    from editor.settings import Settings
    from editor.settings_dialog import SettingsDialog

    dialog = SettingsDialog(fresh_window.settings, fresh_window)
    qtbot.addWidget(dialog)
    dialog.combos["precision"].setCurrentText("bfloat16")
    dialog.combos["memory"].setCurrentText("balanced")
    dialog.save()
    saved = Settings.load()
    assert saved["precision"] == "bfloat16" and saved["memory"] == "balanced"
    assert fresh_window.generation.build_request().memory == "balanced" and fresh_window.generation.build_request().dtype == "bfloat16"


def test_a_converted_diffae_folder_can_be_added_for_attributes(qtbot, fresh_window, tmp_path):
    from editor.models_dialog import ModelsDialog
    from engines.testing import write_diffae

    folder = str(write_diffae(tmp_path / "diffae"))
    dialog = ModelsDialog(fresh_window.settings, fresh_window.generation, fresh_window)
    qtbot.addWidget(dialog)
    assert dialog.add_local(folder)
    combo = dialog.task_combos["attributes"]
    combo.setCurrentIndex(combo.findData(folder))
    assert fresh_window.generation.model_for("attributes") == folder


DIT_BY_TASK = {  # issue 23: where each new preset is offered
    "inpaint": {"flux2-klein-4b", "qwen-image-edit-2511", "flux1-fill-dev", "flux1-kontext-dev"},
    "uncrop": {"flux2-klein-4b", "flux1-fill-dev"},
    "edit": {"flux2-klein-4b", "qwen-image-edit-2511", "flux1-kontext-dev"},
    "colorize": {"flux2-klein-4b", "qwen-image-edit-2511"},
    "attributes": set(),
}


def test_the_transformer_presets_are_offered_for_their_tasks_and_the_defaults_stay(qtbot, fresh_window):
    from editor.models_dialog import ModelsDialog

    dialog = ModelsDialog(fresh_window.settings, fresh_window.generation, fresh_window)
    qtbot.addWidget(dialog)
    dit = set().union(*DIT_BY_TASK.values())
    for task, combo in dialog.task_combos.items():
        offered = {combo.itemData(i) for i in range(combo.count())}
        assert offered & dit == DIT_BY_TASK[task], task
    assert {t: c.currentData() for t, c in dialog.task_combos.items()} == {
        "inpaint": "sd15-inpaint", "uncrop": "sd15-inpaint", "colorize": "sd15", "edit": "instruct-pix2pix", "attributes": "diffae-ffhq256"}
    dialog.select("flux2-klein-4b")
    row = dialog.table.currentRow()
    assert dialog.table.item(row, 0).text() == "FLUX.2 [klein] 4B"
    assert dialog.table.item(row, 1).text() == "edit, inpaint, uncrop, colorize"
    assert dialog.table.item(row, 2).text() == "Not installed" and dialog.table.item(row, 3).text() == "about 16.0 GB"
    assert "13 GB of graphics memory" in dialog.about.text() and "Apache-2.0" in dialog.about.text()
    assert "gated" not in dialog.about.text() and dialog.download_button.isEnabled()


def test_a_gated_preset_says_what_to_do_before_anything_downloads(qtbot, fresh_window, hub, monkeypatch):
    from editor.models_dialog import GATED_STATE, ModelsDialog

    win = fresh_window
    win.settings["hub_endpoint"] = hub.url
    dialog = ModelsDialog(win.settings, win.generation, win)
    qtbot.addWidget(dialog)
    dialog.select("flux1-fill-dev")
    row = dialog.table.currentRow()
    assert dialog.table.item(row, 2).text() == GATED_STATE  # seen in the list, before it is even selected
    about = dialog.about.text()
    assert "FLUX.1 Fill [dev] is gated" in about and "accept the FLUX.1 [dev] Non-Commercial License" in about
    assert "https://huggingface.co/black-forest-labs/FLUX.1-Fill-dev" in about and "hf auth login" in about and "HF_TOKEN" in about
    assert "hf auth login" in dialog.table.item(row, 0).toolTip()

    asked = []
    monkeypatch.setattr(dialog, "confirm", lambda text: asked.append(text) and False)
    qtbot.mouseClick(dialog.download_button, Qt.LeftButton)  # declined: nothing is fetched
    assert len(asked) == 1 and "Non-Commercial License" in asked[0] and "hf auth login" in asked[0] and "about 33.7 GB" in asked[0]
    assert hub.requests == [] and win.generation.downloading is None
    assert "was not downloaded" in dialog.message.text() and "hf auth login" in dialog.message.text()

    hub.gated["black-forest-labs/FLUX.1-Fill-dev"] = 403  # went ahead without accepting the licence
    monkeypatch.setattr(dialog, "confirm", lambda text: True)
    with qtbot.waitSignal(win.generation.downloadFailed, timeout=60000):
        qtbot.mouseClick(dialog.download_button, Qt.LeftButton)
    message = dialog.message.text()
    assert message.startswith("black-forest-labs/FLUX.1-Fill-dev is gated") and "FLUX.1 [dev] Non-Commercial License" in message
    assert "https://huggingface.co/black-forest-labs/FLUX.1-Fill-dev" in message and "hf auth login" in message
    assert dialog.table.item(dialog.table.currentRow(), 2).text() == GATED_STATE

    # Choosing it for a task says the same, so Generate's download later is no surprise.
    combo = dialog.task_combos["edit"]
    combo.setCurrentIndex(combo.findData("flux1-kontext-dev"))
    assert win.settings.model_for("edit") == "flux1-kontext-dev"
    assert "FLUX.1 Kontext [dev] is gated" in dialog.message.text() and "hf auth login" in dialog.message.text()
    combo.setCurrentIndex(combo.findData("flux2-klein-4b"))
    assert "gated" not in dialog.message.text()



def test_a_gguf_transformer_asks_for_its_text_encoder_and_vae_then_inpaints(qtbot, tmp_path, monkeypatch, photo):
    """Inpaint with a FLUX.2 [klein] GGUF file the person has: Generate asks to download the preset's
    text encoder and VAE (not its transformer), then the job runs with the file."""
    import huggingface_hub.constants

    from engines.testing_dit import write_dit_model, write_transformer_file
    from tests.hubserver import Hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    file = tmp_path / "flux-2-klein-4b-Q8_0.gguf"
    write_transformer_file(file, "flux2-klein", "Q8_0")
    server = Hub()
    server.add_folder("black-forest-labs/FLUX.2-klein-4B", write_dit_model(tmp_path / "klein", "flux2-klein"))
    server.start()
    win = open_window(qtbot, tmp_path, photo, "--model", str(file), steps=2)
    try:
        win.settings["hub_endpoint"] = server.url
        win.document.mask[200:300, 200:300] = 255
        win.panel.param_widgets["resolution"].setValue(128)
        asked = []
        win.generation.ask_download = lambda status: asked.append((status.title, status.base)) or True
        with qtbot.waitSignal(win.generation.finished, timeout=120000):
            win.generation.generate()
    finally:
        win.shutdown()
        server.stop()
    assert asked == [("flux-2-klein-4b-Q8_0.gguf (FLUX.2 [klein] transformer)", "black-forest-labs/FLUX.2-klein-4B")]
    fetched = [path for _, path, _ in server.requests if path.endswith(".safetensors")]
    assert fetched and not any("/transformer/" in path for path in fetched)
    assert not np.array_equal(win.document.image, photo)


def test_the_models_dialog_says_what_a_transformer_file_still_needs(qtbot, fresh_window, tmp_path, monkeypatch):
    from editor.models_dialog import ModelsDialog
    from engines.testing_dit import write_transformer_file

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    file = tmp_path / "flux-2-klein-4b-Q4_K_M.gguf"
    write_transformer_file(file, "flux2-klein", "Q4_K")
    win = fresh_window
    win.settings["local_models"] = [{"path": str(file), "title": file.name}]
    dialog = ModelsDialog(win.settings, win.generation, win)
    qtbot.addWidget(dialog)
    row = next(r for r in range(dialog.table.rowCount()) if dialog.table.item(r, 0).text() == file.name)
    cells = [dialog.table.item(row, c).text() for c in range(dialog.table.columnCount())]
    assert cells[1] == "inpaint, uncrop, edit, colorize"
    assert cells[2].startswith("Needs the text encoder and VAE of black-forest-labs/FLUX.2-klein-4B")
    assert cells[3] != "0 B"
