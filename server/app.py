"""Sandcastle's engines as a Ray Serve application: `sandcastle serve`.

Each replica holds the same engines the app runs in-process (`registry.get(task)`), one job at a time
on its device; Ray Serve places one replica per GPU by default and spreads jobs over them. The HTTP
pages (see `engines.wire` for the formats):

    GET  /health    {"ok", "device", "summary", "replicas", "gpus_per_replica", "jobs", "last_job", "demo", "format"}
    GET  /engines   {"engines": [spec, …], "limits": {"max_pixels", "max_body_bytes"}} — each engine's EngineSpec, as the client rebuilds it
    GET  /models    {"models": [{"name", "title", "tasks", "installed"}, …]} — the names a job may ask for
    POST /run       a job; answers a stream of step messages and then a result or an error

Models are resolved here: a job names a demo model (--demo), a model in --models-folder by its name,
or a preset or hub id, which this server downloads into its own cache on first use (streaming the
progress as stage lines) unless it runs offline or with --no-downloads; no model means the engine's
default (with --demo, the demo model).

Safety: with a token (--token or SANDCASTLE_TOKEN) every request must carry it (Authorization:
Bearer, compared in constant time, 401 otherwise); a job's body and its pictures are bounded (the
PNG header is read before anything is decoded); no path on the server is ever taken from a request:
a model is one of the names above, settings that name folders and pickle opt-ins are refused, and
the device is the replica's own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
import os
import queue
import re
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from engines import registry, services, wire
from engines.sources import HUB_ID  # the shape a hub id has, as the engines take it
from engines.api import CancelToken, Cancelled, InputError, ModelUnavailable, Request, SandcastleError, StepPreview, default_model_for

LOG = logging.getLogger("ray.serve.sandcastle")  # Serve's handlers and level: the replica's log file
APP_NAME = "sandcastle"
HEARTBEAT_SECONDS = 2.0  # an "alive" line when nothing else was said this long (the client gives up after 60 s of silence)
DEFAULT_MAX_BODY_MB = 512
DEFAULT_MAX_PIXELS = 100_000_000  # 10k × 10k
PATH_PARAMS = re.compile(r"(folder|path|file|dir)s?$")  # settings that name something on disk: a server takes none from a job

# The demo models (--demo): the name a job uses, the task and parameters services.demo_model builds it
# for, and the tasks it serves.
DEMO_MODELS = {
    "demo-inpaint": ("inpaint", {}, ("inpaint", "uncrop")),
    "demo-img2img": ("edit", {"method": "img2img"}, ("edit", "colorize")),
    "demo-instruct": ("edit", {"method": "instruct"}, ("edit",)),
    "demo-diffae": ("attributes", {}, ("attributes",)),
}
DEMO_DEFAULTS = {"inpaint": "demo-inpaint", "uncrop": "demo-inpaint", "colorize": "demo-img2img", "attributes": "demo-diffae"}


def token_digest(token: str) -> str:
    """What the replicas keep of the token: its SHA-256, so the token itself is not in the cluster's state."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest() if token else ""


def folder_models(folders: list[str]) -> dict[str, str]:
    """The models in `--models-folder` folders, by name: each subfolder that is a diffusers model (or a
    DiffAE folder), and each .safetensors or .gguf file. The first folder wins a name both have."""
    found: dict[str, str] = {}
    for folder in folders:
        base = Path(folder).expanduser()
        if not base.is_dir():
            continue
        for entry in sorted(base.iterdir()):
            usable = (entry.is_dir() and ((entry / "model_index.json").is_file() or (entry / "autoencoder.safetensors").is_file())) or (
                entry.is_file() and entry.suffix.lower() in (".safetensors", ".gguf"))
            if usable and not entry.name.startswith(".") and entry.name not in found:
                found[entry.name] = str(entry.resolve())
    return found


def demo_model(task: str, params: dict[str, Any]) -> str:
    """services.demo_model, one replica at a time: replicas on one computer share its cache folder, and
    the first job of each writes the model there."""
    import platformdirs
    from filelock import FileLock

    lock = Path(platformdirs.user_cache_dir("sandcastle")) / "demo-models.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock), timeout=600):
        return services.demo_model(task, params)


