"""Detached jobs: a long ``Lab`` call in its own process, so it outlives the page, the kernel and
the shell that started it.

A job lives in a folder (a training run's own run folder, else ``<data root>/jobs/<method>-<name>``):

- ``job.json``: what to run (the ``Lab`` method, its arguments, the data root) and ``config.yaml``
  beside it, the lab config at launch;
- ``events.jsonl``: append-only, one JSON line per event (the typed events of
  :mod:`dflab.core.events`); every job in the folder starts with a ``JobStart`` line, so a resumed
  run's earlier steps stay readable;
- ``status.json``: state (``starting``, ``running``, ``done``, ``failed``, ``cancelled``), the
  process id, start and end times, a one-line summary or the error;
- ``job.lock``: held while the job runs (its process id): one job per folder at a time. A lock
  whose process is gone is stale and the next start replaces it; the state then reads ``killed``;
- ``result.json``: the call's return value (a :mod:`dflab.core.results` dataclass, as tagged JSON:
  reading it builds nothing but those dataclasses, paths, tuples and plain values, unlike a
  pickle, which could run code planted in the data folder); ``job.log``: the process's own
  output (tracebacks).

Cancelling writes a ``cancel`` file (or send the process SIGTERM): the job stops at its next
check with its finished work kept, as a cancel token does in-process.

Any process can watch a job (:meth:`Job.read_events`, :meth:`Job.status`): the dashboard
re-attaches to a running job after a page reload this way. Written by hand: no library runs a
Python call detached with a file-based event log that a second process can follow.
"""

from __future__ import annotations

import atexit
import dataclasses
import importlib
import inspect
import json
import logging
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from dflab.core import events as ev, results
from dflab.core.config import load_config, save_config
from dflab.core.files import DamagedFile, read_json, write_json

__all__ = ["Job", "JobBusy", "start_job", "list_jobs", "job_folder", "run_job",
           "DETACHED_METHODS", "warm_up"]

# Lab methods a detached job may call, and the run kind whose folder holds the job (or None:
# the job gets a folder under <data root>/jobs)
DETACHED_METHODS: dict[str, str | None] = {
    "train": "train", "preprocess": None, "features": None, "demo_data": None,
    "train_forensic": "forensic", "fuse": "fuse", "evaluate": None, "sync_train": "sync",
    "sync_extract": None, "protocol": None, "robustness": None, "fetch_and_preprocess": None,
    "talking_set": None,
}  # (not FF++'s download: its arguments hold the private server address, kept off the disk)
log = logging.getLogger(__name__)
TERMINAL = ("done", "failed", "cancelled", "killed")
# the argument that makes ``python -m dflab`` a job process (and marks one in the process list)
JOB_PROCESS = "job-process"
PROGRESS_INTERVAL_S = 0.25  # Progress events are written at most this often (others always)


class JobBusy(RuntimeError):
    """A job is already running in that folder."""


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is a dflab job (not a recycled pid)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # Linux: a recycled pid belongs to some other program
        try:
            text = cmdline.read_bytes()
            return JOB_PROCESS.encode() in text or not text  # empty: a zombie being reaped
        except OSError:
            return False
    return True


def job_folder(runs_root: Path, data_root: Path, method: str, name: str) -> Path:
    """Where the job of ``method`` named ``name`` lives: the run folder for methods that make a
    run (``train`` -> ``<runs>/train-<name>``), else ``<data root>/jobs/<method>-<name>``."""
    if method not in DETACHED_METHODS:
        raise ValueError(f"'{method}' cannot run as a detached job; allowed: "
                         f"{sorted(DETACHED_METHODS)}")
    kind = DETACHED_METHODS[method]
    return runs_root / f"{kind}-{name}" if kind else data_root / "jobs" / f"{method}-{name}"


def _event_to_json(event: ev.Event) -> str:
    return json.dumps({"type": type(event).__name__, **dataclasses.asdict(event)}, default=str)


