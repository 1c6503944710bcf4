"""The model catalog: what is installed, downloading with byte progress, cancel, resume and
integrity checks, and deleting. The presets of resources/models.json are read by `engines.sources`.
It imports no torch: the editor asks it about models on the GUI thread.

Downloads land in the Hugging Face cache (HF_HOME / HF_HUB_CACHE honoured) in its own layout
(blobs named by ETag, snapshot links, refs/main), so diffusers finds the files as if
huggingface_hub had fetched them. huggingface_hub does the talking to the hub: model info, the
file listing with sizes and SHA-256s, URLs, headers and its HTTP session. The bytes themselves are
transferred here, because huggingface_hub 1.x/2.x deletes a partial file when a download fails,
and a person on a slow line must be able to cancel a 2 GB download and resume it tomorrow: each
file is written to `blobs/<etag>.sandcastle-partial` and continued with an HTTP Range request.
Large-file storage (LFS) files are checked against their SHA-256 before they count as installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from engines import sources  # bounds the hub time-outs before huggingface_hub is imported
from engines.api import CancelToken, Cancelled, ModelUnavailable

WEIGHT_SUFFIXES = (".safetensors",)
UNUSED_COMPONENTS = {"safety_checker", "feature_extractor"}
MANIFEST = ".sandcastle-complete.json"  # written into a snapshot by a finished download of ours


# ---- the cache --------------------------------------------------------------------------------


def hub_cache() -> Path:
    """The Hugging Face hub cache, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface")
    return Path(home).expanduser() / "hub"


def repo_folder(hub_id: str) -> Path:
    return hub_cache() / ("models--" + hub_id.replace("/", "--"))


# The small files a component folder needs besides its weights: model, scheduler and generation configs, the
# tokenizer (tokenizer.json, vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json,
# added_tokens.json, spiece.model, chat_template.jinja/.json) and a processor's preprocessor configs.
CONFIG_SUFFIXES = (".json", ".txt", ".model", ".jinja")
# A set of weights: `diffusion_pytorch_model` (diffusers) or `model` (transformers), optionally with a variant
# (.fp16, .fp8, .non_ema) and shard numbers (diffusion_pytorch_model-00001-of-00003.safetensors,
# model.fp16-00001-of-00002.safetensors). A sharded set's index is `<name>.safetensors.index[.<variant>].json`.
_WEIGHTS = re.compile(r"^(?P<name>diffusion_pytorch_model|model)(?:\.(?P<variant>\w+))?(?P<shard>-\d{5}-of-\d{5})?\.safetensors$")
_INDEX = re.compile(r"\.(?:safetensors|bin)\.index(?:\.\w+)?\.json$")
_PREFERENCE = ("fp16", "")  # half precision when offered, else the unsuffixed weights (full precision, or bfloat16 for FLUX and Qwen)


def weight_set(inside: list[str]) -> list[str]:
    """One loadable set of weights among a folder's files, with its shard index when it is sharded."""
    sets: dict[str, list[str]] = {}
    for f in inside:
        m = _WEIGHTS.match(Path(f).name)
        if m:
            sets.setdefault(m["variant"] or "", []).append(f)
    if not sets:
        # Not named as diffusers or transformers name them: every safetensors file but EMA copies.
        return [f for f in inside if f.endswith(WEIGHT_SUFFIXES) and ".non_ema" not in f and ".ema." not in f]
    variant = next((v for v in _PREFERENCE if v in sets), None)
    if variant is None:
        return []  # only other variants (fp8, EMA): none that the loaders pick by default
    files = sets[variant]
    single = [f for f in files if not _WEIGHTS.match(Path(f).name)["shard"]]
    if single:  # both a single file and shards of it: the single file (without the index, diffusers then reads it)
        return single[:1]
    tail = (f".safetensors.index.{variant}.json" if variant else ".safetensors.index.json")
    name = _WEIGHTS.match(Path(files[0]).name)["name"]
    return files + [f for f in inside if Path(f).name == name + tail]


