"""Sandcastle's server, for real: one `sandcastle serve --demo` (Ray Serve on loopback) for the whole
module, and the CLI's `run --remote` against it, as a person would run them.

The server starts once (Ray takes 30–50 s here) and is always stopped with every process it started;
the last test kills it in the middle of a job, so the tests run in file order.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import blob_mask

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "sandcastle-test-token"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # the server runs with --threads 1: the same float sums in both


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir):
    """The server, with folders of its own and a local hub (tests/hubserver.py, serving the tiny
    inpainting model as tiny/inpaint) for what it downloads."""
    pytest.importorskip("ray.serve")
    from server.launch import LocalServer
    from tests.hubserver import Hub

    from engines.testing_dit import write_dit_model, write_transformer_file

    hub = Hub()
    hub.add_folder("tiny/inpaint", model_dir("inpaint"))
    hub.add_folder("black-forest-labs/FLUX.2-klein-4B", write_dit_model(tmp_path_factory.mktemp("klein-repo"), "flux2-klein"))
    hub.start()
    home = tmp_path_factory.mktemp("server-home")
    models = tmp_path_factory.mktemp("server-models")
    write_transformer_file(models / "flux-2-klein-4b-Q8_0.gguf", "flux2-klein", "Q8_0")
    env = {name: str(home / name.lower()) for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME")}
    env.update(HF_HOME=str(home / "hf"), HF_HUB_OFFLINE="0", HF_ENDPOINT=hub.url, SANDCASTLE_HUB_ENDPOINT=hub.url, **ONE_THREAD)
    local = LocalServer("--demo", "--threads", "1", "--max-body-mb", "8", "--max-pixels", "1000000", "--models-folder", str(models),
                        token=TOKEN, env=env, log=home / "server.log")
    started = time.monotonic()
    try:
        local.start(timeout=240)
    except BaseException:
        hub.stop()
        raise
    local.startup_seconds = time.monotonic() - started
    try:
        yield local
    finally:
        local.stop()
        hub.stop()
        assert not local.alive(), f"processes of the server left running: {[p.pid for p in local.alive()]}"


@pytest.fixture(scope="module")
def files(tmp_path_factory, photo):
    d = tmp_path_factory.mktemp("remote")
    Image.fromarray(photo).save(d / "photo.png")
    Image.fromarray(blob_mask(512, 512, seed=2)).save(d / "mask.png")
    return d


def sandcastle(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})})


class Started:
    """A CLI process whose stderr lines are collected as they come (a thread reads them)."""

    def __init__(self, *args, env=None) -> None:
        import queue
        import threading

        self.process = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *map(str, args)], stderr=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, text=True, cwd=ROOT, env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        self.arrived: queue.Queue = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            self.arrived.put(line)

    def wait_for_line(self, prefix: str, timeout: float = 60.0) -> None:
        import queue

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.arrived.get(timeout=0.5).startswith(prefix):
                    return
            except queue.Empty:
                if self.process.poll() is not None:
                    break
        self.process.kill()
        raise AssertionError(f"no line starting with {prefix!r} within {timeout:g} s: {self.lines}")

    def finish(self, timeout: float) -> list[str]:
        """Every stderr line, once the process has ended."""
        self.process.wait(timeout)
        self.reader.join(10)
        return self.lines


def job_ended(server, timeout: float = 15.0) -> dict:
    """The server's record of its last job, once no job runs."""
    from engines import remote

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = remote.get_json(server.url, "/health", TOKEN)
        if health["jobs"] == 0 and health["last_job"]:
            return health["last_job"]
        time.sleep(0.2)
    raise AssertionError(f"the server still runs a job after {timeout:g} s")


