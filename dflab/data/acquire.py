"""Acquisition: FaceForensics++ over its HTTP protocol and DFDC through the Kaggle client,
unattended (no prompts), resumable, and in parts under a disk budget.

FaceForensics++: the server address comes from the user (the access e-mail's script); it is never
hard-coded and never logged: messages name it "server 1", "server 2". Terms are accepted with an
explicit flag. Files are fetched in parallel threads, with retries and exponential backoff, HTTP
Range resume into ``.part`` files, a size check against Content-Length, fallback across the given
servers, and a manifest of finished files.

DFDC: the official ``kaggle`` client behind a narrow interface (:class:`KaggleSource`); parts are
downloaded, safely extracted, handed to a callback (preprocessing), and their raw videos deleted,
one after another, while the next download overlaps the current processing when the budget allows.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import requests

from dflab.core.events import Callback, Cancelled, CancelToken, Emitter
from dflab.core.files import write_json
from dflab.data.sources import read_ffpp_split_files

log = logging.getLogger(__name__)

__all__ = ["FFPP_DATASETS", "FFPP_TOS", "FileJob", "DownloadError", "FFPPClient", "plan_ffpp",
           "download_files", "download_ffpp", "load_official_splits", "KaggleSource",
           "KaggleClient", "stream_dfdc", "safe_extract", "DFDC_COMPETITION", "dir_size"]

FFPP_DATASETS = {
    "original": "original_sequences/youtube",
    "actors": "original_sequences/actors",
    "Deepfakes": "manipulated_sequences/Deepfakes",
    "Face2Face": "manipulated_sequences/Face2Face",
    "FaceSwap": "manipulated_sequences/FaceSwap",
    "NeuralTextures": "manipulated_sequences/NeuralTextures",
    "FaceShifter": "manipulated_sequences/FaceShifter",
    "DeepFakeDetection": "manipulated_sequences/DeepFakeDetection",
}
FFPP_TOS = "webpage/FaceForensics_TOS.pdf"
SPLITS_URL = "https://raw.githubusercontent.com/ondyari/FaceForensics/master/dataset/splits/{}.json"
DFDC_COMPETITION = "deepfake-detection-challenge"
DFDC_RULES = f"https://www.kaggle.com/competitions/{DFDC_COMPETITION}/rules"


class DownloadError(RuntimeError):
    """A file that could not be fetched from any server; the message says why and what to do."""


@dataclass(frozen=True)
class FileJob:
    path: str  # relative to the server's base and to the local root: "<dataset>/<c>/videos/x.mp4"
    dest: Path


# ------------------------------------------------------------------------------ FF++ protocol
class FFPPClient:
    """Speaks the FaceForensics++ download protocol against one or more server addresses.

    ``chunk``: bytes per read; a connection cut mid-read loses at most one chunk (urllib3 drops
    the partial read), so it is kept small for resumes to start close to where the cut was."""

    def __init__(self, servers: Iterable[str], timeout: float = 30.0, retries: int = 4,
                 backoff: float = 1.0, chunk: int = 1 << 16):
        self.servers = [s.rstrip("/") for s in servers if s]
        if not self.servers:
            raise ValueError("no FF++ server address given: set data.ffpp_server (or the "
                             "DFLAB_FFPP_SERVER environment variable) to the address in the "
                             "script you received after filling in the FaceForensics++ form")
        self.timeout, self.retries, self.backoff, self.chunk = timeout, retries, backoff, chunk
        self.session = requests.Session()

    def name(self, i: int) -> str:
        """How a server is named in messages: never its address."""
        return f"server {i + 1}"

    def base(self, i: int) -> str:
        return f"{self.servers[i]}/v3/"

    def get_json(self, rel: str) -> Any:
        errors = []
        for i in range(len(self.servers)):
            try:
                r = self.session.get(self.base(i) + rel, timeout=self.timeout)
                r.raise_for_status()
                return r.json()
            except (requests.RequestException, ValueError) as exc:
                errors.append(f"{self.name(i)}: {_redact(str(exc), self.servers)}")
        raise DownloadError(f"could not fetch {rel} from any server ({'; '.join(errors)})")

    def filelist(self) -> list[list[str]]:
        """The ``[target, source]`` id pairs of the release."""
        return self.get_json("misc/filelist.json")

    def fetch(self, job: FileJob, progress: Callable[[int], None] | None = None,
              cancel: CancelToken | None = None) -> int:
        """Fetch one file, resuming a ``.part`` file with HTTP Range; tries every server, each
        with retries and exponential backoff. Returns the file's size."""
        job.dest.parent.mkdir(parents=True, exist_ok=True)
        part = job.dest.with_name(job.dest.name + ".part")
        errors = []
        for i in range(len(self.servers)):
            url = self.base(i) + job.path
            for attempt in range(self.retries):
                if cancel is not None:
                    cancel.check()
                try:
                    return self._fetch_once(url, part, job.dest, progress, cancel)
                except Cancelled:
                    raise
                except _NotFound as exc:
                    errors.append(f"{self.name(i)}: 404 not found")
                    log.info("%s: %s", self.name(i), exc)
                    break  # another attempt at this server will not help
                except (requests.RequestException, _Mismatch, OSError) as exc:
                    msg = _redact(str(exc), self.servers)
                    errors.append(f"{self.name(i)} try {attempt + 1}: {msg}")
                    time.sleep(self.backoff * 2 ** attempt)
        raise DownloadError(f"could not download '{job.path}': {'; '.join(errors[-4:])}. "
                            f"Check the server address and the file name; a re-run resumes")

    def _fetch_once(self, url: str, part: Path, dest: Path, progress, cancel) -> int:
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with self.session.get(url, headers=headers, stream=True, timeout=self.timeout) as r:
            if r.status_code == 404:
                raise _NotFound(url)
            if r.status_code == 416:  # asked past the end: the part is already whole
                total = have
            else:
                r.raise_for_status()
                if have and r.status_code != 206:
                    have = 0  # the server ignored Range: start over
                length = r.headers.get("Content-Length")
                total = have + int(length) if length is not None else -1
                with part.open("ab" if have else "wb") as fh:
                    for block in r.iter_content(self.chunk):
                        if cancel is not None and cancel.cancelled:
                            raise Cancelled("download cancelled; the .part file is kept and a "
                                            "re-run resumes it")
                        fh.write(block)
                        if progress:
                            progress(len(block))
        size = part.stat().st_size
        if total >= 0 and size != total:
            raise _Mismatch(f"got {size} bytes, the server announced {total}; resuming")
        os.replace(part, dest)
        return size