def wanted(files: list[str], components: tuple[str, ...]) -> list[str]:
    """The files of a repository worth fetching: configs, tokenizers and processor files of the given
    components (or of the top level when none are given), and one set of safetensors weights per folder,
    half precision when the repository has it, sharded or not (then with its index). Nothing else: no
    single files at the top of a diffusers repository (FLUX.1 Fill's 23.8 GB flux1-fill-dev.safetensors),
    no other variants (fp8), no subfolders of a component, no pickle, GGUF or ONNX files."""
    folders = components or ("",)
    picked = []
    for folder in folders:
        prefix = f"{folder}/" if folder else ""
        inside = [f for f in files if f.startswith(prefix) and "/" not in f[len(prefix):] and not Path(f).name.startswith(".")]
        configs = [f for f in inside if Path(f).suffix in CONFIG_SUFFIXES and not _INDEX.search(f)]
        picked += configs + weight_set(inside)
    if components:
        picked += [f for f in files if f == "model_index.json"]
    return sorted(set(picked))


def installed_path(hub_id: str) -> Path | None:
    """The local snapshot folder of a hub model when its files are all there, else None.

    A download of ours leaves a manifest of every file it fetched. A cache other tools wrote (`hf
    download`, `snapshot_download`, another app) has none, and is judged from its own layout instead."""
    return _installed(hub_id, ())


def installed_without(hub_id: str, component: str) -> Path | None:
    """The local snapshot of a hub model that is complete but for `component`'s weights (fetched by us
    without it, or with `hf download <id> --include …` naming the others), whose other components
    serve a transformer file the person has; or the whole model, which serves as well."""
    return _installed(hub_id, (component,))


def _installed(hub_id: str, may_lack: tuple[str, ...]) -> Path | None:
    refs = repo_folder(hub_id) / "refs" / "main"
    if not refs.is_file():
        return None
    snapshot = repo_folder(hub_id) / "snapshots" / refs.read_text().strip()
    if not (snapshot / MANIFEST).is_file():
        return snapshot if complete_by_layout(snapshot, skip=may_lack) else None
    manifest = _manifest(snapshot)
    files = manifest.get("files")
    if not isinstance(files, list) or not set(manifest.get("without", ())) <= set(may_lack):
        return None  # damaged, or fetched without components it may not lack
    return snapshot if all((snapshot / f).is_file() for f in files) else None


