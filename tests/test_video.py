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


def write_x264(path, n=60, size=(96, 64), fps=25, gop=25):
    """An x264 clip with B-frames (most of them non-reference), as FF++ c23 and DFDC are."""
    import subprocess

    from dflab.data.video import ffmpeg_exe

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size[1] // 4, size[0] // 4, 3), np.uint8)
    frames = [cv2.resize(np.roll(base, i, axis=1), size, interpolation=cv2.INTER_CUBIC)
              for i in range(n)]  # moving texture: P- and B-frames carry real motion
    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24",
           "-s", f"{size[0]}x{size[1]}", "-r", str(fps), "-i", "-", "-c:v", "libx264",
           "-preset", "veryfast", "-bf", "3", "-g", str(gop), "-pix_fmt", "yuv420p",
           "-threads", "1", str(path)]
    subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), check=True)
    return path


def test_skipping_decoder_takes_the_same_frames(tmp_path):
    """The skip decoder drops non-reference frames no sample needs: the chosen frames come out
    with the same indices and the same pixels as OpenCV decoding every frame."""
    import av

    from dflab.data.video import iter_frames_skipping

    p = write_x264(tmp_path / "b.mp4")
    with av.open(str(p)) as c:  # the clip has non-reference frames to skip
        kinds = [int(f.pict_type) for f in c.decode(video=0)]  # AV_PICTURE_TYPE_B is 3
    assert kinds.count(3) > 10
    for kw in ({"every_nth": 5}, {"every_nth": 3}, {"indices": [1, 2, 3, 17, 59, 200]}):
        want = list(iter_frames(p, **kw))
        for threads in (0, 1):
            got = list(iter_frames_skipping(p, threads=threads, **kw))
            assert [i for i, _ in got] == [i for i, _ in want]
            assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, want))
    keys = list(iter_frames_skipping(p, keyframes=True))
    assert [i for i, _ in keys] == [0, 25, 50]  # -g 25: a keyframe every 25 frames
    assert np.array_equal(keys[1][1], dict(iter_frames(p, [25]))[25])


def test_skipping_decoder_bad_files_and_no_timestamps(tmp_path):
    from dflab.data.video import iter_frames_skipping, resolve_decode

    with pytest.raises(VideoError, match="does not exist"):
        list(iter_frames_skipping(tmp_path / "missing.mp4"))
    (tmp_path / "e.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        list(iter_frames_skipping(tmp_path / "e.mp4", every_nth=2))
    with pytest.raises(ValueError, match="choose one of"):
        resolve_decode("fast")
    assert resolve_decode("auto") in ("skip", "nvdec")
    # an mp4v clip (no B-frames): the same frames as OpenCV
    p = write_video(tmp_path / "v.mp4")
    assert [i for i, _ in iter_frames_skipping(p, every_nth=5)] == [0, 5, 10, 15]


def test_skipping_decoder_on_real_clips(shared_data):
    """FF++ c23 (x264, yuv444p) and DFDC (yuv420p) clips: every 5th frame, pixel for pixel."""
    from dflab.data.video import iter_frames_skipping

    clips = sorted(shared_data.glob("ffpp/original_sequences/*/c23/videos/*.mp4"))[:1] + \
        sorted(shared_data.glob("dfdc/*/*.mp4"))[:1]
    assert len(clips) == 2, f"no FF++ or no DFDC clip under {shared_data}"
    for p in clips:
        want = list(iter_frames(p, every_nth=5))
        got = list(iter_frames_skipping(p, every_nth=5))
        assert [i for i, _ in got] == [i for i, _ in want], p
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, want)), p