class _NotFound(Exception):
    pass


class _Mismatch(Exception):
    pass


def _redact(text: str, servers: list[str]) -> str:
    for i, s in enumerate(servers):
        text = text.replace(s, f"<server {i + 1}>")
        host = s.split("://", 1)[-1].split("/", 1)[0]
        if host:
            text = text.replace(host, f"<server {i + 1}>")
    return text


def load_official_splits(splits_dir: str | Path = "", cache: str | Path = "") -> dict[str, list]:
    """The official FF++ ``train/val/test.json`` id pairs: from ``splits_dir`` when given, else
    from the FaceForensics GitHub repository (cached in ``cache``)."""
    if splits_dir:
        return read_ffpp_split_files(splits_dir)
    out = {}
    for split in ("train", "val", "test"):
        cached = Path(cache) / f"ffpp_{split}.json" if cache else None
        if cached is not None and cached.exists():
            out[split] = json.loads(cached.read_text())
            continue
        r = requests.get(SPLITS_URL.format(split), timeout=30)
        r.raise_for_status()
        out[split] = r.json()
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps(out[split]))
    return out


def plan_ffpp(pairs: list[list[str]], splits: dict[str, list], methods: list[str],
              compressions: list[str], root: Path, per_split: int = 0,
              kind: str = "videos") -> tuple[list[FileJob], dict[str, str]]:
    """Files to fetch: originals and each method's fakes for the chosen id pairs.

    ``per_split`` > 0 takes the first N pairs of each official split (all when 0); a fake is
    always planned together with its original. Returns (jobs, id -> split).
    """
    if kind not in ("videos", "masks"):
        raise ValueError(f"kind '{kind}' must be videos or masks")
    for m in methods:
        if m not in FFPP_DATASETS or m in ("original", "actors"):
            raise ValueError(f"unknown FF++ method '{m}'; choose from "
                             f"{[k for k in FFPP_DATASETS if k not in ('original', 'actors')]}")
    release = {tuple(sorted(p)) for p in pairs}
    chosen, split_of = [], {}
    for split, sp in splits.items():
        sp = [p for p in sp if tuple(sorted(p)) in release] if release else sp
        for p in (sp[:per_split] if per_split else sp):
            chosen.append(p)
            for vid in p:
                split_of[vid] = split
    jobs = []
    for comp in compressions:
        if kind == "videos":
            for p in chosen:
                for vid in p:
                    rel = f"{FFPP_DATASETS['original']}/{comp}/videos/{vid}.mp4"
                    jobs.append(FileJob(rel, root / rel))
        for m in methods:
            for a, b in chosen:
                for name in (f"{a}_{b}", f"{b}_{a}"):
                    rel = (f"{FFPP_DATASETS[m]}/{comp}/videos/{name}.mp4" if kind == "videos"
                           else f"{FFPP_DATASETS[m]}/masks/videos/{name}.mp4")
                    jobs.append(FileJob(rel, root / rel))
    seen, unique = set(), []
    for j in jobs:
        if j.path not in seen:
            seen.add(j.path)
            unique.append(j)
    return unique, split_of


