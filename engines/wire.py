"""What travels between Sandcastle and its server (`sandcastle serve`): the contract's types as bytes.

No torch, no Qt, no network: `engines.remote` (the client) and `server.app` both build on these
functions, so both sides read and write the same format.

A job (POST /run) is one body: a line of JSON (UTF-8, ending in a newline) with every field of the
`Request` but its pictures, and the byte length of each picture part; then the parts, each a PNG
(image RGB, mask greyscale, hints RGBA), in the order the line names them.

The answer is newline-delimited JSON, one message a line:

    {"type": "step", "step", "total", "box", "seconds_per_step", "pass", "passes", "offset", "stage", "phase",
     "t": server time at the step's end, "sent": server time when the line was made,
     "frame": base64 JPEG or PNG of step.picture() (absent for steps without a picture), "frame_format"}
    {"type": "alive", "t"}                              while nothing else is said (every few seconds)
    {"type": "result", "image": base64 PNG (lossless), "box", "offset", "seconds", "info"}
    {"type": "error", "kind": "InputError" | "ModelUnavailable" | …, "message": one sentence}

The last line is a result or an error; a stream that ends without one was cut. Errors before the
stream (refused token, a body too large, a malformed request) come back as an HTTP status with one
such error object as the body.
"""

from __future__ import annotations

import base64
import io
import json
import math
import struct
from typing import Any, Callable

import numpy as np

from engines.api import (Cancelled, EngineSpec, InputError, ModelUnavailable, OutOfMemory, ParamSpec, Request, Result, SandcastleError,
                         StepPreview, Task)