# ---- the wire format, no server ----------------------------------------------------------------


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says width × height, with no pixels behind it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def test_the_wire_round_trips_requests_specs_and_errors():
    from engines import registry, wire
    from engines.api import InputError, ModelUnavailable, OutOfMemory, Request, Task

    rng = np.random.default_rng(0)
    request = Request(Task.COLORIZE, rng.integers(0, 256, (40, 56, 3), np.uint8), mask=rng.integers(0, 256, (40, 56), np.uint8),
                      hints=rng.integers(0, 256, (40, 56, 4), np.uint8), prompt="ça va", guidance_scale=6.5, seed=2**63 - 1,
                      params={"saturation": 1.25, "hint_spread": 12}, job_id=7)
    back, frames = wire.decode_request(wire.encode_request(request, "png", 256), 10**6)
    for name in ("image", "mask", "hints"):
        assert np.array_equal(getattr(back, name), getattr(request, name))
    assert (back.prompt, back.guidance_scale, back.seed, back.params, back.job_id, back.task) == ("ça va", 6.5, 2**63 - 1, request.params, 7, Task.COLORIZE)
    assert frames == {"format": "png", "max_side": 256}
    for task in registry.available():
        spec = registry.get(task).spec
        assert wire.decode_spec(wire.encode_spec(spec)) == spec
    for error in (InputError("a."), ModelUnavailable("b."), OutOfMemory("c."), wire.TokenRefused("d."), wire.ConnectionLost("e.")):
        again = wire.error_from(json.loads(wire.line(wire.error_message(error))))
        assert type(again) is type(error) and str(again) == str(error)
    assert type(wire.error_from(wire.error_message(KeyError("x")))).__name__ == "SandcastleError"
    # A picture is refused by its header, before anything is decoded (this one has no pixels at all).
    with pytest.raises(InputError, match="100000×100000 pixels"):
        wire.decode_png(png_claiming(100_000, 100_000), "image", 10**8)
    with pytest.raises(InputError, match="not a PNG"):
        wire.decode_png(b"GIF89a" + b"\0" * 40, "image", 10**8)


def test_no_server_and_a_silent_server_are_one_sentence_each(files):
    """Without Ray: nothing listening, then a server that answers a job and then says nothing."""
    import http.server
    import threading

    from engines import services, wire
    from engines.api import CancelToken, Request, Task
    from engines.remote import RemoteEngine
    from server.launch import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(wire.ServerUnavailable, match=f"Sandcastle's server at {url} did not answer"):
        services.remote_engine("inpaint", url)
    done = sandcastle("run", "inpaint", "--image", files / "photo.png", "--mask", files / "mask.png", "--remote", url, "--out", files / "none.png")
    assert done.returncode == 3 and done.stderr.startswith(f"sandcastle: Sandcastle's server at {url} did not answer"), done.stderr
    assert len(done.stderr.splitlines()) == 1 and not (files / "none.png").exists()

    class Silent(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            data = wire.line({"type": "alive", "t": time.time()})
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
            time.sleep(3)

        def log_message(self, *args):
            pass

    silent = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Silent)
    threading.Thread(target=silent.serve_forever, daemon=True).start()
    try:
        from engines.inpaint import SPEC

        engine = RemoteEngine(f"http://127.0.0.1:{silent.server_address[1]}", "", SPEC, silence=1.0)
        image = np.zeros((64, 64, 3), np.uint8)
        began = time.monotonic()
        with pytest.raises(wire.ConnectionLost, match="sent nothing for 1 s"):
            engine.run(Request(Task.INPAINT, image, np.full((64, 64), 255, np.uint8)), lambda s: None, CancelToken())
        assert time.monotonic() - began < 2.5
    finally:
        silent.shutdown()
        silent.server_close()


# ---- against the server ------------------------------------------------------------------------


def test_remote_inpaint_streams_every_step_and_equals_the_local_run(server, files):
    out, local, steps = files / "remote.png", files / "local.png", files / "steps"
    done = sandcastle("run", "inpaint", "--image", files / "photo.png", "--mask", files / "mask.png", "--prompt", "a red door", "--steps", "4",
                      "--seed", "5", "--remote", server.url, "--token", TOKEN, "--out", out, "--previews", steps)
    assert done.returncode == 0, done.stderr
    assert [line.split()[1] for line in done.stderr.splitlines() if line.startswith("step")] == ["1/4", "2/4", "3/4", "4/4"], done.stderr
    assert sorted(p.name for p in steps.iterdir()) == [f"step-00{k}.png" for k in range(1, 5)]
    assert Image.open(steps / "step-004.png").size == (512, 512)
    # The same job in this computer's own process, same demo weights and seed: the same bytes.
    done = sandcastle("run", "inpaint", "--image", files / "photo.png", "--mask", files / "mask.png", "--prompt", "a red door", "--steps", "4",
                      "--seed", "5", "--demo", "--out", local, env=ONE_THREAD)
    assert done.returncode == 0, done.stderr
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(local)))


def test_steps_arrive_while_the_job_runs(server, files):
    """In-process, as the window uses it: a StepPreview per step as it is made (with the server's clock
    in the message), frames decoded only when asked, then the result."""
    from engines import services
    from engines.api import CancelToken, Request, Task

    engine = services.remote_engine("inpaint", server.url, TOKEN)
    image, mask = np.asarray(Image.open(files / "photo.png")), np.asarray(Image.open(files / "mask.png"))
    request = Request(Task.INPAINT, image, mask, steps=6, seed=1, job_id=42)
    engine.check(request)
    seen = []
    result = engine.run(request, lambda step: seen.append((step, time.time())), CancelToken())
    arrived = time.time()
    steps = [(step, at) for step, at in seen if not step.stage]
    assert [step.step for step, _ in steps] == list(range(1, 7)) and all(step.total == 6 and step.job_id == 42 for step, _ in steps)
    assert all(at < arrived for _, at in steps)
    x, y, w, h = steps[0][0].box
    assert 0 < w <= 512 and 0 < h <= 512 and result.box == steps[0][0].box
    picture = steps[-1][0].picture()
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    assert result.image.shape == image.shape and result.info["server"] == server.url


