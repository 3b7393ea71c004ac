"""One writer per folder (dflab.core.locks): a second process writing the same processed folder,
features cache or run folder is refused with the first one's pid; disjoint preprocessing shards
share a folder; a killed writer's lock is stale and replaced."""

import os
import signal
import subprocess
import sys

import pytest

from dflab.core.locks import FolderBusy, shards_overlap, writing

HOLD = ("import sys, time\nfrom dflab.core.locks import shards_overlap, writing\n"
        "with writing(sys.argv[1], 'the other writer', sys.argv[2], shards_overlap):\n"
        "    print('held', flush=True)\n    time.sleep(300)\n")


@pytest.fixture
def holder():
    """Start a process that holds ``part`` of ``folder``; yields the starter."""
    procs = []

    def start(folder, part):
        p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), part],
                             stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "held"
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_a_second_writer_of_the_features_is_refused_with_the_first_ones_pid(
        tiny_lab, holder, capsys):
    from dflab.cli import main

    folder = tiny_lab.paths["processed"] / "demo"
    other = holder(folder, "features")
    with pytest.raises(FolderBusy, match=f"being written by process {other.pid} "
                                         f"\\(the other writer"):
        tiny_lab.features(folder)
    assert not (folder / "features.csv").exists()  # nothing was written meanwhile
    code = main(["features", "--processed", str(folder)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and f"process {other.pid}" in err, err
    other.send_signal(signal.SIGKILL)  # killed: its lock stays behind, stale
    other.wait()
    assert (folder / ".writer-features.lock").exists()
    tiny_lab.features(folder)  # the stale lock is replaced, the work done, the lock gone
    assert (folder / "features.csv").is_file()
    assert not list(folder.glob(".writer-*.lock"))


def test_shards_share_a_folder_unless_they_overlap(tmp_path, holder):
    holder(tmp_path, "shard-1-of-4")
    with writing(tmp_path, "me", "shard-0-of-4", shards_overlap):  # another shard: fine
        assert (tmp_path / ".writer-shard-0-of-4.lock").exists()
    for part in ("shard-1-of-4", "shard-0-of-1", "shard-0-of-2"):
        with pytest.raises(FolderBusy):
            with writing(tmp_path, "me", part, shards_overlap):
                pass
    assert not shards_overlap("shard-0-of-4", "shard-3-of-4")
    assert shards_overlap("shard-2-of-4", "shard-2-of-4")


def test_the_lock_is_reentrant_in_one_process_and_gone_after(tmp_path):
    with writing(tmp_path, "outer", "train"):
        with writing(tmp_path, "inner", "train"):
            pass
        assert (tmp_path / ".writer-train.lock").exists()  # still the outer call's
    assert not (tmp_path / ".writer-train.lock").exists()
    with pytest.raises(ValueError):  # a writer that fails before writing leaves no empty folder
        with writing(tmp_path / "runs" / "train-x", "training", "train"):
            raise ValueError("bad settings")
    assert not (tmp_path / "runs" / "train-x").exists()


def test_a_recycled_pid_is_not_taken_for_the_writer(tmp_path):
    """A lock naming a live pid whose process started at another time is stale."""
    import json

    (tmp_path / ".writer-train.lock").write_text(json.dumps(
        {"pid": os.getppid(), "started": "1", "what": "old", "since": 0}))
    with writing(tmp_path, "me", "train"):
        pass