FORMAT = 1  # the version of this format; a server refuses a job written in another
JOB_MEDIA_TYPE = "application/x-sandcastle-job"
STREAM_MEDIA_TYPE = "application/x-ndjson"
MAX_HEADER_BYTES = 1 << 20  # the JSON line of a job
PICTURE_MODES = {"image": "RGB", "mask": "L", "hints": "RGBA"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---- errors of the connection: each is one sentence, like every SandcastleError --------------------


class RemoteError(SandcastleError):
    """Sandcastle's server, or the connection to it, failed."""


class TokenRefused(RemoteError):
    """The server wants a token and the one sent (or none) is not it."""


class ConnectionLost(RemoteError):
    """The connection broke, or the server fell silent, while a job ran."""


class ServerUnavailable(RemoteError, ModelUnavailable):
    """The server could not be reached at all (nothing listens, wrong address, not a Sandcastle server)."""


ERRORS: dict[str, type[SandcastleError]] = {cls.__name__: cls for cls in (
    InputError, ModelUnavailable, OutOfMemory, Cancelled, SandcastleError, RemoteError, TokenRefused, ConnectionLost, ServerUnavailable)}


def error_message(exc: BaseException) -> dict[str, str]:
    """An error as a message: its class name (the nearest one the other side knows) and its sentence."""
    kind = next((cls.__name__ for cls in type(exc).__mro__ if cls.__name__ in ERRORS), None)
    if kind is None:  # a bug on the server: say what, not how
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "no message"
        return {"type": "error", "kind": "SandcastleError", "message": f"The server failed unexpectedly ({type(exc).__name__}: {text})."}
    return {"type": "error", "kind": kind, "message": str(exc)}


def error_from(message: dict[str, Any]) -> SandcastleError:
    """The exception an error message stands for, of the same class as on the server."""
    cls = ERRORS.get(str(message.get("kind")), SandcastleError)
    return cls(str(message.get("message") or "The server failed without saying why."))


# ---- pictures ----------------------------------------------------------------------------------


def png_bytes(picture: np.ndarray) -> bytes:
    """A lossless PNG of an RGB, RGBA or greyscale uint8 array (fast compression: it is sent, not kept)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(picture)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header, without decoding it; InputError when it is not a PNG."""
    if len(data) < 33 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise InputError("A picture of the job is not a PNG file.")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def decode_png(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """The `name` picture of a job ("image", "mask" or "hints"), refusing one above `max_pixels` from its
    header before decoding, and one whose colour mode is not the one that part has."""
    from PIL import Image

    width, height = png_size(data)
    if width * height > max_pixels:
        raise InputError(f"The {name} is {width}×{height} pixels; this server takes pictures of at most {max_pixels:,} pixels.")
    mode = PICTURE_MODES[name]
    try:
        with Image.open(io.BytesIO(data)) as picture:
            if picture.format != "PNG" or picture.mode != mode or picture.size != (width, height):
                raise InputError(f"The {name} must be a {mode} PNG, not {picture.mode}.")
            return np.asarray(picture)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"The {name} could not be read ({type(exc).__name__}).") from None


def frame_bytes(picture: np.ndarray, frame_format: str = "jpeg", max_side: int = 0, quality: int = 85) -> bytes:
    """A preview frame: a small JPEG (or a PNG), scaled down to `max_side` when that is set."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(picture))
    if max_side and max(image.size) > max_side:
        scale = max_side / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    buffer = io.BytesIO()
    if frame_format == "png":
        image.save(buffer, format="PNG", compress_level=1)
    else:
        image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode_frame(data: bytes) -> np.ndarray:
    """A frame back as RGB uint8."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as picture:
        return np.asarray(picture.convert("RGB"))


# ---- requests ----------------------------------------------------------------------------------

REQUEST_FIELDS: dict[str, tuple[type, ...]] = {  # every Request field but the pictures, and the JSON types it may have
    "task": (str,), "prompt": (str,), "negative_prompt": (str,), "guidance_scale": (int, float), "strength": (int, float),
    "steps": (int,), "seed": (int,), "model": (str, type(None)), "device": (str, type(None)), "dtype": (str, type(None)),
    "memory": (str, type(None)), "compile": (bool,), "allow_pickle": (list,), "params": (dict,), "job_id": (int,),
}


def plain(value: Any) -> Any:
    """`value` as JSON can hold it: numpy scalars as numbers, tuples as lists, anything else as text."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else str(number)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray) and value.size <= 64:
        return plain(value.tolist())
    return str(value)


def encode_request(request: Request, frame_format: str = "jpeg", frame_max_side: int = 0) -> bytes:
    """A request as a job body (see the module's docstring). `frame_format` ("jpeg", "png" or "none")
    and `frame_max_side` ask for the preview frames the stream carries."""
    fields = {name: plain(getattr(request, name)) for name in REQUEST_FIELDS}
    fields["task"] = Task(request.task).value
    parts = [(name, png_bytes(picture)) for name, picture in (("image", request.image), ("mask", request.mask), ("hints", request.hints))
             if picture is not None]
    header = {"format": FORMAT, "request": fields, "parts": [[name, len(data)] for name, data in parts],
              "frames": {"format": frame_format, "max_side": int(frame_max_side)}}
    return json.dumps(header, allow_nan=False).encode("utf-8") + b"\n" + b"".join(data for _, data in parts)


def decode_request(body: bytes, max_pixels: int) -> tuple[Request, dict[str, Any]]:
    """A job body as (Request, frame options); InputError with one sentence for anything malformed, and
    for pictures above `max_pixels` (read from their headers before they are decoded)."""
    end = body.find(b"\n", 0, MAX_HEADER_BYTES)
    if end < 0:
        raise InputError("The job is malformed (no header line).")
    try:
        header = json.loads(body[:end].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InputError("The job is malformed (its header is not JSON).") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise InputError(f"The job was written in another format than this server reads ({FORMAT}); use the same Sandcastle version on both sides.")
    fields, parts = header.get("request"), header.get("parts")
    if not isinstance(fields, dict) or not isinstance(parts, list):
        raise InputError("The job is malformed (no request or parts).")
    for name, kinds in REQUEST_FIELDS.items():
        if name not in fields:
            raise InputError(f"The job is malformed (no {name}).")
        value = fields[name]
        if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
            raise InputError(f"The job is malformed ({name} has the wrong type).")
    if set(fields) - set(REQUEST_FIELDS):
        raise InputError(f"The job is malformed (unknown fields: {', '.join(sorted(set(fields) - set(REQUEST_FIELDS)))}).")
    try:
        task = Task(fields["task"])
    except ValueError:
        raise InputError(f"Unknown task {fields['task']!r}.") from None
    pictures: dict[str, np.ndarray] = {}
    offset = end + 1
    for part in parts:
        if not (isinstance(part, list) and len(part) == 2 and part[0] in PICTURE_MODES and isinstance(part[1], int) and part[1] > 0) or part[0] in pictures:
            raise InputError("The job is malformed (a picture part is not named image, mask or hints with its length).")
        name, length = part
        if offset + length > len(body):
            raise InputError("The job is cut short (a picture is missing bytes).")
        pictures[name] = decode_png(body[offset:offset + length], name, max_pixels)
        offset += length
    if offset != len(body):
        raise InputError("The job is malformed (bytes after its pictures).")
    if "image" not in pictures:
        raise InputError("The job has no image.")
    if not all(isinstance(p, str) for p in fields["allow_pickle"]):
        raise InputError("The job is malformed (allow_pickle).")
    request = Request(**{**fields, "task": task, "allow_pickle": tuple(fields["allow_pickle"]), **pictures})
    frames = header.get("frames") if isinstance(header.get("frames"), dict) else {}
    options = {"format": frames.get("format") if frames.get("format") in ("jpeg", "png", "none") else "jpeg",
               "max_side": frames.get("max_side") if isinstance(frames.get("max_side"), int) and frames.get("max_side") > 0 else 0}
    return request, options


# ---- the stream --------------------------------------------------------------------------------


def line(message: dict[str, Any]) -> bytes:
    """One message of the stream."""
    return json.dumps(message, allow_nan=False, separators=(",", ":")).encode("utf-8") + b"\n"


def step_message(step: StepPreview, frame: bytes | None, frame_format: str, made: float, sent: float) -> dict[str, Any]:
    """A step as a message; `made` is when the engine reported it, `sent` when its frame was ready (server clock)."""
    message = {"type": "step", "step": int(step.step), "total": int(step.total), "box": [int(v) for v in step.box],
               "seconds_per_step": float(step.seconds_per_step), "pass": int(step.pass_index), "passes": int(step.passes),
               "offset": [int(v) for v in step.offset], "stage": step.stage, "phase": step.phase, "t": made, "sent": sent}
    if frame is not None:
        message["frame"] = base64.b64encode(frame).decode("ascii")
        message["frame_format"] = frame_format
    return message


def decode_step(message: dict[str, Any], job_id: int) -> StepPreview:
    """A step message as a StepPreview whose `render` decodes the frame only when someone asks for the
    picture (the app does, off the denoising thread)."""
    frame = message.get("frame")
    render: Callable[[], np.ndarray] | None = None
    if isinstance(frame, str):
        def render(frame: str = frame) -> np.ndarray:
            return decode_frame(base64.b64decode(frame))
    box, offset = message.get("box") or (0, 0, 0, 0), message.get("offset") or (0, 0)
    return StepPreview(job_id=job_id, step=int(message.get("step", 0)), total=int(message.get("total", 0)), image=None,
                       box=tuple(int(v) for v in box), seconds_per_step=float(message.get("seconds_per_step", 0.0)),
                       pass_index=int(message.get("pass", 1)), passes=int(message.get("passes", 1)), offset=tuple(int(v) for v in offset),
                       render=render, stage=str(message.get("stage", "")), phase=str(message.get("phase", "")))


def result_message(result: Result) -> dict[str, Any]:
    return {"type": "result", "image": base64.b64encode(png_bytes(result.image)).decode("ascii"), "box": [int(v) for v in result.box],
            "offset": [int(v) for v in result.offset], "seconds": float(result.seconds), "info": plain(result.info)}


def decode_result(message: dict[str, Any]) -> Result:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(base64.b64decode(message["image"]))) as picture:
            image = np.asarray(picture.convert("RGB") if picture.mode != "RGB" else picture)
        return Result(image=image, box=tuple(int(v) for v in message["box"]), seconds=float(message.get("seconds", 0.0)),
                      offset=tuple(int(v) for v in message.get("offset", (0, 0))), info=dict(message.get("info") or {}))
    except Exception as exc:
        raise RemoteError(f"The server's result could not be read ({type(exc).__name__}).") from None


# ---- engine specs ------------------------------------------------------------------------------

TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def encode_param(p: ParamSpec) -> dict[str, Any]:
    return {"name": p.name, "type": p.type.__name__, "default": plain(p.default), "label": p.label, "help": p.help, "minimum": p.minimum,
            "maximum": p.maximum, "step": p.step, "choices": list(p.choices), "special_value": p.special_value,
            "when": list(p.when) if p.when else None, "panel": p.panel}


def decode_param(data: dict[str, Any]) -> ParamSpec:
    return ParamSpec(name=data["name"], type=TYPES[data["type"]], default=data["default"], label=data["label"], help=data.get("help", ""),
                     minimum=data.get("minimum"), maximum=data.get("maximum"), step=data.get("step"), choices=tuple(data.get("choices") or ()),
                     special_value=data.get("special_value", ""), when=tuple(data["when"]) if data.get("when") else None,
                     panel=bool(data.get("panel", True)))


def encode_spec(spec: EngineSpec, default_models: dict[str, Any] | None = None) -> dict[str, Any]:
    """An engine's spec; `default_models` says which model the engine uses when none is chosen, when that
    depends on a parameter: {"by": name, "models": {value: model}}."""
    return {"id": spec.id, "tasks": [Task(t).value for t in spec.tasks], "params": [encode_param(p) for p in spec.params],
            "default_model": spec.default_model, "title": spec.title, "strength_when": list(spec.strength_when) if spec.strength_when else None,
            "default_strength": spec.default_strength, "common": list(spec.common), "default_models": default_models}


def decode_spec(data: dict[str, Any]) -> EngineSpec:
    try:
        return EngineSpec(id=data["id"], tasks=tuple(Task(t) for t in data["tasks"]), params=tuple(decode_param(p) for p in data["params"]),
                          default_model=data["default_model"], title=data.get("title", ""),
                          strength_when=tuple(data["strength_when"]) if data.get("strength_when") else None,
                          default_strength=float(data.get("default_strength", 1.0)), common=tuple(data.get("common", ())))
    except (KeyError, TypeError, ValueError) as exc:
        raise RemoteError(f"The server described an engine this Sandcastle cannot read ({type(exc).__name__}: {exc}); "
                          "use the same Sandcastle version on both sides.") from None