def test_a_hub_model_the_server_lacks_is_downloaded_there_first(server, files):
    """The server downloads a hub model on first use (never this computer), saying how far it got."""
    done = sandcastle("run", "inpaint", "--image", files / "photo.png", "--mask", files / "mask.png", "--model", "tiny/inpaint", "--steps", "2",
                      "--remote", server.url, "--token", TOKEN, "--out", files / "downloaded.png")
    assert done.returncode == 0, done.stderr
    assert "The server is downloading tiny/inpaint" in done.stderr and " MB/s" in done.stderr, done.stderr
    assert (files / "downloaded.png").is_file()
    from engines import services

    assert services.model_status("tiny/inpaint").installed is False  # this computer downloaded nothing


def test_a_gguf_file_in_the_servers_folder_gets_its_text_encoder_and_vae_there(server, files):
    """A transformer file the server holds runs once the server has fetched its preset's text encoder
    and VAE (not the preset's transformer), saying so."""
    done = sandcastle("run", "edit", "--image", files / "photo.png", "--prompt", "make it winter", "--model", "flux-2-klein-4b-Q8_0.gguf",
                      "--steps", "2", "--param", "resolution=128", "--remote", server.url, "--token", TOKEN, "--out", files / "klein.png")
    assert done.returncode == 0, done.stderr
    assert "The server is downloading black-forest-labs/FLUX.2-klein-4B" in done.stderr, done.stderr
    assert (files / "klein.png").is_file()


def test_cancel_stops_the_server_job_within_one_step(server, files):
    out = files / "cancelled.png"
    job = Started("run", "inpaint", "--image", files / "photo.png", "--mask", files / "mask.png", "--steps", "400", "--remote", server.url,
                  "--token", TOKEN, "--out", out)
    job.wait_for_line("step 2/400")
    job.process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    lines = job.finish(timeout=30)
    assert time.monotonic() - sent < 5
    assert job.process.returncode == 128 + signal.SIGINT and lines[-1] == "sandcastle: stopped by Ctrl+C; nothing was written.", lines
    assert not out.exists()
    last = job_ended(server)
    assert last["outcome"] == "cancelled" and last["steps"] < 400
    assert last["steps_after_cancel"] <= 1, last  # closing the stream cancelled the engine's token: it stopped at its next step


