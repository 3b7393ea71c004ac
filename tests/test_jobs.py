"""Detached jobs (dflab.core.jobs): a Lab call in its own process with an event log, a status file and
a lock, followed, cancelled and re-attached from another process; a killed job's stale lock."""

import os
import signal
import time
from pathlib import Path

import pytest

from conftest import wait_for

from dflab.core.events import Progress
from dflab.core.jobs import Job, JobBusy, job_folder, list_jobs, start_job
from dflab.lab import Lab
from dflab.core.runs import run_state

# each test starts a process that imports torch, the first through the jobs' fork server
# (10-25 s on 2 cores)
pytestmark = pytest.mark.slow


@pytest.fixture
def lab(tmp_path):
    return Lab(data_root=tmp_path)


def test_a_job_runs_detached_and_its_events_can_be_followed(lab, tmp_path, capsys):
    job = start_job(lab, "demo_data", name="demo", n_videos=6, seconds=0.5)
    assert job.folder == tmp_path / "jobs" / "demo_data-demo"
    with pytest.raises(JobBusy, match="already has a running job"):
        start_job(lab, "demo_data", name="demo", n_videos=6)  # one job per folder
    seen, offset = [], 0

    def read() -> bool:  # a second reader, as a reloaded page is
        nonlocal offset
        events, offset = job.read_events(offset)
        seen.extend(events)
        return not job.running

    wait_for(read, 300, "the demo job to end")
    seen += job.read_events(offset)[0]
    assert job.state == "done", (job.folder / "job.log").read_text()
    progress = [e for e in seen if isinstance(e, Progress)]
    assert progress[0].message == "starting" and progress[-1].done == 30  # 6 real + 4 methods x 6 fakes
    assert [e for e in seen if isinstance(e, dict)][0]["type"] == "JobStart"
    res = job.result()
    assert res.clips == 30 and res.labels.is_file()
    assert "30 clips" in job.status()["summary"] and not (job.folder / "job.lock").exists()
    assert list_jobs(tmp_path)[0].folder == job.folder
    # the same folder again: a second job appends its own events after a new JobStart marker
    again = start_job(lab, "demo_data", name="demo", n_videos=6, seconds=0.5)
    assert again.wait(300) == "done"
    text = (job.folder / "events.jsonl").read_text()
    assert text.count('"JobStart"') == 2 and again.current_offset() > 0

    from dflab.cli import main  # the CLI lists, follows and cancels the same jobs

    root = f"env.data_root={tmp_path}"
    assert main(["jobs", "--set", root]) == 0
    assert "done       " in capsys.readouterr().out
    assert main(["jobs", "follow", str(job.folder), "--set", root]) == 0
    assert "done: wrote 30 clips" in capsys.readouterr().out
    assert main(["jobs", "cancel", str(tmp_path), "--set", root]) == 2
    assert "not a job folder" in capsys.readouterr().err


def test_cancel_stops_the_job_and_a_killed_job_leaves_a_stale_lock(lab, tmp_path):
    job = start_job(lab, "demo_data", name="c", n_videos=40, seconds=1.0)
    wait_for(lambda: any(isinstance(e, Progress) and e.done >= 1
                         for e in job.read_events(0)[0]), 120, "the first clip")
    Job(job.folder).cancel()  # from another handle, as a reloaded page does
    assert job.wait(120) == "cancelled"
    assert "finished work is kept" in job.status()["message"]

    job = start_job(lab, "demo_data", name="k", n_videos=40, seconds=1.0)
    wait_for(lambda: job.state != "starting", 60, "the job to start")
    pid = job.status()["pid"]
    # forked from the fork server (which imported torch once), yet a process of its own: its own
    # session, the launcher's working folder; the server ends with the launcher, the job not
    from dflab.core.jobs import _FORK_SERVER

    server = _FORK_SERVER.proc.pid
    assert _parent(pid) == server
    assert os.getsid(pid) == pid and os.readlink(f"/proc/{pid}/cwd") == os.getcwd()
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 30
    while job.state != "killed" and time.time() < deadline:
        time.sleep(0.2)
    assert job.state == "killed" and "ended without a result" in job.status()["message"]
    assert (job.folder / "job.lock").exists()  # stale: nobody removed it
    again = start_job(lab, "demo_data", name="k", n_videos=6, seconds=0.5)  # replaces it
    assert again.wait(300) == "done"


def test_a_training_job_lives_in_its_run_folder_and_the_runs_list_shows_its_state(tmp_path):
    from dflab.data.synthetic import build_demo_dataset

    build_demo_dataset(tmp_path / "demo", 12, 0, seconds=0.5)
    lab = Lab("cpu", {"preprocess.detector": "haar", "preprocess.every_nth": 5,
                      "preprocess.audio": False, "model.backbone": "test_efficientnet",
                      "model.input_size": 64, "model.pretrained": False, "train.epochs": 1,
                      "train.batch_size": 8}, data_root=tmp_path)
    pre = start_job(lab, "preprocess", name="demo", source="demo")
    assert pre.wait(600) == "done", (pre.folder / "job.log").read_text()[-3000:]
    job = start_job(lab, "train", name="bg", processed=str(lab.processed_dir(source="demo")))
    assert job.folder == tmp_path / "runs" / "train-bg" == job_folder(
        lab.paths["runs"], lab.paths["data_root"], "train", "bg")
    assert run_state(job.folder) in ("running", "incomplete")
    assert job.wait(600) == "done", (job.folder / "job.log").read_text()[-3000:]
    assert run_state(job.folder) == "done" and (job.folder / "val_roc.json").is_file()
    row = lab.runs_table("train")[0]
    assert row["run"] == "train-bg" and row["state"] == "done"
    assert job.result().best_epoch == 1
    with pytest.raises(ValueError, match="cannot run as a detached job"):
        start_job(lab, "export", run=str(job.folder))


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_the_fork_server_restarts_when_dflab_changed_and_can_be_switched_off(lab, monkeypatch):
    from dflab.core import jobs
    first = start_job(lab, "demo_data", name="a", n_videos=6, seconds=0.5)
    server = jobs._FORK_SERVER.proc.pid
    assert first.wait(300) == "done"
    # a source file newer than the server's imports: a new server, so the job runs today's code
    monkeypatch.setattr(jobs, "_source_stamp", lambda: jobs._FORK_SERVER.stamp + 1)
    second = start_job(lab, "demo_data", name="b", n_videos=6, seconds=0.5)
    assert jobs._FORK_SERVER.proc.pid != server
    assert _parent(int((second.folder / "job.lock").read_text())) == jobs._FORK_SERVER.proc.pid
    assert second.wait(300) == "done"
    monkeypatch.setenv("DFLAB_JOBS_FORK", "0")  # off: a fresh process, the launcher's child
    third = start_job(lab, "demo_data", name="c", n_videos=6, seconds=0.5)
    assert _parent(int((third.folder / "job.lock").read_text())) == os.getpid()
    assert third.wait(300) == "done"
