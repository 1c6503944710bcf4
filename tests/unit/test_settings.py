import json
import logging

import pytest

from editor import settings as s


def test_defaults_when_there_is_no_file(tmp_path):
    cfg = s.Settings.load(tmp_path / "settings.json")
    assert cfg["schema"] == s.SCHEMA and cfg["device"] == "auto" and cfg.model_for("inpaint") is None


def test_round_trip(tmp_path):
    cfg = s.Settings.load(tmp_path / "cfg" / "settings.json")
    cfg["precision"] = "bfloat16"
    cfg.set_model_for("inpaint", "sdxl-inpaint")
    cfg.save()
    again = s.Settings.load(tmp_path / "cfg" / "settings.json")
    assert again["precision"] == "bfloat16" and again.model_for("inpaint") == "sdxl-inpaint"
    assert json.loads((tmp_path / "cfg" / "settings.json").read_text())["schema"] == s.SCHEMA


def test_migration_from_schema_1(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"version": 1, "model": "/models/my-inpaint", "fp16": True, "low_vram": True, "device": "cuda"}))
    cfg = s.Settings.load(path)
    assert cfg["schema"] == 2
    assert cfg.model_for("inpaint") == "/models/my-inpaint"
    assert cfg["precision"] == "float16" and cfg["memory"] == "lowest" and cfg["device"] == "cuda"
    assert "model" not in cfg.data and "fp16" not in cfg.data


def test_a_broken_file_is_kept_aside_and_defaults_used(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text("{ not json")
    cfg = s.Settings.load(path)
    assert cfg["device"] == "auto"
    assert [p.name.startswith("settings.json.broken-") for p in tmp_path.iterdir()] == [True]


def test_newer_schema_is_not_silently_downgraded(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"schema": 99}))
    cfg = s.Settings.load(path)
    assert cfg["schema"] == s.SCHEMA
    assert any(p.name.startswith("settings.json.broken-") for p in tmp_path.iterdir())


def test_values_are_checked():
    cfg = s.Settings()
    with pytest.raises(ValueError):
        cfg["device"] = "tpu"
    with pytest.raises(KeyError):
        cfg["colour"] = 1
    assert s.checked(s.migrate({"schema": 2, "memory": "huge"}))[0]["memory"] == "auto"


BAD_VALUES = {  # key: values a hand-edited file may hold; each must fall back to the default
    "device": ["tpu", 3], "precision": ["half", None], "memory": ["huge"], "task_models": [[], {"inpaint": 3}, "x"],
    "local_models": ["x", [{"title": "no path"}], [3]], "pickle_allowed": ["a.ckpt", [1]], "asked_downloads": [{}],
    "hub_endpoint": [5, "ftp://mirror"], "mask_colour": ["red", "#12345", 0xFF0000], "mask_opacity": ["half", 0, 7, float("nan")],
    "hint_opacity": [-1, True], "recent_files": [None, [3]], "max_megapixels": [0, 1e20, "120"],
    "autosave_seconds": [1e20, -5, 2.5, "60"], "compile_unet": ["yes", 1],
}


@pytest.mark.parametrize("key, value", [(k, v) for k, values in BAD_VALUES.items() for v in values])
def test_a_wrong_value_in_the_file_falls_back_to_its_default_and_is_said_once(tmp_path, key, value):
    path = tmp_path / "settings.json"
    good = {"schema": 2, "mask_opacity": 0.3, "recent_files": ["a.png"]}
    path.write_text(json.dumps({**good, key: value}))
    loaded = s.Settings.load(path)
    assert loaded[key] == s.DEFAULTS[key] and key in loaded.notice
    kept = list(tmp_path.glob("settings.json.invalid-*"))
    assert len(kept) == 1 and json.dumps(json.loads(kept[0].read_text())[key]) == json.dumps(value)  # the person's file, kept once
    for other, expected in good.items():
        if other != key:
            assert loaded[other] == expected  # one wrong value costs that value only
    again = s.Settings.load(path)
    assert again.notice == "" and again[key] == s.DEFAULTS[key] and len(list(tmp_path.glob("settings.json.invalid-*"))) == 1


def test_logs_rotate_in_the_log_folder(tmp_path):
    path = s.setup_logging(tmp_path / "logs")
    logger = logging.getLogger("sandcastle.test")
    for i in range(4000):
        logger.info("line %d %s", i, "x" * 400)
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files[0] == "sandcastle.log" and "sandcastle.log.1" in files
    assert path.stat().st_size <= 1_000_000
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, logging.handlers.RotatingFileHandler)]:
        root.removeHandler(h)
        h.close()


def test_a_servers_model_names_are_kept_apart_from_this_computers(tmp_path, monkeypatch):
    """Device remote keeps its own per-task choices: a local folder is never sent to the server, and a
    server's name never becomes this computer's model when the device comes back."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    from editor.settings import Settings

    settings = Settings.load()
    settings.set_model_for("inpaint", "/home/me/models/my-inpaint")
    settings["device"], settings["remote_url"] = "remote", "http://gpu-box:8000"
    assert settings.model_for("inpaint") is None
    settings.set_model_for("inpaint", "demo-inpaint")
    settings["device"] = "auto"
    assert settings.model_for("inpaint") == "/home/me/models/my-inpaint"
    settings["device"] = "remote"
    assert settings.model_for("inpaint") == "demo-inpaint"