def test_tokens_paths_and_sizes_are_refused(server, files):
    from engines import remote, services, wire
    from engines.api import CancelToken, InputError, ModelUnavailable, Request, Task

    for token in ("wrong", ""):
        done = sandcastle("run", "inpaint", "--image", files / "photo.png", "--mask", files / "mask.png", "--remote", server.url,
                          *(["--token", token] if token else []), "--out", files / "refused.png", env={"SANDCASTLE_TOKEN": ""})
        assert done.returncode == 1 and done.stderr.startswith("sandcastle: The server refused the token"), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    with pytest.raises(wire.TokenRefused):
        remote.get_json(server.url, "/models", "wrong")
    assert not (files / "refused.png").exists()
    # The token from the environment; the server's own models and its device.
    names = {m["name"]: m for m in services.remote_models(server.url, TOKEN)}
    assert names["demo-inpaint"]["installed"] and "inpaint" in names["demo-inpaint"]["tasks"]
    assert services.remote_status(server.url, TOKEN) == f"Remote: 1 × CPU at {server.url}"
    assert "did not answer" in services.remote_status("http://127.0.0.1:9", "")
    # A path never reaches the server from the CLI…
    done = sandcastle("run", "inpaint", "--image", files / "photo.png", "--mask", files / "mask.png", "--model", files, "--remote", server.url,
                      "--out", files / "refused.png", env={"SANDCASTLE_TOKEN": TOKEN})
    assert done.returncode == 2 and "never a path" in done.stderr, done.stderr
    # …and the server refuses one sent anyway, and settings that name folders.
    image, mask = np.asarray(Image.open(files / "photo.png")), np.asarray(Image.open(files / "mask.png"))
    engine = services.remote_engine("inpaint", server.url, TOKEN)
    for model in ("/etc", "../x", str(files), "nobody/has-this"):
        with pytest.raises((InputError, ModelUnavailable)) as refused:  # InputError, or ModelUnavailable for the hub id
            engine.run(Request(Task.INPAINT, image, mask, model=model, steps=1), lambda s: None, CancelToken())
        assert model in str(refused.value) or "no copy" in str(refused.value)
    attributes = services.remote_engine("attributes", server.url, TOKEN)
    with pytest.raises(InputError, match="takes no paths"):
        attributes.run(Request(Task.ATTRIBUTES, image, params={"directions_folder": "/tmp"}), lambda s: None, CancelToken())
    # Sizes: the body by its declared length, the picture by its PNG header (this server takes 1 Mpx, 8 MB).
    big = np.zeros((1001, 1000, 3), np.uint8)
    too_big = Request(Task.INPAINT, big, np.full((1001, 1000), 255, np.uint8), steps=1)
    with pytest.raises(InputError, match="at most 1,000,000 pixels"):
        engine.check(too_big)  # here, from the limits the server told: nothing is sent
    with pytest.raises(InputError, match="at most 1,000,000 pixels"):
        engine.run(too_big, lambda s: None, CancelToken())  # and the server's own check, had it been sent anyway
    # The picture a job makes is bounded too: a small one asking uncrop for a huge result is refused there.
    uncrop = services.remote_engine("uncrop", server.url, TOKEN)
    grow = Request(Task.UNCROP, np.zeros((64, 64, 3), np.uint8), steps=1, params={"right": 4000, "bottom": 4000})
    with pytest.raises(InputError, match="result would be 4064×4064 pixels"):
        uncrop.run(grow, lambda s: None, CancelToken())
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.putrequest("POST", "/run")
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.putheader("Content-Length", str(9 << 20))
    conn.endheaders()
    answer = conn.getresponse()
    assert answer.status == 413 and "at most 8 MB" in json.loads(answer.read())["message"]
    conn.close()


def test_the_window_with_a_remote_device_shows_every_step_and_the_servers_models(qtbot, server, files, tmp_path, monkeypatch):
    """Settings → Device → remote: the engine's spec comes from the server, each step's frame reaches the
    canvas, the result is one undo step, the status bar names the server, and Models lists its models."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    from editor.models_dialog import ModelsDialog
    from editor.settings import Settings

    settings = Settings.load()
    settings["device"], settings["remote_url"], settings["remote_token"], settings["autosave_seconds"] = "remote", server.url, TOKEN, 0
    settings.save()
    import main

    win = main.build([str(files / "photo.png")])
    win.files.confirm_discard = lambda: True
    qtbot.addWidget(win)
    win.show()
    try:
        qtbot.waitUntil(lambda: win.panel.generate.isEnabled(), timeout=60000)
        assert win.status_device.text().startswith("Remote:") and server.url in win.status_device.text()
        win.panel.steps.setValue(3)
        win.document.mask[:] = np.asarray(Image.open(files / "mask.png"))
        before = win.document.image.copy()
        previews, done = [], []
        win.generation.preview.connect(lambda *a: previews.append(a))
        win.generation.finished.connect(lambda *a: done.append("done"))
        win.generation.failed.connect(lambda job, message: done.append(message))
        assert win.generation.generate(), win.panel.message.text()
        qtbot.waitUntil(lambda: bool(done), timeout=120000)
        assert done == ["done"] and previews, done
        assert win.document.undo_stack.count() == 1 and not np.array_equal(win.document.image, before)
        dialog = ModelsDialog(win.settings, win.generation, win)
        qtbot.addWidget(dialog)
        qtbot.waitUntil(lambda: dialog.table.rowCount() > 0, timeout=30000)
        names = [dialog.table.item(r, 0).text() for r in range(dialog.table.rowCount())]
        assert names and not dialog.download_button.isVisible()
        dialog.reject()
    finally:
        win.shutdown()


def test_the_server_dying_mid_job_is_one_line_and_nothing_is_written(server, files):
    """Last: it kills the module's server."""
    out = files / "lost.png"
    job = Started("run", "inpaint", "--image", files / "photo.png", "--mask", files / "mask.png", "--steps", "500", "--remote", server.url,
                  "--token", TOKEN, "--out", out)
    job.wait_for_line("step 2/500")
    server.kill()
    rest = job.finish(timeout=90)
    assert job.process.returncode == 1, rest
    assert rest and rest[-1].startswith(f"sandcastle: The connection to Sandcastle's server at {server.url} was lost during the job"), rest
    assert not any(line.startswith("sandcastle:") for line in rest[:-1])
    assert not out.exists()