def download_files(client: FFPPClient, jobs: list[FileJob], manifest: Path, workers: int = 4,
                   callbacks: list[Callback] | None = None,
                   cancel: CancelToken | None = None) -> dict[str, Any]:
    """Fetch ``jobs`` in parallel; finished files go to ``manifest`` (JSON lines) and are
    skipped on the next run. Progress is in bytes (speed and ETA from the events)."""
    em = Emitter("download", callbacks, cancel)
    done = set()
    if manifest.exists():
        for line in manifest.read_text().splitlines():
            if line.strip():
                done.add(json.loads(line)["path"])
    todo = [j for j in jobs if j.path not in done or not j.dest.exists()]
    lock = threading.Lock()
    state = {"bytes": 0, "files": len(jobs) - len(todo)}
    failed: dict[str, str] = {}

    def tick(n: int) -> None:
        with lock:
            state["bytes"] += n
            em.progress(state["bytes"], 0, "B", f"{state['files']}/{len(jobs)} files")

    def one(job: FileJob) -> None:
        size = client.fetch(job, tick, em.cancel)
        with lock:
            state["files"] += 1
            with manifest.open("a") as fh:
                fh.write(json.dumps({"path": job.path, "bytes": size}) + "\n")
            em.progress(state["bytes"], 0, "B", f"{state['files']}/{len(jobs)} files")

    manifest.parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        futs = {pool.submit(one, j): j for j in todo}
        for fut in as_completed(futs):
            exc = fut.exception()
            if isinstance(exc, Cancelled):
                for f in futs:
                    f.cancel()
                raise exc
            if exc is not None:
                failed[futs[fut].path] = str(exc)
                em.error(str(exc), item=futs[fut].path)
    report = {"files": len(jobs), "fetched": len(todo) - len(failed),
              "already_done": len(jobs) - len(todo), "failed": failed, "bytes": state["bytes"]}
    em.result(**{k: v for k, v in report.items() if k != "failed"}, n_failed=len(failed))
    return report


def download_ffpp(root: str | Path, servers: list[str], accept_tos: bool, methods: list[str],
                  compressions: list[str], per_split: int = 0, splits_dir: str | Path = "",
                  workers: int = 4, kind: str = "videos", client: FFPPClient | None = None,
                  callbacks: list[Callback] | None = None,
                  cancel: CancelToken | None = None) -> dict[str, Any]:
    """A split-aware FF++ subset into ``root`` in the official layout, plus ``splits/``."""
    if not accept_tos:
        raise PermissionError("FaceForensics++ needs its terms of use accepted: read "
                              f"<server>/{FFPP_TOS} and set data.ffpp_accept_tos=true "
                              "(or tick the box in the dashboard)")
    root = Path(root)
    client = client or FFPPClient(servers)
    pairs = client.filelist()
    splits = load_official_splits(splits_dir, root / "splits_cache")
    (root / "splits").mkdir(parents=True, exist_ok=True)
    for s, v in splits.items():
        (root / "splits" / f"{s}.json").write_text(json.dumps(v))
    jobs, split_of = plan_ffpp(pairs, splits, methods, compressions, root, per_split, kind)
    report = download_files(client, jobs, root / "manifest.jsonl", workers, callbacks, cancel)
    report["ids"] = len(split_of)
    write_json(root / "download_report.json", report)
    return report


