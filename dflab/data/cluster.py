"""Preprocessing and feature extraction on more than one machine, with Dask distributed (the
``cluster`` extra: ``pip install 'dflab[cluster]'``).

``env.cluster`` (``--cluster``) names the scheduler: ``tcp://HOST:8786`` for a running
``dask scheduler`` with ``dask worker`` processes on other machines, or ``local:N`` for N worker
processes on this one (a ``LocalCluster``). Every worker needs dflab installed and the same
paths: the videos and the output folder on a shared filesystem (NFS, a mounted bucket), since a
worker reads a video and writes its crops where the single-machine path would. Each video (or
batch of crops) is one task; a failed task is retried (``retries``), then reported as a failed
item while the others go on; results arrive as the futures finish, so progress events and the
cancel token work as on one machine.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from dflab.core.environment import kept_environ

log = logging.getLogger(__name__)

__all__ = ["cluster_client", "run_tasks", "check_address"]

_LOCAL = re.compile(r"^local:(\d+)$")


def check_address(address: str) -> str:
    """``address`` when it names a scheduler dflab can use, else a ValueError saying the forms."""
    if _LOCAL.match(address) or re.match(r"^(tcp|tls|ucx|inproc)://[^\s]+$", address):
        return address
    raise ValueError(f"env.cluster '{address}' is not a Dask scheduler address; give "
                     f"tcp://HOST:8786 (a running `dask scheduler`) or local:N (N worker "
                     f"processes on this machine), or leave it empty")


@contextmanager
def cluster_client(address: str) -> Iterator[Any]:
    """A ``distributed.Client`` for ``address`` (see :func:`check_address`), closed on exit;
    ``local:N`` starts and stops its own LocalCluster of N single-threaded processes."""
    check_address(address)
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ImportError("env.cluster needs Dask distributed: pip install 'dflab[cluster]'") \
            from None
    # Dask's Nanny writes its pre-spawn variables (OMP_NUM_THREADS=1, MKL_NUM_THREADS=1,
    # MALLOC_TRIM_THRESHOLD_...) into this process's os.environ whenever it starts a worker
    # and leaves them: every later subprocess would run torch on one thread
    with kept_environ():
        cluster = None
        m = _LOCAL.match(address)
        if m:
            cluster = LocalCluster(n_workers=max(1, int(m.group(1))), threads_per_worker=1,
                                   processes=True, dashboard_address=None)
            client = Client(cluster)
        else:
            try:
                client = Client(address, timeout="30s")
            except OSError as exc:
                raise OSError(f"cannot reach the Dask scheduler at {address} ({exc}); start "
                              f"one with `dask scheduler` and workers with `dask worker "
                              f"{address}`") from None
        try:
            yield client
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def run_tasks(address: str, fn: Callable[[Any], Any], items: Sequence[Any],
              on_done: Callable[[int, Any, BaseException | None], None],
              check: Callable[[], None] | None = None, retries: int = 2) -> None:
    """Run ``fn(item)`` for every item on the cluster; ``on_done(index, result, error)`` is
    called here, in completion order, once per item (``error`` set when every try failed).
    ``check`` (a cancel token's) runs between results; raising in it cancels what is left."""
    from distributed import as_completed

    with cluster_client(address) as client:
        futures = [client.submit(fn, item, pure=False, retries=retries) for item in items]
        index = {f.key: i for i, f in enumerate(futures)}
        try:
            for fut in as_completed(futures):
                exc = fut.exception() if fut.status == "error" else None
                on_done(index[fut.key], None if exc else fut.result(), exc)
                if check is not None:
                    check()
        except BaseException:
            client.cancel(futures)
            raise
