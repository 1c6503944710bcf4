"""A small Hugging Face hub on 127.0.0.1 for download tests.

It serves the part of the hub protocol that huggingface_hub's model_info, list_repo_tree and
hf_hub_download use: repository info (`/api/models/{repo}[/revision/{rev}]`), the recursive tree
listing with LFS sizes and SHA-256s (`/api/models/{repo}/tree/{rev}`), and file downloads
(`HEAD`/`GET /{repo}/resolve/{rev}/{path}`) with the X-Repo-Commit / ETag / X-Linked-* headers
and HTTP Range requests for resuming. Xet storage, auth, pagination and redirects to a CDN are
not served: the client falls back to plain HTTP without them.

Faults for tests: `delay` seconds per 64 KiB chunk (time to cancel), `corrupt` paths (bytes
flipped, size kept), `cut_after` bytes (the connection drops mid-file), `stop()` (the server goes away).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

CHUNK = 64 * 1024


class Hub:
    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commit = "0123456789abcdef0123456789abcdef01234567"
        self.delay = 0.0
        self.corrupt: set[str] = set()
        self.cut_after: int | None = None
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Range header
        self.gone = False
        self.gated: dict[str, int] = {}  # repo → the status the hub answers with: 401 (not logged in) or 403 (licence not accepted)
        self._server: ThreadingHTTPServer | None = None

    def add_folder(self, repo: str, folder: Path) -> None:
        self.repos[repo] = {str(p.relative_to(folder)).replace("\\", "/"): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "Hub":
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._serve(self, head=True)

            def do_GET(self) -> None:
                hub._serve(self, head=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """The server goes away: open transfers are cut and new connections are refused."""
        self.gone = True
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # ---- protocol -------------------------------------------------------------------------------

    @staticmethod
    def _lfs(path: str) -> bool:
        return path.endswith(".safetensors")

    @staticmethod
    def _git_sha1(data: bytes) -> str:
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def _json(self, h, payload, status=200, error_code: str | None = None) -> None:
        body = json.dumps(payload).encode()
        h.send_response(status)
        if error_code:
            h.send_header("X-Error-Code", error_code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _serve(self, h, head: bool) -> None:
        path = unquote(urlparse(h.path).path)
        self.requests.append((h.command, path, h.headers.get("Range")))
        parts = path.strip("/").split("/")
        repo = "/".join(parts[2:4]) if parts[:2] == ["api", "models"] else "/".join(parts[:2])
        if repo in self.gated:  # as the hub does: the error code says why, whatever the status
            return self._json(h, {"error": f"Access to model {repo} is restricted."}, self.gated[repo], "GatedRepo")
        if parts[:2] == ["api", "models"]:
            repo = "/".join(parts[2:4])
            if repo not in self.repos:
                return self._json(h, {"error": "Repository not found"}, 404, "RepoNotFound")
            files = self.repos[repo]
            if len(parts) >= 6 and parts[4] == "tree":
                entries = []
                for name, data in sorted(files.items()):
                    entry = {"type": "file", "oid": self._git_sha1(data), "size": len(data), "path": name}
                    if self._lfs(name):
                        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                    entries.append(entry)
                return self._json(h, entries)
            return self._json(h, {"id": repo, "modelId": repo, "sha": self.commit, "siblings": [{"rfilename": n} for n in sorted(files)]})
        # /{owner}/{name}/resolve/{rev}/{path…}
        if len(parts) < 5 or parts[2] != "resolve":
            return self._json(h, {"error": "not found"}, 404)
        repo, name = "/".join(parts[:2]), "/".join(parts[4:])
        data = self.repos.get(repo, {}).get(name)
        if data is None:
            h.send_response(404)
            h.send_header("X-Error-Code", "EntryNotFound")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        etag = hashlib.sha256(data).hexdigest() if self._lfs(name) else self._git_sha1(data)
        start = 0
        if h.headers.get("Range", "").startswith("bytes="):
            start = int(h.headers["Range"][6:].split("-")[0] or 0)
        status = 206 if start else 200
        h.send_response(status)
        h.send_header("X-Repo-Commit", self.commit)
        h.send_header("ETag", f'"{etag}"')
        if self._lfs(name):
            h.send_header("X-Linked-Etag", f'"{etag}"')
            h.send_header("X-Linked-Size", str(len(data)))
        h.send_header("Accept-Ranges", "bytes")
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Content-Length", str(len(data) - start))
        h.end_headers()
        if head:
            return
        body = bytes(b ^ 0xFF for b in data) if name in self.corrupt else data
        sent = 0
        try:
            for i in range(start, len(body), CHUNK):
                piece = body[i : i + CHUNK]
                if self.gone:
                    h.close_connection = True
                    h.connection.shutdown(2)
                    return
                if self.cut_after is not None and sent + len(piece) > self.cut_after:
                    h.wfile.write(piece[: max(0, self.cut_after - sent)])
                    h.wfile.flush()
                    h.close_connection = True
                    h.connection.shutdown(2)
                    return
                h.wfile.write(piece)
                sent += len(piece)
                if self.delay:
                    time.sleep(self.delay)
        except (BrokenPipeError, ConnectionResetError, OSError):
            return