def _manifest(snapshot: Path) -> dict:
    try:
        manifest = json.loads((snapshot / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _used_components(index: dict) -> list[str]:
    """The components a model_index.json names that the pipeline loads (not the unused checker ones)."""
    return [name for name, value in index.items()
            if not name.startswith("_") and name not in UNUSED_COMPONENTS and isinstance(value, list) and None not in value]


def _left_out(snapshot: Path, fetched: list[str]) -> list[str]:
    """The components a diffusers repository's model_index.json names that a download did not fetch."""
    try:
        index = json.loads((snapshot / "model_index.json").read_text())
    except (OSError, ValueError):
        return []
    return sorted(name for name in _used_components(index) if not any(f.startswith(name + "/") for f in fetched))


def complete_by_layout(snapshot: Path, skip: tuple[str, ...] = ()) -> bool:
    """Whether a snapshot folder holds a loadable model: every link reaches its blob (huggingface_hub
    links a file into the snapshot only once it is whole), and with a model_index.json every component
    the pipeline uses is there, models (a folder with config.json) with safetensors weights; without
    one, a single model's config.json and weights. Components in `skip` may be missing."""
    if not snapshot.is_dir():
        return False
    files = list(snapshot.rglob("*"))
    if any(f.is_symlink() and not f.exists() for f in files):
        return False

    def has_weights(folder: Path) -> bool:
        return any(folder.glob("*.safetensors"))

    index = snapshot / "model_index.json"
    if not index.is_file():
        return (snapshot / "config.json").is_file() and has_weights(snapshot)
    try:
        components = json.loads(index.read_text())
    except ValueError:
        return False
    for name in _used_components(components):
        if name in skip:
            continue
        folder = snapshot / name
        if not folder.is_dir() or not any(folder.iterdir()):
            return False
        if (folder / "config.json").is_file() and not has_weights(folder):
            return False
    return True


def disk_bytes(path: Path | None) -> int:
    """Bytes a folder (or a single weights file) really occupies (symlinks into the blob store counted once)."""
    if path is None or not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    seen, total = set(), 0
    for f in path.rglob("*"):
        if f.is_file():
            real = f.resolve()
            if real not in seen:
                seen.add(real)
                total += real.stat().st_size
    return total


def delete(hub_id: str) -> int:
    """Remove a hub model from the cache; returns the bytes freed."""
    folder = repo_folder(hub_id)
    freed = disk_bytes(folder)
    shutil.rmtree(folder, ignore_errors=True)
    return freed


# ---- downloading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None  # for LFS files
    blob_id: str = ""  # git's id, which names small files in the cache

    @property
    def etag(self) -> str:
        return self.sha256 or self.blob_id


@dataclass(frozen=True)
class DownloadPlan:
    hub_id: str
    commit: str
    files: tuple[RemoteFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass
class DownloadProgress:
    hub_id: str
    done_bytes: int
    total_bytes: int
    bytes_per_second: float
    file: str
    files_done: int
    files_total: int


ProgressCallback = Callable[[DownloadProgress], None]


def _hub_error(hub_id: str, exc: BaseException) -> ModelUnavailable:
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    preset = sources.preset_for_hub(hub_id)
    known_gated = preset is not None and preset.gated
    refused = status in (401, 403) and isinstance(exc, HfHubHTTPError)
    if status == 401 and "invalid credentials" in str(getattr(response, "headers", {}).get("X-Error-Message", "")).lower():
        return ModelUnavailable(f"The Hugging Face hub refused the access token on this computer (it is not valid any more, or mistyped) "
                                f"while downloading {hub_id}: log in again with `hf auth login` (or correct HF_TOKEN) and download again.")
    if isinstance(exc, GatedRepoError) or (known_gated and refused):
        # 401: this computer is not logged in (or its token is not sent); 403: the account has no access yet.
        why = {401: " and this computer is not logged in to the Hugging Face hub",
               403: " and the account this computer is logged in with has no access to it yet (licence not accepted, or the request awaits review)",
               }.get(status, "")
        steps = sources.access_steps(hub_id, preset.licence if preset is not None else "")
        return ModelUnavailable(f"{hub_id} is gated{why}: {steps}, and download again.")
    if isinstance(exc, RepositoryNotFoundError) or (isinstance(exc, HfHubHTTPError) and status in (401, 404)):
        return ModelUnavailable(f"The Hugging Face hub has no model called {hub_id}, or it is private or gated: if you have access, "
                                "log in on this computer with `hf auth login` (or set HF_TOKEN) and download again.")
    if isinstance(exc, HfHubHTTPError) and status == 403:
        return ModelUnavailable(f"The Hugging Face hub refused access to {hub_id}: if it is gated, {sources.access_steps(hub_id)}; "
                                "then download again.")
    unreachable = unreachable_reason(exc)
    if unreachable:
        return ModelUnavailable(f"Sandcastle could not reach the Hugging Face hub to download {hub_id}: {unreachable}. "
                                "Check the connection (or the hub address in Settings) and download again; it resumes where it stopped.")
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelUnavailable(
        f"The download of {hub_id} stopped ({reason[:160]}). Check the connection and download again; it resumes where it stopped."
    )


def unreachable_reason(exc: BaseException) -> str:
    """Plain words for a network failure anywhere in the exception's chain ("[Errno -2] Name or service
    not known" means nothing to most people), or "" when it is not one."""
    import socket

    seen = exc
    while seen is not None:
        text = str(seen).lower()
        name = type(seen).__name__.lower()
        if isinstance(seen, socket.gaierror) or "name or service not known" in text or "name resolution" in text or "nodename nor servname" in text:
            return "the hub's address could not be looked up, so this computer seems to be offline"
        if isinstance(seen, TimeoutError) or "timeout" in name or "timed out" in text:
            return "the hub did not answer in time"
        if isinstance(seen, ConnectionError) or "connecterror" in name or "connection refused" in text or "connectionerror" in name:
            return "the connection to the hub failed"
        seen = seen.__cause__ or seen.__context__
    return ""


def plan(hub_id: str, components: tuple[str, ...] = (), endpoint: str | None = None) -> DownloadPlan:
    """Ask the hub which files to fetch and how large they are (one metadata call, with a timeout)."""
    if sources.offline():
        raise ModelUnavailable(sources.unavailable_message(sources.ModelSource("hub", hub_id)))
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=endpoint)
    try:
        commit = api.model_info(hub_id, timeout=float(os.environ["HF_HUB_ETAG_TIMEOUT"])).sha
        entries = [e for e in api.list_repo_tree(hub_id, recursive=True, revision=commit) if isinstance(e, RepoFile)]
    except Exception as exc:
        raise _hub_error(hub_id, exc) from None
    by_path = {e.path: e for e in entries}
    if not components and "model_index.json" in by_path:
        # A diffusers repository that is not a preset: fetch every component folder except the ones
        # Sandcastle never uses (the safety checker and its image processor).
        components = tuple(sorted({p.split("/")[0] for p in by_path if "/" in p} - UNUSED_COMPONENTS))
    chosen = wanted(list(by_path), components)
    if not any(f.endswith(WEIGHT_SUFFIXES) for f in chosen):
        raise ModelUnavailable(f"{hub_id} has no .safetensors weights; Sandcastle does not download pickle-based files.")
    files = tuple(
        RemoteFile(p, int(by_path[p].size), by_path[p].lfs.sha256 if by_path[p].lfs is not None else None, by_path[p].blob_id)
        for p in chosen
    )
    return DownloadPlan(hub_id, commit, files)


@dataclass
class _Counter:
    plan: DownloadPlan
    on_progress: ProgressCallback
    done_before: int = 0  # bytes of the files already finished
    current: int = 0  # bytes of the file being fetched, including what a resume started from
    file: str = ""
    files_done: int = 0
    started: float = field(default_factory=time.monotonic)
    received: int = 0  # bytes that came over the network now (for the speed)
    last_report: float = 0.0

    def report(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_report < 0.1:
            return
        self.last_report = now
        speed = self.received / max(now - self.started, 1e-3)
        self.on_progress(DownloadProgress(self.plan.hub_id, self.done_before + self.current, self.plan.total_bytes, speed,
                                          self.file, self.files_done, len(self.plan.files)))


RETRIES = 3  # a dropped connection is resumed this many times in a row before giving up


def download(
    hub_id: str,
    components: tuple[str, ...] = (),
    on_progress: ProgressCallback = lambda p: None,
    cancel: CancelToken | None = None,
    endpoint: str | None = None,
) -> Path:
    """Fetch a hub model into the cache (resuming partial files) and return its snapshot folder."""
    cancel = cancel or CancelToken()
    the_plan = plan(hub_id, components, endpoint)
    counter = _Counter(the_plan, on_progress)
    folder = repo_folder(hub_id)
    check_free_space(folder, sum(f.size for f in the_plan.files if not (folder / "blobs" / f.etag).is_file()))
    snapshot = folder / "snapshots" / the_plan.commit
    for remote in the_plan.files:
        cancel.raise_if_cancelled()
        counter.file, counter.current = remote.path, 0
        blob = folder / "blobs" / remote.etag
        if not blob.is_file():
            _fetch(hub_id, remote, the_plan.commit, endpoint, blob, counter, cancel)
        _link(snapshot / remote.path, blob)
        counter.done_before += remote.size
        counter.current = 0
        counter.files_done += 1
    counter.report(force=True)
    # Written last: a snapshot counts as installed only once every planned file is in place. `without`
    # names the pipeline's components left out on purpose (a transformer file's preset fetched without
    # its transformer): such a snapshot serves that file but is not the whole model.
    fetched = [f.path for f in the_plan.files]
    manifest = {"files": fetched, "commit": the_plan.commit, "without": _left_out(snapshot, fetched)}
    (snapshot / MANIFEST).write_text(json.dumps(manifest))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(the_plan.commit)
    return snapshot


def check_free_space(folder: Path, needed: int) -> None:
    """Refuse a download that cannot fit, before it starts, naming both sizes (a full disk halfway
    through a 5 GB download is worse than no download)."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise ModelUnavailable(f"The download needs {needed / 1e9:.1f} GB but only {free / 1e9:.1f} GB is free on the disk of "
                               f"the Hugging Face cache ({hub_cache()}); free some space or set HF_HOME to a larger disk.")


def _fetch(hub_id: str, remote: RemoteFile, commit: str, endpoint: str | None, blob: Path, counter: _Counter, cancel: CancelToken) -> None:
    """Transfer one file to `blob`, continuing a partial file with a Range request, then verify it."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    blob.parent.mkdir(parents=True, exist_ok=True)
    partial = blob.with_name(blob.name + ".sandcastle-partial")
    url = hf_hub_url(hub_id, remote.path, revision=commit, endpoint=endpoint)
    timeout = float(os.environ["HF_HUB_DOWNLOAD_TIMEOUT"])
    failures = 0
    while True:
        have = partial.stat().st_size if partial.exists() else 0
        if have > remote.size:  # not ours to continue: start again
            partial.unlink()
            have = 0
        counter.current = have
        counter.report(force=True)
        if have == remote.size:
            break
        headers = build_hf_headers()
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with get_session().stream("GET", url, headers=headers, follow_redirects=True, timeout=timeout) as response:
                hf_raise_for_status(response)
                if have and response.status_code != 206:  # the server ignored the range: take it from the start
                    have = 0
                    counter.current = 0
                with open(partial, "ab" if have else "wb") as out:
                    for chunk in response.iter_bytes(64 * 1024):  # small, so a dropped connection loses little
                        out.write(chunk)
                        counter.current += len(chunk)
                        counter.received += len(chunk)
                        counter.report()
                        cancel.raise_if_cancelled()  # stops within one chunk; the partial file stays for later
            failures = 0
        except Cancelled:
            raise
        except Exception as exc:
            failures = 1 if counter.current > have else failures + 1  # only attempts that got nothing count against the limit
            if failures > RETRIES or not _transient(exc):
                raise _hub_error(hub_id, exc) from None
            time.sleep(0.5)
    if remote.sha256 is not None and _sha256(partial, cancel) != remote.sha256:
        partial.unlink()
        raise ModelUnavailable(f"{remote.path} of {hub_id} arrived damaged (its checksum does not match); it was removed, download again.")
    os.replace(partial, blob)


def _transient(exc: BaseException) -> bool:
    """A dropped or timed-out connection (worth resuming), as opposed to an answer from the server."""
    from huggingface_hub.errors import HfHubHTTPError

    return not isinstance(exc, HfHubHTTPError)


def _link(path: Path, blob: Path) -> None:
    """Put a blob at its place in the snapshot, as huggingface_hub does: a relative symlink, or a copy where
    the file system has no symlinks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        if path.resolve() == blob.resolve():
            return
        path.unlink()
    try:
        path.symlink_to(os.path.relpath(blob, path.parent))
    except OSError:
        shutil.copyfile(blob, path)


def _sha256(path: Path, cancel: CancelToken) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * 1024 * 1024):
            digest.update(chunk)
            cancel.raise_if_cancelled()
    return digest.hexdigest()


