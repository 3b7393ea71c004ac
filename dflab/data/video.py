"""Video decoding: probe, choose frames, and read only the frames chosen.

Frames are ``uint8 (H, W, 3) BGR`` as OpenCV gives them; grayscale sources come out as 3 equal
channels. Four decoders (``preprocess.decode``, resolved by :func:`resolve_decode`):

- ``all`` (:func:`iter_frames`, OpenCV): every frame is decoded; skipped ones are ``grab()``-ed
  (never converted to BGR).
- ``skip`` (:func:`iter_frames_skipping`, PyAV): FFmpeg's ``skip_frame`` drops the
  non-reference frames that no sample needs (35-50% of the frames of the FF++ c23 and DFDC
  clips measured are non-reference B-frames), while every sampled frame is decoded. No frame another frame refers
  to is skipped, so the frames taken are the same frames, pixel for pixel, as ``all`` gives
  (FFmpeg's swscale converts to BGR in both; a test checks it).
- ``keyframes``: only the keyframes, for a quick pass; the frame index taken is each keyframe's.
- ``nvdec`` (:func:`iter_frames_nvdec`): NVIDIA's decoder through torchcodec, where CUDA is present
  (its colour conversion is not FFmpeg's: pixels differ from the CPU decoders' by a few levels).
"""

from __future__ import annotations

import importlib.util
import logging
import queue
import shutil
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = ["VideoInfo", "VideoError", "probe_video", "sample_indices", "iter_frames",
           "iter_frames_skipping", "iter_frames_nvdec", "resolve_decode", "DECODERS",
           "count_frames", "read_image", "to_bgr8", "ffmpeg_exe"]

log = logging.getLogger(__name__)

DECODERS = ("auto", "all", "skip", "keyframes", "nvdec")


