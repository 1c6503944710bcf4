"""Sandcastle: a desktop image editor in which diffusion models do the editing.

    python main.py [IMAGE] [--model ID_OR_PATH] [--demo]      open the editor
    python main.py run TASK --image IN ... --out OUT          run one engine headless
    python main.py run TASK ... --remote URL [--token T]      run it on Sandcastle's server
    python main.py serve [--host H] [--port P] [--demo]       serve the engines (Ray Serve)
    python main.py demo-model DIR --kind KIND                 write a tiny random-weight model
    python main.py convert-diffae CKPT OUT.safetensors        convert an official DiffAE checkpoint

Exit codes of `run`: 0 success, 2 bad input (one line on stderr), 3 model unavailable,
1 anything else (out of memory, an unexpected failure).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import warnings
from pathlib import Path

COMMANDS = ("run", "demo-model", "serve")


# ---- arguments ----------------------------------------------------------------------------------



class OneLineParser(argparse.ArgumentParser):
    """argparse, but a mistake is one line on stderr naming the fix (exit 2), not the whole usage block."""

    def error(self, message: str):
        say(f"{self.prog}: {message} (see {self.prog} --help)")
        sys.exit(2)

    def parse_args(self, args=None, namespace=None):
        return super().parse_args(values_may_start_with_a_dash(self, args), namespace)


def values_may_start_with_a_dash(parser: argparse.ArgumentParser, argv: list[str] | None) -> list[str] | None:
    """`--extend -10,0,0,0` as `--extend=-10,0,0,0`: argparse takes any word starting with a dash that
    is not a plain negative number for an option, and says "expected one argument" instead of what is
    wrong with the value. Options that take a value get the next word whatever it starts with."""
    if argv is None:
        return None
    takes_value = {flag for action in parser._actions if action.option_strings and action.nargs is None and action.const is None
                   for flag in action.option_strings}
    joined, words = [], iter(argv)
    for word in words:
        if word in takes_value:
            value = next(words, None)
            if value is not None and value.startswith("-") and value not in parser._option_string_actions:
                joined.append(f"{word}={value}")
                continue
            joined.append(word)
            if value is not None:
                joined.append(value)
            continue
        joined.append(word)
    return joined


def say(text: str) -> None:
    """One line on stderr. File names that are not valid UTF-8 reach us with surrogate escapes;
    they are shown with U+FFFD in their place, as file managers do, instead of failing to print."""
    print(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), file=sys.stderr, flush=True)


def gui_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="sandcastle", description="Sandcastle image editor.",
                                     epilog="Headless: sandcastle run TASK --help; sandcastle serve --help; sandcastle demo-model --help")
    parser.add_argument("image", nargs="?", help="picture to open")
    parser.add_argument("--model", help="hub id, local diffusers folder or .safetensors file to generate with")
    parser.add_argument("--demo", action="store_true", help="use tiny random-weight models (works offline; results are noise)")
    return parser


def run_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="sandcastle run", description="Run one engine without the window.")
    parser.add_argument("task", help="inpaint, uncrop, colorize, edit or attributes")
    parser.add_argument("--image", required=True)
    parser.add_argument("--mask", help="white = repaint; same size as the image")
    parser.add_argument("--prompt", default="")
    parser.add_argument("--negative", default="")
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--strength", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default 25; attributes: the rendering steps, default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="hub id, local diffusers folder or .safetensors file")
    parser.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--dtype", help="float16, bfloat16 or float32 (default: by device)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (faster steps on a GPU after a slow first run)")
    parser.add_argument("--demo", action="store_true", help="use a tiny random-weight model (offline)")
    parser.add_argument("--hints", metavar="HINTS.png", help="colorize: colour hints, an RGBA picture (opaque = hint) of the image's size")
    parser.add_argument("--attribute", action="append", default=[], metavar="NAME=AMOUNT", help="attributes: e.g. Smiling=0.3, or one of your own sliders by name (repeatable)")
    parser.add_argument("--region", metavar="X,Y,SIZE", help="attributes: the square face region (default: the whole picture)")
    parser.add_argument("--image-guidance", type=float, help="edit (InstructPix2Pix): how closely to keep the original, 1 to 5")
    parser.add_argument("--extend", metavar="L,T,R,B", help="uncrop: pixels to add on the left, top, right and bottom")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="an engine setting, e.g. feather=12")
    parser.add_argument("--out", required=True)
    parser.add_argument("--previews", metavar="DIR", help="write the picture at every denoising step here, one PNG per step")
    parser.add_argument("--remote", metavar="URL", help="run on Sandcastle's server at URL (sandcastle serve), e.g. http://127.0.0.1:8000")
    parser.add_argument("--token", help="the server's token (default: the SANDCASTLE_TOKEN environment variable)")
    return parser


def serve_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="sandcastle serve", description="Serve Sandcastle's engines to other computers (a Ray Serve application).",
                           epilog="Clients: sandcastle run TASK ... --remote http://HOST:PORT [--token T]. Needs pip install 'sandcastle[serve]'.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this computer only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--address", metavar="RAY_ADDRESS", help="join this Ray cluster (e.g. ray://head:10001 or auto); default: start a local one. "
                        "Every node needs Sandcastle installed and the same --models-folder paths")
    parser.add_argument("--demo", action="store_true", help="serve tiny random-weight models (offline; results are noise)")
    parser.add_argument("--models-folder", action="append", default=[], metavar="DIR",
                        help="serve the model folders and .safetensors files in DIR by their names (repeatable)")
    parser.add_argument("--token", help="every request must carry this token (default: the SANDCASTLE_TOKEN environment variable)")
    parser.add_argument("--no-downloads", action="store_true", help="refuse jobs for hub models the server has no copy of "
                        "(by default it downloads them on first use, unless HF_HUB_OFFLINE is set)")
    parser.add_argument("--replicas", type=int, help="engine replicas (default: one per GPU, or one)")
    parser.add_argument("--gpus-per-replica", type=float, help="GPUs each replica holds (default 1 when the cluster has GPUs; 0.5 shares one)")
    parser.add_argument("--threads", type=int, help="torch threads per CPU replica (default: the cores shared out)")
    parser.add_argument("--max-body-mb", type=float, default=512, help="largest job accepted, in MB (default 512)")
    parser.add_argument("--max-pixels", type=int, default=100_000_000, help="largest picture accepted, in pixels (default 100 million)")
    return parser


def demo_parser() -> argparse.ArgumentParser:
    from engines.testing import KINDS
    from engines.testing_dit import DIT_KINDS

    parser = OneLineParser(prog="sandcastle demo-model", description="Write a tiny random-weight model in diffusers format.")
    parser.add_argument("dir")
    parser.add_argument("--kind", required=True, choices=KINDS + DIT_KINDS + ("diffae",))
    parser.add_argument("--size", default="tiny", choices=("tiny", "small", "sd15"), help="SD kinds only; the others are always tiny")
    return parser


# ---- headless ----------------------------------------------------------------------------------


def parse_param(text: str, spec) -> tuple[str, object]:
    from engines.api import InputError

    name, sep, raw = text.partition("=")
    if not sep:
        raise InputError(f"--param takes NAME=VALUE, not {text!r}.")
    try:
        p = spec.param(name)
    except KeyError:
        raise InputError(f"{spec.title} has no setting called {name!r}; it has {', '.join(q.name for q in spec.params)}.") from None
    try:
        if p.type is bool:
            if raw.lower() not in ("1", "0", "true", "false", "on", "off", "yes", "no"):
                raise ValueError
            return name, raw.lower() in ("1", "true", "on", "yes")
        if p.type is int:
            number = float(raw)  # "12", "1e3" and "12.0" are whole numbers; "12.5" is refused by the spec's check
            return name, int(number) if number.is_integer() else number
        return name, p.type(raw)
    except (ValueError, OverflowError):
        kind = {bool: "on or off", int: "a whole number", float: "a number"}.get(p.type, "text")
        raise InputError(f"{p.label} must be {kind}, not {raw!r}.") from None


def parse_region(text: str) -> dict[str, int]:
    from engines.api import InputError

    try:
        x, y, size = (int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--region takes X,Y,SIZE in pixels (like 120,40,256), not {text!r}.") from None
    return {"region_x": x, "region_y": y, "region_size": size}


def parse_extend(text: str) -> dict[str, int]:
    from engines.api import InputError

    parts = text.split(",")
    try:
        values = [int(v) for v in parts]
    except ValueError:
        values = []
    if len(values) != 4 or min(values) < 0:
        raise InputError(f"--extend takes four whole numbers of pixels, left,top,right,bottom (like 0,0,256,0), not {text!r}.")
    return dict(zip(("left", "top", "right", "bottom"), values))


SAVED_ENDINGS = (".png", ".jpg", ".jpeg", ".webp")
DEVICE = re.compile(r"cpu|mps|cuda(:\d+)?")


def check_paths(args) -> None:
    """Everything about the files named on the command line that can be known before a model loads
    (which takes seconds to minutes): a bad --out found after the generation loses the whole run."""
    from engines.api import InputError

    out = Path(args.out)
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name in it, like {out / ('result' + SAVED_ENDINGS[0])}.")
    if out.suffix.lower() not in SAVED_ENDINGS:
        ending = f"ends in {out.suffix}" if out.suffix else "has no ending"
        raise InputError(f"--out {out.name} {ending}; Sandcastle writes .png, .jpg or .webp pictures.")
    folder = out.parent
    if not folder.is_dir():
        raise InputError(f"The folder for --out, {folder}, does not exist.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"The folder for --out, {folder}, is read-only; choose a folder you can write to.")
    if out.exists() and not os.access(out, os.W_OK):
        raise InputError(f"--out {out.name} exists and is read-only; choose another name.")
    if args.previews:
        previews = Path(args.previews)
        if previews.exists() and not previews.is_dir():
            raise InputError(f"--previews {previews} is a file; it takes a folder (made if missing) for one picture per step.")
        existing = next((p for p in [previews, *previews.parents] if p.exists()), Path("."))
        if not os.access(existing, os.W_OK | os.X_OK):
            raise InputError(f"--previews {previews} cannot be written ({existing} is read-only); choose a folder you can write to.")
    if args.device is not None and not DEVICE.fullmatch(args.device):
        raise InputError(f"--device must be cpu, cuda, cuda:N (a GPU's number) or mps, not {args.device!r}.")


class StopOnSignal:
    """Ctrl+C (SIGINT) and SIGTERM cancel the run at its next denoising step, so it ends with one line
    and writes nothing; a second one stops at once (a model still loading cannot be interrupted more
    gently)."""

    def __init__(self, token) -> None:
        self.token = token
        self.signal: int | None = None
        self.previous = {}

    def __enter__(self) -> "StopOnSignal":
        for number in (signal.SIGINT, signal.SIGTERM):
            self.previous[number] = signal.signal(number, self.stop)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def stop(self, number: int, frame) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = number
        self.token.cancel()

    @property
    def name(self) -> str:
        return "Ctrl+C" if self.signal in (None, signal.SIGINT) else signal.Signals(self.signal).name


def check_remote(args) -> None:
    """What --remote rules out, before anything: a device or a model on this computer."""
    from engines.api import InputError

    if not args.remote:
        if args.token is not None:
            raise InputError("--token is for a server; give its address with --remote URL.")
        return
    if args.device is not None:
        raise InputError(f"--device chooses a device on this computer; the server at {args.remote} runs on its own.")
    if args.demo:
        raise InputError(f"--demo makes a model on this computer; for demo models on the server, start it with sandcastle serve --demo "
                         f"(then {args.remote} uses them by default).")


def run_headless(argv: list[str]) -> int:
    args = run_parser().parse_args(argv)
    from engines.api import CancelToken, InputError

    try:
        check_paths(args)
        check_remote(args)
    except InputError as exc:
        say(f"sandcastle: {exc}")
        return 2
    token = CancelToken()
    with StopOnSignal(token) as stopping:
        try:
            return generate_headless(args, token)
        except KeyboardInterrupt:
            stopping.signal = stopping.signal or signal.SIGINT
    say(f"sandcastle: stopped by {stopping.name}; nothing was written.")
    return 128 + stopping.signal


def generate_headless(args, token) -> int:
    """The run itself; every failure is one line on stderr and an exit code (see the module's docstring)."""
    from engines import imaging, registry
    from engines.api import Cancelled, InputError, Request, Task

    try:
        try:
            task = Task(args.task)
        except ValueError:
            raise InputError(f"Unknown task {args.task!r}; choose one of {', '.join(t.value for t in Task)}.") from None
        from engines import services

        image, alpha, colour = services.read_picture(args.image)  # sRGB for the model; the file's own colour space kept for the save
        mask = imaging.load_mask(args.mask, (image.shape[1], image.shape[0])) if args.mask else None
        hints = imaging.load_hints(args.hints, (image.shape[1], image.shape[0])) if args.hints else None
        if args.remote:  # the same engine on Sandcastle's server: its spec comes from there, its models are resolved there
            engine = services.remote_engine(task.value, args.remote, args.token if args.token is not None else os.environ.get("SANDCASTLE_TOKEN", ""))
        else:
            engine = registry.get(task.value)
        params = dict(parse_param(t, engine.spec) for t in args.param)
        if args.extend is not None:
            params.update(parse_extend(args.extend))
        if args.image_guidance is not None:
            params["image_guidance"] = args.image_guidance
        if args.attribute:
            params["attributes"] = ",".join(args.attribute)
        if args.region:
            params.update(parse_region(args.region))
        if task is Task.ATTRIBUTES and args.steps is not None:
            params.setdefault("render_steps", args.steps)
        model = args.model
        if args.demo and model is None:
            from engines.services import demo_model

            model = demo_model(task.value, params)
        request = Request(
            task=task, image=image, mask=mask, hints=hints, prompt=args.prompt, negative_prompt=args.negative,
            guidance_scale=args.guidance, strength=args.strength, steps=25 if args.steps is None else args.steps, seed=args.seed, model=model,
            device=args.device, dtype=args.dtype, params=params, compile=args.compile,
        )
        engine.check(request)
        from engines.api import default_model_for

        if not args.remote:
            fetch_if_missing(request.model or default_model_for(engine, params), request.allow_pickle, token)
        previews = Path(args.previews) if args.previews else None
        frames = None
        if previews:
            try:
                previews.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(f"--previews {previews} could not be made ({exc.strerror or exc}).") from None
            frames = PreviewFrames(image, result_shape(task, image, engine.spec.values(params)))

        def on_step(step) -> None:
            if step.stage:
                say(step.stage)
                return
            stage = f"pass {step.pass_index}/{step.passes} " if step.passes > 1 else ""
            stage += f"{step.phase.lower()}: " if step.phase else ""
            say(f"{stage}step {step.step}/{step.total}  {step.seconds_per_step:.2f} s")
            picture = step.picture() if frames is not None else None  # made here: the CLI writes every step anyway
            if picture is not None:
                name = f"pass-{step.pass_index:02d}-step-{step.step:03d}.png" if step.passes > 1 else f"step-{step.step:03d}.png"
                imaging.save_image(previews / name, frames.add(step, picture))

        result = engine.run(request, on_step, token)
        for warning in result.info.get("warnings", []):
            say(f"sandcastle: warning: {warning}")
        if alpha is not None and result.image.shape[:2] != alpha.shape:  # uncrop grew the picture: its new area is opaque
            alpha = imaging.embed(alpha, result.image.shape[:2], result.offset, 255)
        out = Path(args.out)
        services.save_image(str(out), result.image, alpha=alpha, colour=None if colour is None else colour.moved(result.offset))
        say(f"wrote {out} ({result.seconds:.1f} s)")
        return 0
    except Cancelled as exc:
        if token.cancelled:
            raise KeyboardInterrupt from None  # our own token: a signal (StopOnSignal) cancelled the run
        return report_failure(exc)  # cancelled elsewhere (the server's job was stopped there): say so, not "Ctrl+C"
    except Exception as exc:
        return report_failure(exc)


def report_failure(exc: Exception) -> int:
    """One line on stderr for why a command failed, and its exit code: 2 bad input, 3 model
    unavailable, 1 anything else. A bug's traceback goes to the log, not the terminal."""
    from engines.api import InputError, ModelUnavailable, SandcastleError

    if isinstance(exc, (InputError, ModelUnavailable, SandcastleError)):
        say(f"sandcastle: {exc}")
        return 2 if isinstance(exc, InputError) else 3 if isinstance(exc, ModelUnavailable) else 1
    if isinstance(exc, OSError):  # the disk, after the checks: full, gone, or a folder that became read-only
        where = f" ({exc.filename})" if exc.filename else ""
        say(f"sandcastle: {exc.strerror or first_line(exc)}{where}; nothing was written.")
        return 1
    log_path = log_failure()
    say(f"sandcastle: unexpected failure ({type(exc).__name__}: {first_line(exc)}); details in {log_path}.")
    return 1


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "no message"


def log_failure() -> Path:
    """Write the current exception's traceback to Sandcastle's log folder; returns the file."""
    import traceback

    from engines.folders import log_folder

    folder = log_folder()  # where the window logs too (Help → Open log folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sandcastle-run.log"
    with open(path, "a", encoding="utf-8") as log:
        log.write(traceback.format_exc() + "\n")
    return path


def result_shape(task, image, values: dict) -> tuple[int, int]:
    """(height, width) of the picture a run returns: the input's, grown by the added sides for uncrop."""
    from engines.api import Task

    height, width = image.shape[:2]
    if task is Task.UNCROP:
        return height + values["top"] + values["bottom"], width + values["left"] + values["right"]
    return height, width


class PreviewFrames:
    """The whole picture at each step, as the window shows it: the input at the result's size (placed
    at the step's `offset`; the area uncrop adds is black until a pass shows it) with the step's
    picture scaled into its `box`. Earlier pictures stay under later ones, so the passes of an uncrop
    add up to the whole new area as they do on the canvas."""

    def __init__(self, image, shape: tuple[int, int]) -> None:
        self.image = image
        self.shape = shape
        self.sheet = None  # made at the first step, which says where the input lies

    def add(self, step, picture):
        """The frame with `picture`, the step's own picture, placed; valid until the next call."""
        from PIL import Image

        from engines import imaging

        if self.sheet is None:
            self.sheet = imaging.embed(self.image, self.shape, step.offset, 0)
        x, y, w, h = step.box
        self.sheet[y : y + h, x : x + w] = imaging.resize(picture, (w, h), Image.BILINEAR)  # bilinear, as the canvas scales it
        return self.sheet


def fetch_if_missing(model: str, allow_pickle: tuple[str, ...] = (), cancel=None) -> None:
    """Download a hub model that is not on this computer yet, with progress on stderr (the person
    named it on the command line, which is consent). Offline, this raises ModelUnavailable."""
    from engines import sources
    from engines.api import CancelToken, ModelUnavailable
    from engines.services import download_model, is_offline, model_status

    status = model_status(model, allow_pickle)
    if status.installed:
        return
    hub_id = status.hub_to_fetch
    if status.kind == "file" and not status.base:
        raise ModelUnavailable(status.unusable or f"{model} cannot be used.")
    if is_offline():
        raise ModelUnavailable(status.unusable if status.base else sources.unavailable_message(sources.ModelSource("hub", hub_id)))
    if status.access:
        say(f"{hub_id} is gated: if the download is refused, {status.access}")
    what = "its text encoder and VAE, " if status.base else ""
    say(f"downloading {what}{hub_id} ({status.licence or 'see its model page for the licence'})")
    last = [0.0]

    def show(p) -> None:
        if p.done_bytes == p.total_bytes or p.done_bytes - last[0] >= 0.02 * p.total_bytes:
            last[0] = p.done_bytes
            say(f"  {p.done_bytes / 1e6:.0f}/{p.total_bytes / 1e6:.0f} MB  {p.bytes_per_second / 1e6:.1f} MB/s")

    download_model(hub_id, status.components, show, cancel or CancelToken(), os.environ.get("SANDCASTLE_HUB_ENDPOINT"))


def serve(argv: list[str]) -> int:
    """`sandcastle serve`: the engines as a Ray Serve application until Ctrl+C or SIGTERM."""
    args = serve_parser().parse_args(argv)
    try:
        from server.app import run_server

        return run_server(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        return report_failure(exc)


def convert_diffae(argv: list[str]) -> int:
    parser = OneLineParser(prog="sandcastle convert-diffae",
                                     description="Convert an official DiffAE checkpoint (autoencoder or attribute classifier) to safetensors.")
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    args = parser.parse_args(argv)
    from engines.diffae.convert import convert

    try:
        kind = convert(args.checkpoint, args.out)
    except Exception as exc:
        return report_failure(exc)
    say(f"wrote the {kind} to {args.out}")
    return 0


def write_demo_model(argv: list[str]) -> int:
    args = demo_parser().parse_args(argv)
    from engines.testing import write_diffae, write_model
    from engines.testing_dit import DIT_KINDS, write_dit_model

    try:
        if args.kind == "diffae":
            folder = write_diffae(args.dir)
        elif args.kind in DIT_KINDS:
            folder, args.size = write_dit_model(args.dir, args.kind), "tiny"
        else:
            folder = write_model(args.dir, args.kind, args.size)
    except Exception as exc:
        return report_failure(exc)
    say(f"wrote a random-weight {args.kind} model ({args.size}) to {folder}")
    return 0


# ---- the window ----------------------------------------------------------------------------------

# The system libraries Qt's X11 (xcb) platform plugin and the Qt GUI libraries under it load, and the
# Debian/Ubuntu package of each. PySide6 brings Qt itself but none of these; without one, Qt aborts
# with a message that names no package (libxcb-cursor0 is the one most often missing).
XCB_LIBRARIES = {
    "libxcb.so.1": "libxcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libX11.so.6": "libx11-6",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libGL.so.1": "libgl1",
    "libEGL.so.1": "libegl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3",
}


def library_loads(soname: str) -> bool:
    """Whether the dynamic loader finds `soname`, searching where it will when Qt loads its plugin."""
    import ctypes

    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def uses_xcb(environ) -> bool:
    """Whether Qt will open the window through X11: on Linux with an X display, when asked to, or when
    nothing is asked for and no Wayland session is around (Qt tries Wayland first in one)."""
    if not sys.platform.startswith("linux") or not environ.get("DISPLAY"):
        return False
    platform = environ.get("QT_QPA_PLATFORM", "")
    if platform:
        return platform.split(";")[0].split(":")[0] == "xcb"
    return not environ.get("WAYLAND_DISPLAY") and environ.get("XDG_SESSION_TYPE") != "wayland"


def missing_window_libraries(environ, find_library) -> str | None:
    """The message naming the packages to install when the X11 window needs system libraries that
    `find_library` (soname → found) does not find; None when the window can open, or is not on X11."""
    if not uses_xcb(environ):
        return None
    missing = [soname for soname in XCB_LIBRARIES if not find_library(soname)]
    if not missing:
        return None
    packages = " ".join(XCB_LIBRARIES[soname] for soname in missing)
    return (f"sandcastle: the window needs system libraries that are not installed ({', '.join(missing)}); "
            f"on Debian or Ubuntu install them with: sudo apt-get install {packages}")


def build(argv: list[str]):
    """The whole app's main window for these command-line arguments, without entering the event loop.

    A QApplication must exist already.
    """
    args = gui_parser().parse_args(argv)
    from editor.app import create_main_window

    return create_main_window(image=args.image, model=args.model, demo=args.demo)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Newer diffusers (huggingface/diffusers#14205) renamed from_pretrained's torch_dtype to dtype and warn
    # on every model load; the oldest we support (0.38) knows only torch_dtype, which engines.models passes.
    warnings.filterwarnings("ignore", message="`torch_dtype` is deprecated", category=FutureWarning, module="diffusers")
    if argv and argv[0] == "run":
        return run_headless(argv[1:])
    if argv and argv[0] == "demo-model":
        return write_demo_model(argv[1:])
    if argv and argv[0] == "serve":
        return serve(argv[1:])
    if argv and argv[0] == "convert-diffae":
        return convert_diffae(argv[1:])
    gui_parser().parse_args(argv)  # --help and bad arguments end here, before any Qt object exists: they need no display
    problem = missing_window_libraries(os.environ, library_loads)
    if problem:
        say(problem)
        return 1
    from editor.app import run_app

    return run_app(argv, build)


if __name__ == "__main__":
    sys.exit(main())