def _event_from_json(line: str) -> ev.Event | dict | None:
    """An event object, the ``JobStart`` marker as a dict, or None for a torn last line."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    kind = data.pop("type", "")
    if kind in ("JobStart", "JobEnd"):  # the markers around each job
        return {"type": kind, **data}
    cls = getattr(ev, kind, None) if isinstance(kind, str) else None
    if not (isinstance(cls, type) and issubclass(cls, ev.Event)):
        return None
    try:
        return cls(**data)
    except TypeError:  # a line of other fields (a damaged log): left out like a torn one
        return None


class Job:
    """A handle on the job in ``folder`` (running or finished), from any process."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def __repr__(self) -> str:
        return f"Job('{self.folder}', state={self.state!r})"

    @property
    def spec(self) -> dict[str, Any]:
        """job.json: the ``Lab`` method, its keyword arguments, the data root, the config."""
        path = self.folder / "job.json"
        redo = "start the job again"
        spec = read_json(path, "job file", redo)
        if not (isinstance(spec, dict) and isinstance(spec.get("method"), str)
                and isinstance(spec.get("kwargs", {}), dict)):
            raise DamagedFile(f"job file '{path}' is damaged (no method name and keyword "
                              f"arguments); {redo}")
        return spec

    @property
    def method(self) -> str:
        return self.spec["method"]

    def status(self) -> dict[str, Any]:
        """status.json, with ``state`` ``killed`` when it says running but the process is gone."""
        path = self.folder / "status.json"
        if not path.exists():
            return {"state": "none"}
        try:
            st = read_json(path)
        except (ValueError, OSError):  # written atomically; a reader never sees half
            return {"state": "none"}
        if not isinstance(st, dict):
            return {"state": "none"}
        state = st.get("state")
        if state == "starting":  # written before the spawn; the lock gets the child's pid
            try:
                pid = int((self.folder / "job.lock").read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            young = time.time() - float(st.get("started", 0)) < 30
            if not (_alive(pid) or (young and not pid)):
                state = "gone"
        elif state == "running" and not _alive(int(st.get("pid") or 0)):
            state = "gone"
        if state == "gone":
            st = {**st, "state": "killed",
                  "message": f"the job's process ({st.get('pid')}) ended without a result "
                             f"(killed or out of memory); see {self.folder / 'job.log'}"}
        return st

    @property
    def state(self) -> str:
        return self.status()["state"]

    @property
    def running(self) -> bool:
        return self.state in ("starting", "running")

    def read_events(self, offset: int = 0) -> tuple[list[ev.Event | dict], int]:
        """Events written from byte ``offset`` on, and the offset to read from next time (a
        partly written last line is left for the next read)."""
        path = self.folder / "events.jsonl"
        if not path.exists():
            return [], offset
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        out = [e for e in (_event_from_json(line) for line in
                           data[:end].decode("utf-8", "replace").splitlines() if line)
               if e is not None]
        return out, offset + end

    def current_offset(self) -> int:
        """The byte offset of the newest job's ``JobStart`` line (where its own events begin)."""
        path = self.folder / "events.jsonl"
        if not path.exists():
            return 0
        data = path.read_bytes()
        at = data.rfind(b'{"type": "JobStart"')
        return max(at, 0)

    def cancel(self) -> None:
        """Ask the job to stop at its next check (finished work is kept)."""
        (self.folder / "cancel").write_text(str(time.time()))
        pid = int(self.status().get("pid") or 0)
        if self.running and _alive(pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass

    def wait(self, timeout: float | None = None, poll: float = 0.2) -> str:
        """Block until the job ends (or ``timeout`` seconds); returns its state."""
        end = None if timeout is None else time.monotonic() + timeout
        while self.running and (end is None or time.monotonic() < end):
            time.sleep(poll)
        return self.state

    def result(self) -> Any:
        """The ``Lab`` call's return value once the job is done (``result.json``, see
        :func:`result_from_json`)."""
        path = self.folder / "result.json"
        if self.state != "done" or not path.exists():
            raise RuntimeError(f"job '{self.folder}' has no result (state {self.state})")
        return result_from_json(path)


# A result as tagged JSON. Written by hand: pickle would run code, and a plain JSON dump loses
# the dataclass, Path and tuple types the dashboard reads back.
def _tagged(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if getattr(results, type(value).__name__, None) is not type(value):
            raise TypeError(f"{type(value).__name__} is not a dflab.core.results class")
        return {"__result__": type(value).__name__,
                **{f.name: _tagged(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, Path):
        return {"__path__": str(value)}
    if isinstance(value, tuple):
        return {"__tuple__": [_tagged(v) for v in value]}
    if isinstance(value, list):
        return [_tagged(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"a result's dict keys must be text: {list(value)[:5]}")
        return {k: _tagged(v) for k, v in value.items()}
    if hasattr(value, "item") and hasattr(value, "dtype"):  # a NumPy scalar or array
        return value.tolist()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"a result holds a {type(value).__name__}, which result.json cannot keep")


def _untagged(obj: dict) -> Any:
    if "__path__" in obj:
        return Path(obj["__path__"])
    if "__tuple__" in obj:
        return tuple(obj["__tuple__"])
    if "__result__" in obj:
        fields = {k: v for k, v in obj.items() if k != "__result__"}
        cls = getattr(results, str(obj["__result__"]), None)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise ValueError(f"unknown result type {obj['__result__']!r}")
        return cls(**fields)
    return obj


def result_to_json(result: Any, path: Path) -> None:
    """Write ``result`` to ``path`` atomically (:func:`dflab.core.files.write_json`)."""
    write_json(path, _tagged(result))


def result_from_json(path: Path) -> Any:
    """The result written by :func:`result_to_json`; a damaged file is a ValueError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"), object_hook=_untagged)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"job result '{path}' is damaged ({exc}); run the job again") from None


def _take_lock(folder: Path) -> int:
    """Create ``job.lock`` exclusively, replacing a stale one; raises :class:`JobBusy`."""
    lock = folder / "job.lock"
    for _ in range(2):
        try:
            return os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                raise JobBusy(f"'{folder}' already has a running job (process {pid}): follow or "
                              f"cancel it (dashboard, or `dflab jobs cancel {folder}`), or use "
                              f"another name") from None
            if not pid and time.time() - lock.stat().st_mtime < 10:  # a launcher mid-spawn
                raise JobBusy(f"'{folder}' is being started by another process") from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
    raise JobBusy(f"could not take the lock '{lock}'")


def start_job(lab: Any, method: str, name: str = "", folder: str | Path = "",
              **kwargs: Any) -> Job:
    """Run ``lab.<method>(**kwargs)`` in a new process; returns at once with its :class:`Job`.

    ``name``: the job's name (a timestamp when empty), passed on to a method that takes one
    (the run's or the protocol's name).
    The process is in its own session: closing the page, the kernel or the terminal leaves it
    running. Raises :class:`JobBusy` when a job already runs in that folder.
    """
    name = name or time.strftime("%Y%m%d-%H%M%S")
    if method in DETACHED_METHODS and "name" not in kwargs and \
            "name" in inspect.signature(getattr(type(lab), method)).parameters:
        kwargs["name"] = name  # the run (or protocol) gets the job's name
    out = Path(folder) if folder else job_folder(lab.paths["runs"], lab.paths["data_root"],
                                                  method, name)
    out.mkdir(parents=True, exist_ok=True)
    fd = _take_lock(out)
    try:
        (out / "cancel").unlink(missing_ok=True)
        save_config(lab.cfg, out / "job_config.yaml")
        write_json(out / "job.json", {"method": method, "kwargs": kwargs,
                                      "data_root": str(lab.paths["data_root"]),
                                      "created": time.time()})
        (out / "result.json").unlink(missing_ok=True)
        write_json(out / "status.json", {"state": "starting", "pid": 0, "method": method,
                                         "started": time.time()})
        # the marker before the spawn: from now on current_offset() is where this job's own
        # events begin (a watcher never replays an earlier job of the same folder)
        with (out / "events.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"type": "JobStart", "method": method, "time": time.time()})
                     + "\n")
        pid = _launch(out)
        os.write(fd, str(pid).encode())
    except BaseException:
        (out / "job.lock").unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return Job(out)


def _spawn(folder: Path) -> int:
    """A fresh ``python -m dflab job-process <folder>`` in its own session; returns its pid."""
    with (folder / "job.log").open("ab") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "dflab", JOB_PROCESS, str(folder)],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=os.getcwd())
    # reap the child when it ends, so it never lingers as a zombie of this process
    threading.Thread(target=proc.wait, daemon=True, name=f"dflab-reap-{proc.pid}").start()
    return proc.pid


def _launch(folder: Path) -> int:
    """Start the job process for ``folder``: forked from the fork server where there is one
    (Linux, ``DFLAB_JOBS_FORK`` not 0), else spawned fresh. Returns its pid."""
    if _FORK_SERVER.usable():
        try:
            return _FORK_SERVER.fork(folder)
        except (OSError, RuntimeError, ValueError) as exc:
            log.warning("the job fork server failed (%s); starting the job in a fresh process",
                        exc)
    return _spawn(folder)


# The fork server --------------------------------------------------------------------------------
# A fresh job process spends most of its first seconds importing torch, timm, OpenCV and the lab
# (about 7 s of CPU on 2 cores, every click in the dashboard). The fork server imports them once,
# then forks one child per job: the child is the job process, in its own session, with the
# launcher's working folder and environment, and outlives the server, the kernel and the page as
# a spawned one does. The server itself ends when its launcher does (its stdin closes).
# Written by hand: multiprocessing's forkserver preloads modules too, but its children belong to
# the launching process (joined or terminated when it exits), which a detached job must not be.

FORK_PRELOAD = ("torch", "timm", "cv2", "pandas", "sklearn.metrics", "dflab.lab", "dflab.visual.train",
                "dflab.data.preprocess", "dflab.forensic.features", "dflab.forensic.model", "dflab.visual.evaluate")


def _source_stamp() -> float:
    """The newest modification time of dflab's own modules: a server older than the code it
    imported is restarted, so a job never runs code that has changed since."""
    here = Path(__file__).parents[1]  # the dflab package
    return max((p.stat().st_mtime for p in here.rglob("*.py")), default=0.0)


class _ForkServer:
    """The launcher's side: starts the server on first use, sends it one request per job."""

    READY_S = 60.0  # wait this long for the server's imports, else spawn this one job fresh
    REPLY_S = 30.0

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.lines: queue.Queue[str] = queue.Queue()
        self.ready = False
        self.stamp = 0.0
        self.lock = threading.Lock()

    def usable(self) -> bool:
        return (sys.platform.startswith("linux") and hasattr(os, "fork")
                and os.environ.get("DFLAB_JOBS_FORK", "1") != "0")

    def _start(self) -> None:
        self.stop()
        self.stamp = _source_stamp()
        self.proc = subprocess.Popen([sys.executable, "-m", "dflab", JOB_PROCESS, "--fork-server"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True,
                                     text=True, bufsize=1)
        self.lines, self.ready = queue.Queue(), False
        proc, lines = self.proc, self.lines

        def read() -> None:  # its replies, and EOF ("") when it ends; then reap it
            for line in proc.stdout:
                lines.put(line.strip())
            lines.put("")
            proc.wait()

        threading.Thread(target=read, daemon=True, name="dflab-fork-server").start()

    def _reply(self, timeout: float) -> str | None:
        """The server's next line; "" when it has ended, None when it says nothing in time."""
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def warm_up(self) -> None:
        """Start the server now (its imports take seconds), so the first job starts at once."""
        if not self.usable():
            return
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self._start()

    def fork(self, folder: Path) -> int:
        """Fork the job process of ``folder``; raises RuntimeError when the server cannot (the
        caller then spawns a fresh one)."""
        with self.lock:
            for _ in range(2):  # a server that died or went stale is started again once
                if self.proc is None or self.proc.poll() is not None or \
                        _source_stamp() != self.stamp:
                    self._start()
                if not self.ready:
                    line = self._reply(self.READY_S)
                    if line is None:  # still importing (a cold disk): this job goes without
                        raise RuntimeError(f"the fork server was not ready within "
                                           f"{self.READY_S:.0f} s")
                    self.ready = line == "ready"
                if self.ready:
                    request = {"folder": str(folder), "cwd": os.getcwd(),
                               "env": dict(os.environ)}
                    try:
                        self.proc.stdin.write(json.dumps(request) + "\n")
                        self.proc.stdin.flush()
                        reply = self._reply(self.REPLY_S)
                    except (BrokenPipeError, ValueError):
                        reply = ""
                    if reply and reply.isdigit():
                        return int(reply)
                self.stop(kill=True)
            raise RuntimeError(f"no reply from the fork server for '{folder}'")

    def stop(self, kill: bool = False) -> None:
        """Close the server's stdin (it ends; running jobs go on), or kill a stuck one."""
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            if kill and self.proc.poll() is None:
                self.proc.kill()
            self.proc = None


_FORK_SERVER = _ForkServer()
warm_up = _FORK_SERVER.warm_up


def _fork_server_main(make_lab: Callable[..., Any]) -> int:
    """The server: import what jobs use, then fork a job per request line on stdin until stdin
    closes. Replies with each child's pid. It starts no thread of its own; the imported libraries'
    idle pools (OpenBLAS, OpenCV) are forked as PyTorch's DataLoader workers fork them."""
    for name in FORK_PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional part not installed: the job imports what it needs
            pass
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the OS reaps finished jobs
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _forked_job(request, make_lab)  # never returns
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()
    return 0


def _forked_job(request: dict, make_lab: Callable[..., Any]) -> None:
    """In the forked child: become the job process as a spawned one would be, run, exit."""
    rc = 1
    try:
        os.setsid()
        for sig in (signal.SIGCHLD, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        folder = Path(request["folder"])
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        logfd = os.open(folder / "job.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(null, 0)
        os.dup2(logfd, 1)
        os.dup2(logfd, 2)
        os.close(null)
        os.close(logfd)
        sys.stdin = open(os.devnull)
        threads = os.environ.get("OMP_NUM_THREADS", "")
        if threads.isdigit() and int(threads) > 0 and "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(int(threads))  # read at import in a fresh one

        random.seed()  # a fresh process's own seeds, not the server's state
        if "numpy" in sys.modules:
            sys.modules["numpy"].random.seed()
        rc = run_job(folder, make_lab)
    except BaseException:  # noqa: BLE001 - the job's own errors are recorded by run_job
        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(rc)


def list_jobs(data_root: str | Path, runs_root: str | Path | None = None,
              method: str = "") -> list[Job]:
    """Every job folder (run folders with a job.json, and ``<data root>/jobs/*``), newest
    first; only jobs of ``method`` when given."""
    data_root = Path(data_root)
    roots = [data_root / "jobs", Path(runs_root) if runs_root else data_root / "runs"]
    found = []
    for root in roots:
        for spec in root.glob("*/job.json"):
            job = Job(spec.parent)
            try:
                info = job.spec
                created = float(info.get("created", 0))
            except (ValueError, TypeError, OSError) as exc:  # one damaged job hides no other
                log.warning("%s; that job is left out of the list", exc)
                continue
            if not method or info.get("method") == method:
                found.append((created, job))
    return [j for _, j in sorted(found, key=lambda t: t[0], reverse=True)]


class _EventLog:
    """The job process's callback: each event as a JSON line, Progress throttled."""

    def __init__(self, path: Path):
        self.fh = path.open("a", encoding="utf-8")
        self.last = 0.0
        self.lock = threading.Lock()

    def write_raw(self, obj: dict) -> None:
        with self.lock:
            self.fh.write(json.dumps(obj, default=str) + "\n")
            self.fh.flush()

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.Progress):
            now = time.monotonic()
            finished = bool(event.total) and event.done >= event.total
            if now - self.last < PROGRESS_INTERVAL_S and not finished:
                return
            self.last = now
        with self.lock:
            self.fh.write(_event_to_json(event) + "\n")
            self.fh.flush()


def job_process_main(argv: list[str], make_lab: Callable[..., Any]) -> int:
    """``python -m dflab job-process FOLDER`` (one job) or ``... --fork-server``; ``make_lab``:
    the :class:`dflab.Lab` class (passed in: the job runner sits below the lab it runs)."""
    return _fork_server_main(make_lab) if argv == ["--fork-server"] else run_job(argv[0], make_lab)


def run_job(folder: str | Path, make_lab: Callable[..., Any]) -> int:
    """The job process: run the call in ``folder/job.json`` on ``make_lab(config,
    data_root=...)``, writing events and status."""
    folder = Path(folder)
    spec = read_json(folder / "job.json")
    status = {"state": "running", "pid": os.getpid(), "method": spec["method"],
              "started": time.time()}
    write_json(folder / "status.json", status)
    log = _EventLog(folder / "events.jsonl")  # after the launcher's JobStart line
    token = ev.CancelToken()
    signal.signal(signal.SIGTERM, lambda *_: token.cancel())
    stop = threading.Event()

    def watch_cancel() -> None:
        while not stop.wait(0.5):
            if (folder / "cancel").exists():
                token.cancel()

    threading.Thread(target=watch_cancel, daemon=True).start()
    rc = 0
    try:
        lab = make_lab(load_config(str(folder / "job_config.yaml")), data_root=spec["data_root"])
        # a Progress line at once, so a watcher sees the job alive before the first counted unit
        log(ev.Progress(spec["method"], 0, 0, "step", "starting"))
        result = getattr(lab, spec["method"])(callbacks=[log], cancel=token, **spec["kwargs"])
        result_to_json(result, folder / "result.json")
        status.update(state="done", summary=str(result))
    except ev.Cancelled as exc:
        status.update(state="cancelled", message=str(exc))
    except BaseException as exc:  # recorded for the watcher; the traceback goes to job.log
        traceback.print_exc()
        status.update(state="failed", message=f"{type(exc).__name__}: {exc}")
        rc = 1
    finally:
        stop.set()
        status["ended"] = time.time()
        write_json(folder / "status.json", status)
        log.write_raw({"type": "JobEnd", "state": status["state"], "time": time.time()})
        log.fh.close()
        (folder / "job.lock").unlink(missing_ok=True)
    return rc