class VideoError(RuntimeError):
    """A video that cannot be used; the message names the file and says why."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    frame_count: int  # as the container reports it (may be wrong)
    fps: float
    width: int
    height: int
    duration_s: float
    codec: str

    def to_dict(self) -> dict:
        return asdict(self)


def _check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise VideoError(f"'{p}' does not exist")
    if p.stat().st_size == 0:
        raise VideoError(f"'{p}' is empty (0 bytes); re-download or remove it")
    return p


CANNOT_OPEN = "cannot be opened as a video (not a video, or an unsupported or truncated container)"


def _open(path: str | Path):
    import cv2

    p = _check_file(path)
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"'{p}' {CANNOT_OPEN}")
    return cap


def probe_video(path: str | Path) -> VideoInfo:
    import cv2

    cap = _open(path)
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS)) or 0.0
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
        codec = fourcc.to_bytes(4, "little").decode("ascii", "replace").strip("\x00 ") \
            if fourcc > 0 else ""
    finally:
        cap.release()
    if w <= 0 or h <= 0:
        raise VideoError(f"'{path}' has no readable video stream")
    if fps <= 0 or fps > 1000:
        fps = 25.0  # unknown: assume PAL so timestamps stay finite; recorded in the metadata
    return VideoInfo(str(path), max(n, 0), fps, w, h, round(max(n, 0) / fps, 3), codec)


def count_frames(path: str | Path) -> int:
    """Frames that really decode (containers may report a wrong count)."""
    cap = _open(path)
    n = 0
    try:
        while cap.grab():
            n += 1
    finally:
        cap.release()
    return n


def sample_indices(frame_count: int, every_nth: int = 0, num_frames: int = 0) -> list[int]:
    """Frame indices to keep: every Nth frame from 0, or N evenly spaced over the whole video
    (DeepfakeBench's default is 32 evenly spaced; its code takes the first N by mistake)."""
    if frame_count <= 0:
        return []
    if every_nth > 0:
        return list(range(0, frame_count, every_nth))
    if num_frames <= 0:
        raise ValueError("give preprocess.every_nth > 0 or preprocess.num_frames > 0")
    if num_frames >= frame_count:
        return list(range(frame_count))
    return sorted({int(round(x)) for x in np.linspace(0, frame_count - 1, num_frames)})


def iter_frames(path: str | Path, indices: list[int] | None = None, every_nth: int = 0
                ) -> Iterator[tuple[int, np.ndarray | None]]:
    """Yield ``(index, frame)`` for the chosen frames; ``frame`` is None where decoding failed.

    Either explicit ``indices`` or ``every_nth`` (the latter needs no frame count, so it copes with
    containers that report a wrong one). Reading stops at the real end of the stream.
    """
    cap = _open(path)
    wanted = set(indices or [])
    last = max(wanted) if wanted else None
    i = 0
    try:
        while True:
            if last is not None and i > last:
                break
            if not cap.grab():
                break
            keep = (i in wanted) if indices is not None else (every_nth > 0 and i % every_nth == 0)
            if keep:
                ok, frame = cap.retrieve()
                if ok and frame is not None and frame.ndim == 2:
                    frame = np.repeat(frame[..., None], 3, axis=2)
                yield i, (frame if ok else None)
            i += 1
    finally:
        cap.release()


def resolve_decode(decode: str) -> str:
    """The decoder ``decode`` means on this machine: ``auto`` is ``nvdec`` where CUDA and
    torchcodec are present, else ``skip`` (PyAV is a dependency), else ``all``. An explicit
    ``skip`` without PyAV, or ``nvdec`` without CUDA or torchcodec, is an error saying what to
    install or choose."""
    if decode not in DECODERS:
        raise ValueError(f"preprocess.decode is '{decode}'; choose one of {', '.join(DECODERS)}")
    has_av = importlib.util.find_spec("av") is not None
    if decode == "auto":
        if _nvdec_ready():
            return "nvdec"
        return "skip" if has_av else "all"
    if decode in ("skip", "keyframes") and not has_av:
        raise ValueError(f"preprocess.decode '{decode}' needs PyAV: pip install av (or choose "
                         f"'all')")
    if decode == "nvdec" and not _nvdec_ready():
        raise ValueError("preprocess.decode 'nvdec' needs a CUDA GPU and torchcodec built for "
                         "this torch (pip install torchcodec; see docs/preprocessing.md); "
                         "choose 'auto' or 'skip' on this machine")
    return decode


def _nvdec_ready() -> bool:
    if importlib.util.find_spec("torchcodec") is None:
        return False
    import torch

    return torch.cuda.is_available()


def _presentation_order(container) -> list[int] | None:
    """The video packets' timestamps in presentation order (the frame index of a timestamp is
    its rank), from one pass of the demuxer (no decoding); None when a packet has no timestamp
    or two share one (then frame indices cannot be told from timestamps)."""
    stream = container.streams.video[0]
    pts = [p.pts for p in container.demux(stream) if p.size]
    if any(q is None for q in pts) or len(set(pts)) != len(pts):
        return None
    return sorted(pts)


def iter_frames_skipping(path: str | Path, indices: list[int] | None = None, every_nth: int = 0,
                         keyframes: bool = False, threads: int = 0
                         ) -> Iterator[tuple[int, np.ndarray | None]]:
    """:func:`iter_frames` with PyAV, decoding only what the chosen frames need.

    Each packet is decoded in full when its frame is chosen, and with FFmpeg's ``skip_frame``
    set to ``nonref`` otherwise: the decoder then drops it only if no other frame refers to it.
    ``keyframes``: every keyframe and nothing else (``indices`` and ``every_nth`` are ignored).
    A chosen frame that does not decode (a damaged packet) is yielded as None; a stream without
    usable timestamps is read by :func:`iter_frames` instead. ``threads``: FFmpeg's decoding
    threads (0: as many as it likes; 1: this thread only, the cheapest in CPU time where other
    work keeps the cores busy).
    """
    import av

    p = _check_file(path)
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise VideoError(f"'{p}' has no video stream")
            order = _presentation_order(container)
    except av.error.FFmpegError as exc:  # the same words as OpenCV's path for an unreadable file
        raise VideoError(f"'{p}' {CANNOT_OPEN}; FFmpeg: {exc}") from exc
    if order is None:
        log.info("%s: packets without distinct timestamps; decoding every frame", path)
        yield from iter_frames(path, indices, every_nth)
        return
    if keyframes:
        wanted = None
    elif indices is not None:
        wanted = {order[i] for i in indices if 0 <= i < len(order)}
    else:
        wanted = set(order[::every_nth]) if every_nth > 0 else set()
    yield from _decode_wanted(path, {q: i for i, q in enumerate(order)}, wanted, threads)


def _decode_wanted(path: str | Path, rank: dict[int, int], wanted: set[int] | None, threads: int
                   ) -> Iterator[tuple[int, np.ndarray | None]]:
    """(frame index, BGR frame or None) of the packets whose timestamps are ``wanted`` (None:
    the keyframes), in order; the rest skipped where no other frame refers to them."""
    import av

    chosen = sorted(rank[q] for q in wanted) if wanted is not None else []
    pending = 0  # chosen[:pending] are yielded or known lost
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if threads != 1:
            stream.thread_type = "AUTO"  # frame threads, as OpenCV's FFmpeg backend uses
            stream.thread_count = threads
        ctx = stream.codec_context
        ctx.skip_frame = "NONKEY" if wanted is None else "DEFAULT"
        for packet in container.demux(stream):
            if wanted is not None:
                ctx.skip_frame = "DEFAULT" if packet.pts in wanted else "NONREF"
            try:
                frames = ctx.decode(packet)
            except av.error.InvalidDataError:
                continue  # its frame, if chosen, is yielded as None below
            for frame in frames:
                i = rank.get(frame.pts)
                if i is None or (wanted is not None and frame.pts not in wanted):
                    continue
                while pending < len(chosen) and chosen[pending] < i:  # chosen, never decoded
                    yield chosen[pending], None
                    pending += 1
                if pending < len(chosen) and chosen[pending] == i:
                    pending += 1
                yield i, frame.to_ndarray(format="bgr24")
    for i in chosen[pending:]:
        yield i, None


def iter_frames_nvdec(path: str | Path, indices: list[int] | None = None, every_nth: int = 0,
                      chunk: int = 16) -> Iterator[tuple[int, np.ndarray | None]]:
    """:func:`iter_frames` on the GPU: torchcodec's CUDA decoder (NVDEC), ``chunk`` frames per
    call, copied back as BGR arrays for the detector and the JPEG writer."""
    from torchcodec.decoders import VideoDecoder

    _check_file(path)
    decoder = VideoDecoder(str(path), device="cuda", seek_mode="exact")
    n = len(decoder)
    chosen = [i for i in indices if 0 <= i < n] if indices is not None else \
        list(range(0, n, every_nth)) if every_nth > 0 else []
    for start in range(0, len(chosen), chunk):
        part = chosen[start:start + chunk]
        batch = decoder.get_frames_at(indices=part).data  # (N, 3, H, W) uint8 RGB on the GPU
        frames = batch.flip(1).permute(0, 2, 3, 1).contiguous().cpu().numpy()
        for i, frame in zip(part, frames):
            yield i, frame


def prefetch(items: Iterator, size: int = 16) -> Iterator:
    """``items`` produced on a background thread, up to ``size`` ahead: decoding one frame
    overlaps detecting and writing the previous ones (OpenCV releases the GIL while it
    decodes). An exception in the producer is raised here; closing this generator early stops
    the producer."""
    q: queue.Queue = queue.Queue(size)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((None, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer
            q.put((exc, None))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
            q.put((None, end))

    thread = threading.Thread(target=produce, name="dflab-decode", daemon=True)
    thread.start()
    try:
        while True:
            exc, item = q.get()
            if exc is not None:
                raise exc
            if item is end:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def read_image(path: str | Path) -> np.ndarray:
    """An image file as uint8 (H, W, 3) BGR (grayscale, alpha and 16-bit are converted)."""
    import cv2

    p = Path(path)
    if p.exists() and p.stat().st_size == 0:
        raise VideoError(f"'{p}' is empty (0 bytes)")
    if p.suffix.lower() in (".jpg", ".jpeg") and p.exists():
        with p.open("rb") as fh:  # libjpeg decodes a cut-off file with only a warning on stderr
            fh.seek(max(0, p.stat().st_size - 64))
            if b"\xff\xd9" not in fh.read():
                raise VideoError(f"'{p}' is a truncated JPEG (no end-of-image marker); copy it "
                                 f"again")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise VideoError(f"'{path}' cannot be read as an image")
    return to_bgr8(img)


def to_bgr8(img: np.ndarray) -> np.ndarray:
    """Any image array (grey, BGR, BGRA; uint8, uint16 or float, float in [0, 1] or [0, 255])
    -> contiguous uint8 (H, W, 3) BGR, rounded to the nearest level."""
    import cv2

    img = np.asarray(img)
    if img.dtype == np.uint16:
        img = (img.astype(np.float64) / 257.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        f = img.astype(np.float64)
        img = np.clip(f * 255.0 if f.max() <= 1.0 else f, 0, 255).round().astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    elif img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img)


def ffmpeg_exe() -> str:
    """FFmpeg from the imageio-ffmpeg wheel (always present), or the system one if that is absent."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # pragma: no cover - the wheel is a dependency

        exe = shutil.which("ffmpeg")
        if not exe:
            raise RuntimeError("no FFmpeg found: pip install imageio-ffmpeg, or apt-get install "
                               "ffmpeg") from None
        return exe
