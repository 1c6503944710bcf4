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
    assert s.migrate({"schema": 2, "memory": "huge"})["memory"] == "auto"


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