# ------------------------------------------------------------------------------ DFDC (Kaggle)
class KaggleSource(Protocol):
    """The narrow interface the DFDC stream needs (the real one wraps the kaggle client)."""

    def list_files(self) -> list[tuple[str, int]]: ...

    def download(self, name: str, dest_dir: Path) -> Path: ...


class KaggleClient:
    """The official ``kaggle`` client. Credentials: ``KAGGLE_USERNAME``/``KAGGLE_KEY``, then
    ``~/.kaggle/kaggle.json``, then Colab secrets; they are never printed or logged."""

    def __init__(self, competition: str = DFDC_COMPETITION):
        self.competition = competition
        if not (os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")):
            self._colab_secrets()
        from kaggle.api.kaggle_api_extended import KaggleApi

        self.api = KaggleApi()
        try:
            self.api.authenticate()
        except Exception as exc:
            raise PermissionError("Kaggle credentials not found: set KAGGLE_USERNAME and "
                                  "KAGGLE_KEY, put kaggle.json in ~/.kaggle/, or add both as "
                                  f"Colab secrets ({type(exc).__name__})") from None

    @staticmethod
    def _colab_secrets() -> None:
        try:
            from google.colab import userdata  # type: ignore[import-not-found]

            os.environ["KAGGLE_USERNAME"] = userdata.get("KAGGLE_USERNAME")
            os.environ["KAGGLE_KEY"] = userdata.get("KAGGLE_KEY")
        except Exception:
            pass

    def _wrap(self, exc: Exception, what: str) -> Exception:
        text = str(exc)
        if "403" in text:
            return PermissionError(f"Kaggle refused {what} (403): accept the competition rules "
                                   f"at {DFDC_RULES} with the same account, then re-run")
        if "404" in text:
            return FileNotFoundError(f"Kaggle has no {what} (404): check the part name")
        return exc

    def list_files(self) -> list[tuple[str, int]]:
        try:
            res = self.api.competition_list_files(self.competition)
        except Exception as exc:
            raise self._wrap(exc, "the file list") from None
        files = getattr(res, "files", res)
        return [(f.name, int(getattr(f, "total_bytes", 0) or 0)) for f in files]

    def download(self, name: str, dest_dir: Path) -> Path:
        try:
            self.api.competition_download_file(self.competition, name, path=str(dest_dir),
                                               quiet=True)
        except Exception as exc:
            raise self._wrap(exc, f"'{name}'") from None
        path = dest_dir / Path(name).name
        if not path.exists() and path.with_suffix(path.suffix + ".zip").exists():
            path = path.with_suffix(path.suffix + ".zip")
        return path


def safe_extract(archive: Path, dest: Path) -> list[Path]:
    """Extract a zip, refusing any member that would land outside ``dest`` or is a link."""
    dest = dest.resolve()
    out = []
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = (dest / info.filename).resolve()
            if not str(target).startswith(str(dest) + os.sep) and target != dest:
                raise ValueError(f"'{archive}' member '{info.filename}' would escape "
                                 f"'{dest}'; refusing to extract this archive")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise ValueError(f"'{archive}' member '{info.filename}' is a symbolic link; "
                                 f"refusing to extract this archive")
        for info in zf.infolist():
            zf.extract(info, dest)
            out.append(dest / info.filename)
    return out


def dir_size(path: Path) -> int:
    """Bytes of the files under ``path``. The DFDC stream measures while the previous part's
    files are being deleted, so a file or folder that vanishes mid-walk counts as gone (os.walk
    skips unreadable folders; a failed stat skips the file) instead of raising."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                st = os.stat(os.path.join(folder, name))
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def _plan_parts(source: KaggleSource, parts: list[int] | None, state_path: Path
                ) -> tuple[dict[str, int], list[str], set[str]]:
    """(part zip -> size in bytes as Kaggle lists it, the parts wanted in order, the parts a
    previous run finished)."""
    files = dict(source.list_files())
    wanted = sorted(n for n in files if n.startswith("dfdc_train_part_") and n.endswith(".zip"))
    if parts is not None:
        names = {f"dfdc_train_part_{i}.zip" for i in parts}
        missing = sorted(names - set(wanted))
        if missing:
            raise FileNotFoundError(f"Kaggle lists no {missing}; DFDC parts are 0..49")
        wanted = [n for n in wanted if n in names]
    done = set(json.loads(state_path.read_text())) if state_path.exists() else set()
    return files, wanted, done


def _extract_part(zpath: Path, raw: Path, name: str, measure: Callable[[], None]) -> Path:
    """Extract a part's zip under ``raw`` (a partial extraction from a killed run is removed
    first), delete the zip, and return the folder holding the part's metadata.json."""
    part_dir = raw / Path(name).stem
    if part_dir.exists():
        shutil.rmtree(part_dir)
    safe_extract(zpath, raw)
    measure()  # zip and extracted videos side by side: the part's peak
    zpath.unlink()
    measure()
    inner = part_dir if part_dir.exists() else raw
    if not (inner / "metadata.json").exists():
        candidates = list(raw.glob(f"**/{Path(name).stem}/metadata.json"))
        if not candidates:
            raise FileNotFoundError(f"part '{name}' has no metadata.json; the archive is "
                                    f"incomplete: delete it and re-run")
        inner = candidates[0].parent
    return inner


