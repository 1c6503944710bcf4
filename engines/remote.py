"""An engine on another computer: Sandcastle's server (`sandcastle serve`), reached over HTTP.

`RemoteEngine` keeps the `Engine` protocol, so the window and the CLI use it as they use a local one:
`check` runs the contract's checks here (no network: the app calls it on the GUI thread), `run` sends
the job and hands every step the server streams back to `on_step` as a `StepPreview` whose `render`
decodes the frame only when asked. A cancel closes the connection (the server then cancels the
engine's own token, so the job stops within one step there too) and raises `Cancelled`. Every failure
of the server or the connection is one sentence (`engines.wire`'s errors, all SandcastleErrors).

Only the standard library's http.client; no torch, no Qt.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import queue
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from engines import wire
from engines.api import Cancelled, CancelToken, EngineSpec, InputError, Request, Result, StepCallback, check_common
from engines.wire import ConnectionLost, RemoteError, ServerUnavailable, TokenRefused

CONNECT_SECONDS = 10.0  # to open the connection and to answer a short question (health, engines, models)
SILENCE_SECONDS = 60.0  # a job's stream that says nothing this long is taken for dead (the server says "alive" every 2 s)
MAX_LINE_BYTES = 1 << 30  # one message of the stream (a result is a whole PNG in base64)
SEND_CHUNK = 1 << 20


# ---- talking to the server --------------------------------------------------------------------


def base_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path prefix) of a server URL; InputError when it is not an http(s) URL."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"{url} is not the address of a Sandcastle server (like http://127.0.0.1:8000).")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InputError(f"{url} has no valid port.") from None
    return parts.scheme, parts.hostname, port, parts.path.rstrip("/")


def unreachable(url: str, exc: BaseException) -> ServerUnavailable:
    reason = {ConnectionRefusedError: "nothing listens there", socket.timeout: f"no answer within {CONNECT_SECONDS:g} s",
              TimeoutError: f"no answer within {CONNECT_SECONDS:g} s", socket.gaierror: "the host name is unknown"}.get(type(exc))
    reason = reason or (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
    return ServerUnavailable(f"Sandcastle's server at {url} did not answer ({reason}); check that it runs (sandcastle serve) and the address.")


def refused(url: str, token: str) -> TokenRefused:
    if not token:
        return TokenRefused(f"The server refused the token: Sandcastle's server at {url} needs one and none was given "
                            "(pass --token or set SANDCASTLE_TOKEN).")
    return TokenRefused(f"The server refused the token: it is not the one Sandcastle's server at {url} was started with.")


def connection(url: str, timeout: float) -> http.client.HTTPConnection:
    scheme, host, port, _ = base_url(url)
    cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    return cls(host, port, timeout=timeout)


def headers(token: str, **extra: str) -> dict[str, str]:
    found = {"User-Agent": "sandcastle", **extra}
    if token:
        found["Authorization"] = f"Bearer {token}"
    return found


def failed(url: str, token: str, status: int, reason: str, body: bytes) -> RemoteError | Exception:
    """The error a non-200 answer stands for."""
    if status == 401:
        return refused(url, token)
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        message = None
    if isinstance(message, dict) and message.get("type") == "error":
        return wire.error_from(message)
    if status == 404:
        return ServerUnavailable(f"{url} answers, but it is not Sandcastle's server (it has no such page).")
    text = body.decode("utf-8", "replace").strip().splitlines()[0][:200] if body.strip() else reason
    return RemoteError(f"Sandcastle's server at {url} failed ({status}: {text}).")


def get_json(url: str, path: str, token: str = "", timeout: float = CONNECT_SECONDS) -> Any:
    """GET a JSON page of the server."""
    conn = connection(url, timeout)
    try:
        try:
            conn.request("GET", base_url(url)[3] + path, headers=headers(token))
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise unreachable(url, exc) from None
        if response.status != 200:
            raise failed(url, token, response.status, response.reason, body)
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ServerUnavailable(f"{url} answers, but not as Sandcastle's server does (its {path} is not JSON).") from None
    finally:
        conn.close()


class Job:
    """One job's connection: the body is sent on `open`, then `messages` yields each line of the stream
    with the time it arrived. A reader thread does the blocking reads, so the caller notices a cancel
    or a silent server within `poll` seconds whatever the socket does."""

    def __init__(self, url: str, token: str, body: bytes, cancel: CancelToken, silence: float = SILENCE_SECONDS,
                 connect_timeout: float = CONNECT_SECONDS) -> None:
        self.url, self.token, self.body, self.cancel = url, token, body, cancel
        self.silence, self.connect_timeout = silence, connect_timeout
        self.conn: http.client.HTTPConnection | None = None
        self.sock: socket.socket | None = None
        self.lines: queue.Queue = queue.Queue()
        self.closed = threading.Event()

    def open(self) -> None:
        conn = self.conn = connection(self.url, self.connect_timeout)
        try:
            conn.connect()
            self.sock = conn.sock
            conn.putrequest("POST", base_url(self.url)[3] + "/run", skip_accept_encoding=True)
            for name, value in headers(self.token, **{"Content-Type": wire.JOB_MEDIA_TYPE, "Content-Length": str(len(self.body)),
                                                      "Accept": wire.STREAM_MEDIA_TYPE}).items():
                conn.putheader(name, value)
            conn.endheaders()
            view = memoryview(self.body)
            try:
                for start in range(0, len(view), SEND_CHUNK):  # a large picture on a slow link: a cancel still counts
                    if self.cancel.cancelled:
                        raise Cancelled("Cancelled.")
                    conn.send(view[start:start + SEND_CHUNK])
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered before taking the whole body (a refusal): read why
            # The server reads and checks the job (and may write a demo model) before it answers: allow it
            # the silence limit, not the connect one, and let a cancel cut the wait short.
            self.sock.settimeout(self.silence)
            answered = threading.Event()
            threading.Thread(target=self._close_on_cancel, args=(answered,), name="sandcastle-remote-cancel", daemon=True).start()
            try:
                response = conn.getresponse()
            finally:
                answered.set()
        except Cancelled:
            self.close()
            raise
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            if self.cancel.cancelled:
                raise Cancelled("Cancelled.") from None
            raise unreachable(self.url, exc) from None
        if response.status != 200:
            try:
                body = response.read(1 << 20)
            except (OSError, http.client.HTTPException):
                body = b""
            self.close()
            raise failed(self.url, self.token, response.status, response.reason, body)
        if self.sock is not None:
            self.sock.settimeout(None)  # the reader blocks; silence is timed by `messages`, a cancel shuts the socket
        threading.Thread(target=self._read, args=(response,), name="sandcastle-remote-reader", daemon=True).start()

    def _close_on_cancel(self, answered: threading.Event) -> None:
        while not answered.wait(0.05):
            if self.cancel.cancelled:
                self.close()  # getresponse then fails, and open() says Cancelled
                return

    def _read(self, response: http.client.HTTPResponse) -> None:
        try:
            while True:
                data = response.readline(MAX_LINE_BYTES)
                received = time.time()
                if not data:
                    self.lines.put((None, received))
                    return
                if not data.endswith(b"\n"):
                    self.lines.put((ConnectionLost(f"The connection to Sandcastle's server at {self.url} was cut in the middle of a message."), received))
                    return
                self.lines.put((data, received))
        except Exception as exc:  # reset, cut chunk, or the socket closed under us by a cancel
            self.lines.put((exc, time.time()))

    def messages(self, poll: float = 0.05) -> Iterator[tuple[dict[str, Any], float]]:
        """Each message with the time.time() it arrived. Raises Cancelled when the token is set,
        ConnectionLost when the stream breaks, ends without an answer or stays silent too long."""
        last = time.monotonic()
        while True:
            if self.cancel.cancelled:
                self.close()
                raise Cancelled("Cancelled.")
            try:
                item, received = self.lines.get(timeout=poll)
            except queue.Empty:
                if time.monotonic() - last > self.silence:
                    self.close()
                    raise ConnectionLost(f"Sandcastle's server at {self.url} sent nothing for {self.silence:g} s; the job was given up.") from None
                continue
            last = time.monotonic()
            if item is None:
                raise ConnectionLost(f"The connection to Sandcastle's server at {self.url} was lost during the job (the server closed it); "
                                     "the job did not finish.")
            if isinstance(item, BaseException):
                if self.cancel.cancelled or self.closed.is_set():
                    raise Cancelled("Cancelled.")
                if isinstance(item, RemoteError):
                    raise item
                reason = getattr(item, "strerror", None) or type(item).__name__
                raise ConnectionLost(f"The connection to Sandcastle's server at {self.url} was lost during the job ({reason}); "
                                     "the job did not finish.")
            try:
                message = json.loads(item.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                self.close()
                raise RemoteError(f"Sandcastle's server at {self.url} sent a message this Sandcastle cannot read.") from None
            if not isinstance(message, dict):
                continue
            yield message, received

    def close(self) -> None:
        """Close the connection now (the server sees the client go and cancels the job)."""
        if self.closed.is_set():
            return
        self.closed.set()
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader thread's blocked read
            except OSError:
                pass
        if self.conn is not None:
            self.conn.close()
        if self.sock is not None:
            self.sock.close()


# ---- the engine --------------------------------------------------------------------------------


def looks_like_a_path(model: str) -> bool:
    """Whether a model name names a file or folder (a server never takes one): absolute, relative with
    dots, home-relative, a backslash, or something that exists here."""
    text = model.strip()
    if text.startswith(("/", ".", "~", "\\")) or "\\" in text or (len(text) > 1 and text[1] == ":"):
        return True
    if any(part in (".", "..") for part in text.split("/")) or text.count("/") > 1:
        return True
    try:
        return Path(text).expanduser().exists()
    except OSError:
        return False


class RemoteEngine:
    """One task's engine on Sandcastle's server at `url`."""

    def __init__(self, url: str, token: str, spec: EngineSpec, default_models: dict[str, Any] | None = None,
                 frame_format: str = "jpeg", frame_max_side: int = 0, silence: float = SILENCE_SECONDS,
                 connect_timeout: float = CONNECT_SECONDS, limits: dict[str, int] | None = None) -> None:
        self.url, self.token, self.spec = url, token, spec
        self.limits = limits or {}  # the server's max_pixels and max_body_bytes, checked here before anything is sent
        self.default_models = default_models
        self.frame_format, self.frame_max_side = frame_format, frame_max_side
        self.silence, self.connect_timeout = silence, connect_timeout
        self.on_message: Callable[[dict[str, Any], float], None] | None = None  # for measurements: every message and when it arrived

    def default_model_for(self, params: dict[str, Any]) -> str:
        """The model the server uses when none is chosen (edit's depends on its method)."""
        chooser = self.default_models
        if chooser and chooser.get("by") in self.spec.values(params):
            return str(chooser["models"].get(str(self.spec.values(params)[chooser["by"]]), self.spec.default_model))
        return self.spec.default_model

    def check(self, request: Request) -> None:
        """The contract's checks, here and without the network; the server runs the engine's own checks
        before anything heavy and answers a refusal as the same InputError."""
        check_common(request, self.spec)
        most = self.limits.get("max_pixels")
        for name in ("image", "mask", "hints"):
            picture = getattr(request, name)
            if most and picture is not None and picture.shape[0] * picture.shape[1] > most:
                raise InputError(f"The {name} is {picture.shape[1]}×{picture.shape[0]} pixels; Sandcastle's server at {self.url} takes "
                                 f"pictures of at most {most:,} pixels.")
        if request.model and looks_like_a_path(request.model):
            raise InputError(f"{request.model} is a file or folder on this computer; Sandcastle's server at {self.url} takes a model by a "
                             "name it lists (a preset, a hub id or one of its model folders), never a path.")

    def open_job(self, request: Request, cancel: CancelToken) -> Job:
        """Send the job; the stream is the returned Job's `messages` (the benchmark reads them raw)."""
        cancel.raise_if_cancelled()
        # What names this computer's things stays here: the server runs on its own device and loads no
        # pickle files (the app sends the ones a person allowed here with every request).
        sent = dataclasses.replace(request, device=None, allow_pickle=())
        body = wire.encode_request(sent, self.frame_format, self.frame_max_side)
        most = self.limits.get("max_body_bytes")
        if most and len(body) > most:
            raise InputError(f"The job is {len(body) / 2**20:.0f} MB; Sandcastle's server at {self.url} takes jobs of at most "
                             f"{most / 2**20:.0f} MB.")
        job = Job(self.url, self.token, body, cancel, self.silence, self.connect_timeout)
        job.open()
        return job

    def run(self, request: Request, on_step: StepCallback, cancel: CancelToken) -> Result:
        started = time.perf_counter()
        job = self.open_job(request, cancel)
        try:
            for message, received in job.messages():
                if self.on_message is not None:
                    self.on_message(message, received)
                kind = message.get("type")
                if kind == "step":
                    on_step(wire.decode_step(message, request.job_id))
                    cancel.raise_if_cancelled()
                elif kind == "result":
                    result = wire.decode_result(message)
                    info = {**result.info, "server": self.url, "server_seconds": result.seconds}
                    return Result(result.image, result.box, time.perf_counter() - started, result.offset, info)
                elif kind == "error":
                    raise wire.error_from(message)
            raise ConnectionLost(f"The connection to Sandcastle's server at {self.url} ended without a result.")  # pragma: no cover
        finally:
            job.close()


def engines(url: str, token: str = "", timeout: float = CONNECT_SECONDS) -> dict[str, Any]:
    """The server's GET /engines."""
    data = get_json(url, "/engines", token, timeout)
    if not isinstance(data, dict) or not isinstance(data.get("engines"), list):
        raise ServerUnavailable(f"{url} answers, but not as Sandcastle's server does (no engines).")
    return data


def remote_engine(task: str, url: str, token: str = "") -> RemoteEngine:
    """The engine for `task` on the server at `url`, its spec as the server describes it."""
    found = engines(url, token)
    for data in found["engines"]:
        if task in data.get("tasks", ()):
            limits = {k: int(v) for k, v in (found.get("limits") or {}).items() if isinstance(v, (int, float))}
            return RemoteEngine(url, token, wire.decode_spec(data), data.get("default_models"), limits=limits)
    names = sorted({t for data in found["engines"] for t in data.get("tasks", ())})
    raise InputError(f"Sandcastle's server at {url} has no engine for {task}; it has {', '.join(names) or 'none'}.")


def models(url: str, token: str = "") -> list[dict[str, Any]]:
    data = get_json(url, "/models", token)
    listed = data.get("models") if isinstance(data, dict) else None
    if not isinstance(listed, list):
        raise ServerUnavailable(f"{url} answers, but not as Sandcastle's server does (no models).")
    return [{"name": str(m.get("name", "")), "title": str(m.get("title", "")), "tasks": [str(t) for t in m.get("tasks", ())],
             "installed": bool(m.get("installed")), "licence": str(m.get("licence", "")), "about": str(m.get("about", ""))}
            for m in listed if isinstance(m, dict)]


def status(url: str, token: str = "") -> str:
    """One line for the status bar; never raises: when the server cannot be asked, the line says why."""
    try:
        health = get_json(url, "/health", token)
    except (RemoteError, InputError) as exc:
        return f"Remote: {exc}"
    replicas = health.get("replicas", 1)
    device = health.get("device") or "unknown device"
    busy = f", {health['jobs']} job{'s' if health['jobs'] != 1 else ''} in hand" if health.get("jobs") else ""
    return f"Remote: {replicas} × {device} at {url}{busy}"
