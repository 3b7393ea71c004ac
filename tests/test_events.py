import dataclasses

import pytest

from dflab.events import (CancelToken, Cancelled, Emitter, EpochMetrics, JobError, JobResult,
                          LogCallback, Progress, TqdmCallback)


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