def describe_device() -> tuple[str, str]:
    """(the device's name, one line about it) for /health; imports torch."""
    import torch

    summary = services.device_summary()
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0), summary
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "Apple GPU", summary
    return "CPU", summary


def error_status(exc: BaseException) -> int:
    if isinstance(exc, wire.TokenRefused):
        return 401
    if isinstance(exc, InputError):
        return 400
    if isinstance(exc, ModelUnavailable):
        return 409
    return 500


class SandcastleServer:
    """One replica: the engines, a lock so one job at a time uses the device, and the HTTP pages."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        if options.get("threads"):
            import torch

            torch.set_num_threads(int(options["threads"]))  # Ray gives a worker one thread unless told; the app's own default is this
        self.engines = {}
        for task in registry.available():
            try:
                self.engines[task] = registry.get(task)
            except Exception as exc:  # one engine that cannot load (a missing extra) must not take the others down
                LOG.warning("the %s engine is not served: %s", task, exc)
        self.folders = folder_models(options.get("models_folders", []))
        self.device, self.summary = describe_device()
        self.device_lock = threading.Lock()
        self.jobs = 0
        self.last_job: dict[str, Any] | None = None
        self.counter = threading.Lock()

    # ---- HTTP ---------------------------------------------------------------------------------

    async def __call__(self, request):
        from starlette.responses import JSONResponse

        if not self.authorized(request.headers.get("authorization", "")):
            return self.refusal(wire.TokenRefused("The server refused the token."))
        path, method = request.url.path.rstrip("/") or "/", request.method
        try:
            if path == "/health" and method == "GET":
                return JSONResponse(self.health())
            if path == "/engines" and method == "GET":
                return JSONResponse({"engines": [self.spec(engine) for engine in self.engines.values()],
                                     "limits": {"max_pixels": int(self.options.get("max_pixels", DEFAULT_MAX_PIXELS)),
                                                "max_body_bytes": int(self.options.get("max_body_bytes", DEFAULT_MAX_BODY_MB << 20))}})
            if path == "/models" and method == "GET":
                return JSONResponse({"models": self.models()})
            if path == "/run" and method == "POST":
                return await self.run(request)
        except SandcastleError as exc:
            return self.refusal(exc)
        except Exception as exc:
            LOG.error("failed on %s %s:\n%s", method, path, traceback.format_exc())
            return self.refusal(exc)
        return JSONResponse({"type": "error", "kind": "InputError", "message": f"Sandcastle's server has no page {method} {path}."}, status_code=404)

    def authorized(self, header: str) -> bool:
        digest = self.options.get("token_digest", "")
        if not digest:
            return True
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            given = ""
        return hmac.compare_digest(token_digest(given.strip()).encode("ascii"), digest.encode("ascii")) and bool(given.strip())

    @staticmethod
    def refusal(exc: BaseException):
        from starlette.responses import JSONResponse

        return JSONResponse(wire.error_message(exc), status_code=error_status(exc))

    def health(self) -> dict[str, Any]:
        return {"ok": True, "server": "sandcastle", "format": wire.FORMAT, "device": self.device, "summary": self.summary,
                "replicas": self.options.get("replicas", 1), "gpus_per_replica": self.options.get("gpus_per_replica", 0),
                "jobs": self.jobs, "last_job": self.last_job, "demo": bool(self.options.get("demo")), "time": time.time()}

    def spec(self, engine) -> dict[str, Any]:
        spec = engine.spec
        default = spec.default_model
        chooser = getattr(engine, "default_model_for", None)
        by = None
        if chooser is not None:  # the default depends on a parameter (edit: its method): say which model each value uses
            for p in spec.params:
                if p.choices:
                    models = {value: chooser({p.name: value}) for value in p.choices}
                    if len(set(models.values())) > 1:
                        by = {"by": p.name, "models": models}
                        break
        if self.options.get("demo"):
            task = spec.tasks[0].value
            default = DEMO_DEFAULTS.get(task) or ("demo-instruct" if task == "edit" else "")
            if by is not None:
                by = {"by": by["by"], "models": {value: ("demo-img2img" if value == "img2img" else "demo-instruct") for value in by["models"]}}
        return wire.encode_spec(dataclasses.replace(spec, default_model=default), by)

    def models(self) -> list[dict[str, Any]]:
        listed = []
        if self.options.get("demo"):
            listed += [{"name": name, "title": f"Demo model ({name[5:]}, random weights)", "tasks": list(tasks), "installed": True,
                        "about": "A tiny random-weight model (sandcastle serve --demo): everything runs for real; the pictures are noise."}
                       for name, (_, _, tasks) in DEMO_MODELS.items()]
        listed += [{"name": name, "title": name, "tasks": list(services.model_tasks(path)), "installed": True, "about": "In the server's models folder."}
                   for name, path in self.folders.items()]
        served = {task.value for engine in self.engines.values() for task in engine.spec.tasks}
        for preset in services.model_presets():
            if preset.hub_id and served & set(preset.tasks):
                status = services.model_status(preset.id)
                listed.append({"name": preset.id, "title": preset.title, "tasks": list(preset.tasks), "installed": status.installed,
                               "licence": preset.licence, "about": preset.description})
        return listed

    # ---- a job --------------------------------------------------------------------------------

    async def run(self, http):
        from starlette.responses import StreamingResponse

        limit = int(self.options.get("max_body_bytes", DEFAULT_MAX_BODY_MB << 20))
        length = http.headers.get("content-length", "")
        if not length.isdigit():
            raise InputError("A job must say its length (Content-Length).")
        if int(length) > limit:
            return self.too_large(int(length), limit)
        body = bytearray()
        async for chunk in http.stream():
            body += chunk
            if len(body) > limit:
                return self.too_large(len(body), limit)
        request, frames = await asyncio.to_thread(wire.decode_request, bytes(body), int(self.options.get("max_pixels", DEFAULT_MAX_PIXELS)))
        del body
        engine = self.engines.get(request.task.value)
        if engine is None:
            raise InputError(f"This server has no engine for {request.task.value}.")
        request, fetch = await asyncio.to_thread(self.admit, request, engine)
        await asyncio.to_thread(engine.check, request)
        return StreamingResponse(self.stream(engine, request, frames, fetch), media_type=wire.STREAM_MEDIA_TYPE)

    @staticmethod
    def too_large(size: int, limit: int):
        from starlette.responses import JSONResponse

        message = f"The job is {size / 2**20:.0f} MB; this server takes jobs of at most {limit / 2**20:.0f} MB (its --max-body-mb)."
        return JSONResponse({"type": "error", "kind": "InputError", "message": message}, status_code=413)

    def admit(self, request: Request, engine) -> tuple[Request, str | None]:
        """The request as this server runs it: its model resolved here, never a path from the job;
        settings that name folders and pickle opt-ins refused; the device the replica's own. With it,
        the hub model to download first, when this server has no copy yet (None when it has)."""
        if request.allow_pickle:
            raise InputError("Sandcastle's server loads no pickle-based model files.")
        for p in engine.spec.params:
            if PATH_PARAMS.search(p.name) and request.params.get(p.name):
                raise InputError(f"{p.label} names a place on this computer; Sandcastle's server takes no paths from a job.")
        self.check_result_size(request, engine)
        model, fetch = self.model_path(request, engine)
        return dataclasses.replace(request, model=model, device=None), fetch

    def check_result_size(self, request: Request, engine) -> None:
        """The picture a job makes is bounded like the ones it sends: uncrop grows it by what the job asks
        (an 8×8 picture could otherwise ask for a gigapixel), every other task keeps its size."""
        height, width = request.image.shape[:2]
        if engine.spec.id == "uncrop":
            values = engine.spec.values(request.params)
            width, height = width + values["left"] + values["right"], height + values["top"] + values["bottom"]
        limit = int(self.options.get("max_pixels", DEFAULT_MAX_PIXELS))
        if width * height > limit:
            raise InputError(f"The result would be {width}×{height} pixels; Sandcastle's server makes pictures up to {limit / 1e6:g} million pixels.")

    def model_path(self, request: Request, engine) -> tuple[str | None, str | None]:
        """(the model the engine gets, a hub model to download first or None)."""
        name = request.model
        if not name and self.options.get("demo"):
            return demo_model(request.task.value, request.params), None
        if not name:  # the engine's default
            default = default_model_for(engine, engine.spec.values(request.params))
            hub = default and any(default in (p.id, p.hub_id) for p in services.model_presets())
            return None, self.missing(default) if hub else None
        if self.options.get("demo") and name in DEMO_MODELS:
            task, params, _ = DEMO_MODELS[name]
            return demo_model(task, params), None
        if name in self.folders:
            path = self.folders[name]  # a transformer file may still need its preset's text encoder and VAE
            return path, (self.missing(path) if Path(path).is_file() else None)
        presets = {p.id for p in services.model_presets() if p.hub_id}
        hub_shaped = HUB_ID.match(name) is not None and not any(part in (".", "..") for part in name.split("/"))
        if (name in presets or hub_shaped) and not Path(name).exists():  # never a relative path that happens to exist here
            return name, self.missing(name)
        raise InputError(f"Sandcastle's server has no model called {name!r}; it takes the names it lists (its /models), never a path.")

    def missing(self, name: str) -> str | None:
        """`name` when this server has no copy of that hub model and may download it; None when it has one;
        ModelUnavailable when it may not (offline, or started with --no-downloads)."""
        status = services.model_status(name)
        if status.installed:
            return None
        hub_id = status.hub_to_fetch
        if status.kind == "file" and not status.base:
            raise ModelUnavailable(status.unusable or f"Sandcastle's server cannot use {Path(name).name}.")
        if self.options.get("no_downloads") or services.is_offline():
            why = "it runs offline" if services.is_offline() else "it was started with --no-downloads"
            raise ModelUnavailable(f"Sandcastle's server has no copy of {hub_id} and downloads none ({why}); whoever runs it can "
                                   f"download it there (hf download {hub_id}), or choose a model it has.")
        return name

    async def stream(self, engine, request: Request, frames: dict[str, Any], fetch: str | None = None):
        loop = asyncio.get_running_loop()
        out: asyncio.Queue = asyncio.Queue()
        job = Job(self, engine, request, frames, lambda data: loop.call_soon_threadsafe(out.put_nowait, data), fetch)
        job.start()
        finished = False
        try:
            while True:
                try:
                    data = await asyncio.wait_for(out.get(), HEARTBEAT_SECONDS)
                except asyncio.TimeoutError:
                    yield wire.line({"type": "alive", "t": time.time()})
                    continue
                if data is None:
                    finished = True
                    return
                yield data
        finally:
            if not finished:  # the client went away (or cancelled): the engine stops at its next step
                job.cancel()


class Job:
    """One job on a replica: a thread runs the engine (waiting for the device), a second one renders
    and encodes each step's frame, so the denoising thread only hands over, as in the app."""

    def __init__(self, server: SandcastleServer, engine, request: Request, frames: dict[str, Any], emit, fetch: str | None = None) -> None:
        self.server, self.engine, self.request, self.frames, self.emit = server, engine, request, frames, emit
        self.fetch = fetch
        self.token = CancelToken()
        self.steps: queue.Queue = queue.Queue()
        self.last_step = 0
        self.cancelled_at: tuple[float, int] | None = None

    def start(self) -> None:
        threading.Thread(target=self.work, name="sandcastle-job", daemon=True).start()

    def cancel(self) -> None:
        if self.cancelled_at is None:
            self.cancelled_at = (time.monotonic(), self.last_step)
        self.token.cancel()

    def on_step(self, step: StepPreview) -> None:  # on the denoising thread: only hand over
        if not step.stage:
            self.last_step = step.step
        self.steps.put((step, time.time()))

    def stage(self, text: str) -> None:
        """A line for the progress bar before the steps (waiting, downloading)."""
        self.on_step(StepPreview(self.request.job_id, 0, 0, None, (0, 0, 0, 0), stage=text))

    def download(self, name: str) -> None:
        """Fetch a hub model this server has no copy of, saying how far it got; one job at a time per
        model (others wait for it), outside the device lock; a cancel stops it (the next resumes it)."""
        import platformdirs
        from filelock import FileLock, Timeout

        status = services.model_status(name)
        hub_id = status.hub_to_fetch
        lock = Path(platformdirs.user_cache_dir("sandcastle")) / "downloads" / (re.sub(r"[^\w.-]", "_", hub_id) + ".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        held, said = FileLock(str(lock)), False
        while True:
            try:
                held.acquire(timeout=0.5)
                break
            except Timeout:
                self.token.raise_if_cancelled()
                if not said:
                    said = True
                    self.stage(f"Waiting for another job's download of {hub_id}…")
        try:
            if services.model_status(name).installed:
                return
            self.stage(f"The server is downloading {hub_id} ({status.licence or 'see its model page for the licence'})…")
            last = [0.0]

            def show(p) -> None:
                if p.done_bytes == p.total_bytes or p.done_bytes - last[0] >= 0.02 * p.total_bytes:
                    last[0] = p.done_bytes
                    self.stage(f"The server is downloading {hub_id}: {p.done_bytes / 1e6:.0f}/{p.total_bytes / 1e6:.0f} MB  "
                               f"{p.bytes_per_second / 1e6:.1f} MB/s")

            services.download_model(hub_id, status.components, show, self.token, os.environ.get("SANDCASTLE_HUB_ENDPOINT"))
        finally:
            held.release()

    def encode(self) -> None:
        fmt, max_side = self.frames.get("format", "jpeg"), self.frames.get("max_side", 0)
        while True:
            item = self.steps.get()
            if item is None:
                return
            step, made = item
            frame = None
            if fmt != "none" and not step.stage and not self.token.cancelled:
                try:
                    picture = step.picture()
                    frame = wire.frame_bytes(picture, fmt, max_side) if picture is not None else None
                except Exception:
                    LOG.warning("a preview could not be made:\n%s", traceback.format_exc())
            self.emit(wire.line(wire.step_message(step, frame, fmt, made, time.time())))

    def work(self) -> None:
        server, started = self.server, time.monotonic()
        with server.counter:
            server.jobs += 1
        encoder = threading.Thread(target=self.encode, name="sandcastle-frames", daemon=True)
        encoder.start()
        outcome, message = "done", None
        try:
            if self.fetch:
                self.download(self.fetch)
            waiting = False
            while not server.device_lock.acquire(timeout=0.2):
                self.token.raise_if_cancelled()
                if not waiting:
                    waiting = True
                    self.stage("Waiting for another job on the server…")
            try:
                self.token.raise_if_cancelled()
                result = self.engine.run(self.request, self.on_step, self.token)
            finally:
                server.device_lock.release()
            message = wire.result_message(result)
        except Cancelled as exc:
            outcome, message = "cancelled", wire.error_message(exc)
        except SandcastleError as exc:
            outcome, message = "refused", wire.error_message(exc)
        except BaseException as exc:
            LOG.error("a %s job failed:\n%s", self.request.task.value, traceback.format_exc())
            outcome, message = "failed", wire.error_message(exc)
        finally:
            self.steps.put(None)
            encoder.join()  # every step goes out before the answer
            if message is not None:
                self.emit(wire.line(message))
            self.emit(None)
            record = {"task": self.request.task.value, "outcome": outcome, "steps": self.last_step, "seconds": time.monotonic() - started}
            if self.cancelled_at is not None:
                record["steps_after_cancel"] = self.last_step - self.cancelled_at[1]
                record["seconds_after_cancel"] = time.monotonic() - self.cancelled_at[0]
            with server.counter:
                server.jobs -= 1
                server.last_job = record
            LOG.info("job %s", record)


# ---- `sandcastle serve` --------------------------------------------------------------------------


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def cpu_threads(replicas: int) -> int:
    """Torch threads for each CPU replica: the machine's cores shared out (torch's own default is the
    core count; a Ray worker would otherwise get one thread)."""
    try:
        import psutil

        cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, replicas))


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_server(args) -> int:
    """Deploy the engines and serve until SIGINT or SIGTERM; then take the application (and a local Ray
    started here) down. `args`: host, port, address, demo, models_folder (list), token, replicas,
    gpus_per_replica, threads, max_body_mb, max_pixels."""
    token = args.token if args.token is not None else os.environ.get("SANDCASTLE_TOKEN", "")
    if not 0 < args.port < 65536:
        raise InputError(f"--port must be from 1 to 65535, not {args.port}.")
    for flag, value, least in (("--replicas", args.replicas, 1), ("--gpus-per-replica", args.gpus_per_replica, 0), ("--threads", args.threads, 1),
                               ("--max-pixels", args.max_pixels, 64)):
        if value is not None and value < least:
            raise InputError(f"{flag} must be at least {least}, not {value:g}.")
    if not args.max_body_mb > 0:
        raise InputError(f"--max-body-mb must be above 0, not {args.max_body_mb:g}.")
    if not args.address:
        for folder in args.models_folder:
            if not Path(folder).expanduser().is_dir():
                raise InputError(f"--models-folder {folder} is not a folder.")
        if not port_is_free(args.host, args.port):
            raise InputError(f"Port {args.port} on {args.host} is in use; choose another with --port.")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not token:
        say(f"sandcastle serve: warning: listening on {args.host} without a token: anyone who reaches it can run jobs (use --token).")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    try:
        import ray
        from ray import serve
    except ImportError:
        raise ModelUnavailable("sandcastle serve needs Ray Serve: pip install 'sandcastle[serve]' (or pip install 'ray[serve]').") from None

    root = str(Path(__file__).resolve().parents[1])  # so the replicas import this Sandcastle, installed or not
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH", "")]))}
    for name in ("HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "HF_ENDPOINT", "SANDCASTLE_HUB_ENDPOINT", "XDG_CACHE_HOME", "XDG_DATA_HOME",
                 "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
        if name in os.environ and not args.address:  # this computer's folders: a cluster's other nodes have their own
            env[name] = os.environ[name]
    started_here = not args.address
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # this process says what matters itself
    # A local cluster started for a loopback server keeps Ray's own ports (GCS, raylet, object store) on
    # loopback too; a server meant for the network should sit behind a firewall that lets through only --port.
    local_only = {"_node_ip_address": "127.0.0.1"} if started_here and args.host in ("127.0.0.1", "localhost") else {}
    ray.init(address=args.address or "local", include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
             namespace="sandcastle", runtime_env={"env_vars": env}, **local_only)
    stop = threading.Event()
    previous = {number: signal.signal(number, lambda *_: stop.set()) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        gpus = float(ray.cluster_resources().get("GPU", 0))
        per = args.gpus_per_replica if args.gpus_per_replica is not None else (1.0 if gpus else 0.0)
        if per > gpus:
            raise InputError(f"--gpus-per-replica {per:g} asks for more GPUs than the cluster has ({gpus:g}).")
        replicas = args.replicas or (max(1, int(gpus // per)) if per else 1)
        threads = args.threads or (0 if per else cpu_threads(replicas))
        options = {"token_digest": token_digest(token), "demo": bool(args.demo), "no_downloads": bool(getattr(args, "no_downloads", False)), "models_folders": [str(Path(f).expanduser().resolve()) for f in args.models_folder],
                   "max_body_bytes": int(args.max_body_mb * 2**20), "max_pixels": int(args.max_pixels), "replicas": replicas,
                   "gpus_per_replica": per, "threads": threads}
        serve.start(http_options={"host": args.host, "port": args.port}, logging_config={"log_level": "WARNING"})
        deployment = serve.deployment(SandcastleServer, name="Sandcastle", num_replicas=replicas, max_ongoing_requests=64,
                                      ray_actor_options={"num_gpus": per, "num_cpus": 0 if per else 1},
                                      logging_config={"log_level": "INFO"})
        serve.run(deployment.bind(options), name=APP_NAME, route_prefix="/", blocking=False)
        what = f"{replicas} replica{'s' if replicas != 1 else ''}" + (f" with {per:g} GPU each" if per else " on the CPU")
        say(f"Sandcastle's server listens on http://{args.host}:{args.port} ({what}{', demo models' if args.demo else ''}"
            f"{', token required' if token else ''}); Ctrl+C stops it.")
        while not stop.wait(0.5):
            pass
        say("sandcastle serve: stopping…")
    finally:
        try:
            if started_here:
                serve.shutdown()
            else:
                serve.delete(APP_NAME)
        except Exception:
            pass
        ray.shutdown()
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 0
