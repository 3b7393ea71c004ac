import cv2
import numpy as np
import pytest

from dflab.data.video import (VideoError, count_frames, iter_frames, probe_video, read_image,
                         sample_indices)


def write_video(path, n=20, size=(64, 48), color=True, fps=10):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size, color)
    for i in range(n):
        f = np.full((size[1], size[0], 3) if color else (size[1], size[0]), i * 10, np.uint8)
        w.write(f)
    w.release()
    return path


def test_sample_indices():
    assert sample_indices(10, every_nth=3) == [0, 3, 6, 9]
    even = sample_indices(300, num_frames=32)
    assert len(even) == 32 and even[0] == 0 and even[-1] == 299  # spread, not the first 32
    assert sample_indices(5, num_frames=32) == [0, 1, 2, 3, 4]
    assert sample_indices(0, every_nth=5) == []
    with pytest.raises(ValueError):
        sample_indices(10)


def test_iter_frames_reads_only_chosen(tmp_path):
    p = write_video(tmp_path / "v.mp4")
    got = list(iter_frames(p, every_nth=5))
    assert [i for i, _ in got] == [0, 5, 10, 15]
    assert all(f.shape == (48, 64, 3) for _, f in got)
    # indices past the real end (a container that over-reports) just stop
    assert [i for i, _ in iter_frames(p, [2, 19, 50, 90])] == [2, 19]
    assert count_frames(p) == 20


def test_probe_and_odd_videos(tmp_path):
    info = probe_video(write_video(tmp_path / "portrait.mp4", size=(48, 96)))
    assert (info.width, info.height, info.frame_count) == (48, 96, 20)
    gray = write_video(tmp_path / "gray.mp4", color=False)
    frames = [f for _, f in iter_frames(gray, every_nth=10)]
    assert frames and all(f.ndim == 3 and f.shape[2] == 3 for f in frames)


@pytest.mark.parametrize("content, words", [
    (b"", r"empty \(0 bytes\)"),
    (b"this is not a video at all" * 10, "cannot be opened"),
])
def test_bad_files_name_the_file(tmp_path, content, words):
    p = tmp_path / "bad.mp4"
    p.write_bytes(content)
    with pytest.raises(VideoError, match=words) as exc:
        probe_video(p)
    assert "bad.mp4" in str(exc.value)
    with pytest.raises(VideoError, match="does not exist"):
        probe_video(tmp_path / "nope.mp4")


def test_read_image_variants(tmp_path):
    cv2.imwrite(str(tmp_path / "g.png"), np.full((10, 12), 128, np.uint8))
    cv2.imwrite(str(tmp_path / "a.png"), np.full((10, 12, 4), 128, np.uint8))
    cv2.imwrite(str(tmp_path / "d.png"), np.full((10, 12, 3), 60000, np.uint16))
    for name in ("g.png", "a.png", "d.png"):
        img = read_image(tmp_path / name)
        assert img.shape == (10, 12, 3) and img.dtype == np.uint8
    (tmp_path / "x.jpg").write_text("nope")
    with pytest.raises(VideoError, match="x.jpg"):
        read_image(tmp_path / "x.jpg")


def test_prefetch_keeps_order_raises_and_stops_early():
    import threading

    from dflab.data.video import prefetch

    assert list(prefetch(iter(range(100)), size=4)) == list(range(100))

    def broken():
        yield 1
        raise ValueError("bad frame 2")

    it = prefetch(broken())
    assert next(it) == 1
    with pytest.raises(ValueError, match="bad frame 2"):
        next(it)
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    it = prefetch(endless(), size=2)
    assert next(it) == 0
    it.close()  # the consumer stops: the producer stops and closes its source
    assert closed.wait(5)
