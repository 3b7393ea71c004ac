import dataclasses
import time

import pytest

from dflab.core.events import (CancelToken, Cancelled, Emitter, EpochMetrics, JobError, JobResult,
                          LogCallback, Progress, StepLoss, TensorBoardCallback, TqdmCallback)


def test_emitter_delivers_frozen_events_and_survives_bad_callbacks():
    got = LogCallback()

    def broken(event):
        raise RuntimeError("bad bar")

    em = Emitter("job", [broken, got])
    em.progress(1, 4, "clip", "a.mp4")
    em.error("unreadable", item="b.mp4")
    em.result(clips=4)
    kinds = [type(e) for e in got.events]
    assert kinds == [Progress, JobError, JobResult]
    p = got.events[0]
    assert (p.job, p.done, p.total, p.unit) == ("job", 1, 4, "clip")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.done = 2


def test_progress_rate_and_eta():
    p = Progress("x", done=10, total=40, elapsed_s=5.0)
    assert p.rate == 2.0 and p.eta_s == 15.0
    assert Progress("x", 0, 0).eta_s is None


def test_cancel_token():
    tok = CancelToken()
    em = Emitter("job", cancel=tok)
    em.check()
    tok.cancel()
    with pytest.raises(Cancelled, match="finished work is kept"):
        em.check()


def test_tqdm_callback_runs(capsys):
    cb = TqdmCallback(disable=False)
    for i in range(1, 4):
        cb(Progress("dl", i, 3, "file"))
    cb(EpochMetrics("train", 1, {"val_auc": 0.5}))
    cb(JobError("dl", "404", "x.mp4"))
    cb(JobResult("dl", {}))
    err = capsys.readouterr()
    assert "val_auc=0.5000" in err.out + err.err
    assert "404" in err.out + err.err


def test_tensorboard_resume_file_is_read_after_the_killed_runs(tmp_path):
    # TensorBoard reads event files in name order; a file created in the same second by an
    # earlier writer (here one a second ahead, with a counter that sorts after any other) must
    # still come before the new one, or a resume's purge would not drop the killed run's steps
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = TensorBoardCallback(str(tmp_path))
    first(StepLoss(job="train", epoch=1, step=1, loss=1.0, lr=0.1))
    first(StepLoss(job="train", epoch=1, step=2, loss=9.0, lr=0.1))
    first.close()
    old = next(tmp_path.glob("events.out.tfevents.*"))
    parts = old.name.split(".")
    parts[3], parts[-1] = str(int(time.time()) + 1), "99999"
    old = old.rename(tmp_path / ".".join(parts))
    resumed = TensorBoardCallback(str(tmp_path), purge_step=2)
    resumed(StepLoss(job="train", epoch=1, step=2, loss=2.0, lr=0.1))
    resumed.close()
    assert sorted(tmp_path.glob("events.out.tfevents.*"))[0] == old
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss/train_step")] == [(1, 1.0), (2, 2.0)]