def stream_dfdc(source: KaggleSource, root: str | Path, process: Callable[[Path], Any],
                parts: list[int] | None = None, max_disk_gb: float = 50.0,
                keep_raw: bool = False, callbacks: list[Callback] | None = None,
                cancel: CancelToken | None = None) -> dict[str, Any]:
    """DFDC part by part: download a part's zip, extract it safely, ``process(part_dir)``
    (preprocessing), delete the raw videos (``metadata.json`` is kept; ``keep_raw`` keeps all),
    then the next part. The
    next download runs while the current part is processed when zip + extracted size of both fit
    the budget. Finished parts are recorded in ``<root>/parts_done.json``; a re-run skips them.
    Peak disk use of ``root``'s raw data is measured and reported."""
    # Long on purpose: the download of the next part overlaps the processing of this one under one
    # disk budget; the loop keeps both in view.
    root = Path(root)
    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    em = Emitter("dfdc", callbacks, cancel)
    budget = int(max_disk_gb * 2**30)
    state_path = root / "parts_done.json"
    files, wanted, done = _plan_parts(source, parts, state_path)
    todo = [n for n in wanted if n not in done]
    for n in todo:
        need = 2 * files[n]  # the zip and its extracted videos side by side
        if need > budget:
            raise ValueError(f"part '{n}' needs about {need / 2**30:.1f} GiB (zip + extracted) "
                             f"but data.max_disk_gb is {max_disk_gb}; raise the budget")
    peak = 0
    lock = threading.Lock()

    def measure() -> None:
        nonlocal peak
        with lock:
            peak = max(peak, dir_size(raw))

    def fetch(name: str) -> Path:
        measure()
        zdir = raw / "zips"
        zdir.mkdir(parents=True, exist_ok=True)
        path = source.download(name, zdir)
        measure()
        return path

    em.progress(len(done & set(wanted)), len(wanted), "part")
    pool = ThreadPoolExecutor(1)
    pending = None
    processed = []
    try:
        for k, name in enumerate(todo):
            em.check()
            fut = pending if pending is not None else pool.submit(fetch, name)
            pending = None
            inner = _extract_part(fut.result(), raw, name, measure)
            nxt = todo[k + 1] if k + 1 < len(todo) else None
            if nxt is not None and dir_size(raw) + 2 * files[nxt] <= budget:
                pending = pool.submit(fetch, nxt)  # overlap the next download
            process(inner)
            for p in ([] if keep_raw else inner.iterdir()):
                if p.name != "metadata.json":
                    p.unlink() if p.is_file() else shutil.rmtree(p)
            measure()
            done.add(name)
            write_json(state_path, sorted(done))
            processed.append(name)
            em.progress(len(done & set(wanted)), len(wanted), "part", name)
    finally:
        if pending is not None:
            pending.cancel()
        pool.shutdown(wait=True)
    report = {"parts": len(wanted), "processed": processed,
              "skipped_done": sorted(set(wanted) - set(todo)),
              "peak_raw_bytes": peak, "budget_bytes": budget}
    write_json(root / "stream_report.json", report)
    em.result(**report)
    return report
