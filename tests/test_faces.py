import hashlib
import os
import http.server
import threading

import numpy as np
import pytest

from dflab.data.faces import (DETECTORS, Face, create_detector, crop_box, crop_face, download_file,
                         resolve_yunet_weights)


@pytest.fixture(scope="module")
def portrait():
    from dflab.data.synthetic import _source_photo

    return _source_photo()  # uint8 (512, 512, 3) BGR, one face near (223, 120)


_OMP = os.environ.get("OMP_NUM_THREADS")


def detector_kwargs(name, shared):
    if name in ("yunet", "auto") and shared is not None:
        return {"weights": str(shared / "weights/yunet/yunet_s_640_640.onnx")}
    return {}


@pytest.mark.parametrize("name", [n for n in DETECTORS.list() if n != "yolo"])
def test_detector_contract(name, portrait, request):
    try:
        shared = request.getfixturevalue("shared_data")
    except pytest.skip.Exception:
        if name == "yunet":
            raise
        shared = None
    det = create_detector(name, det_size=320, min_confidence=0.5, **detector_kwargs(name, shared))
    faces = det.detect(portrait)
    assert len(faces) == 1
    f = faces[0]
    assert isinstance(f, Face) and 0.5 <= f.score <= 1.0
    x1, y1, x2, y2 = f.box
    assert 0 <= x1 < x2 <= 512 and 0 <= y1 < y2 <= 512
    assert x1 < 223 < x2 and y1 < 120 < y2  # boxes are mapped back to full resolution
    assert det.detect_batch([portrait, np.zeros_like(portrait)])[1] == []
    from dflab.data.faces import resolve_auto

    assert det.describe()["name"] == resolve_auto(name)[0]  # no silent fallback to another


def test_yunet_landmarks(portrait, yunet_weights):
    f = create_detector("yunet", str(yunet_weights)).detect(portrait)[0]
    assert len(f.landmarks) == 5
    (lx, ly), (rx, ry) = f.landmarks[:2]
    assert lx < rx and abs(ly - ry) < 15  # two eyes side by side


def test_auto_is_the_packaged_yunet_offline(tmp_path, monkeypatch):
    """No cache, no network: auto uses the YuNet file shipped in the package (the same file as
    OpenCV's model zoo release), and finds the face; Haar only without FaceDetectorYN."""
    import hashlib

    import cv2

    from dflab.data.faces import PACKAGED_YUNET, YUNET_SHA256

    monkeypatch.setenv("DFLAB_CACHE", str(tmp_path))
    det = create_detector("auto")
    assert det.name == "yunet" and det.weights == PACKAGED_YUNET
    assert hashlib.sha256(PACKAGED_YUNET.read_bytes()).hexdigest() == YUNET_SHA256
    assert (PACKAGED_YUNET.parent / "LICENSE-yunet").read_text().count("Apache License") >= 1
    assert not list(tmp_path.iterdir())  # nothing downloaded
    monkeypatch.delattr(cv2, "FaceDetectorYN")
    assert create_detector("auto").name == "haar"


def test_yolo_weights_are_checked_against_their_sha256(tmp_path):
    from dflab.data.faces import fetch_weights_file

    w = tmp_path / "face.pt"
    w.write_bytes(b"not really a model")
    with pytest.raises(ValueError, match="not the expected"):
        fetch_weights_file(str(w), "0" * 64)
    import hashlib

    assert fetch_weights_file(str(w), hashlib.sha256(w.read_bytes()).hexdigest()) == w


def test_dynamic_yunet_gives_a_clear_error(shared_data):
    with pytest.raises(ValueError, match="dynamic"):
        create_detector("yunet", str(shared_data / "weights/yunet/yunet_n_dynamic.onnx"))


def test_unknown_detector_and_missing_weights():
    with pytest.raises(KeyError, match="Did you mean 'yunet'"):
        create_detector("yunett")
    with pytest.raises(FileNotFoundError, match="not found"):
        create_detector("yunet", "/nowhere/y.onnx")
    with pytest.raises(ValueError, match="dflab faces finetune"):
        create_detector("yolo")


def test_crop_box_pads_squares_and_clips():
    assert crop_box((40, 40, 60, 80), (100, 100), padding=0.0, square=False) == (40, 40, 60, 80)
    x1, y1, x2, y2 = crop_box((40, 40, 60, 80), (100, 100), padding=0.25, square=True)
    assert (x2 - x1) == (y2 - y1) == 60
    assert crop_box((0, 0, 50, 50), (60, 60), padding=0.5) == (0, 0, 60, 60)
    crop, box = crop_face(np.zeros((60, 80, 3), np.uint8), (70, 50, 80, 60), 1.0)
    assert crop.shape[:2] == (box[3] - box[1], box[2] - box[0]) and box[2] <= 80


@pytest.fixture
def file_server(tmp_path):
    """A loopback HTTP server over tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()


@pytest.mark.network
def test_yunet_download_checks_sha256(file_server, yunet_weights, tmp_path, portrait):
    root, base = file_server
    data = yunet_weights.read_bytes()
    (root / "yunet.onnx").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    cache = tmp_path / "cache"
    # another YuNet by URL (the packaged one needs none): downloaded once into the cache
    path = resolve_yunet_weights(f"{base}/yunet.onnx", cache)
    assert path.read_bytes() == data and path.parent == cache / "yunet"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    assert resolve_yunet_weights(f"{base}/yunet.onnx", cache, download=False) == path
    assert len(create_detector("yunet", str(path)).detect(portrait)) == 1
    with pytest.raises(OSError, match="checksum mismatch"):
        download_file(f"{base}/yunet.onnx", tmp_path / "bad" / "y.onnx", sha256="0" * 64)
    assert not (tmp_path / "bad" / "y.onnx").exists()
    assert not (tmp_path / "bad" / "y.onnx.part").exists()
    with pytest.raises(OSError, match="download it by hand"):
        download_file(f"{base}/missing.onnx", tmp_path / "m.onnx")


@pytest.fixture(scope="module")
def demo_frames(demo_set, tmp_path_factory):
    from dflab.core.config import PreprocessConfig
    from dflab.data.preprocess import preprocess_videos
    from dflab.data.sources import list_videos

    out = tmp_path_factory.mktemp("frames")
    preprocess_videos(list_videos("demo", demo_set), out,
                      PreprocessConfig(detector="haar", every_nth=3, audio=False, det_size=320))
    return sorted(out.rglob("frames/*.jpg"))


def _labeler(request):
    try:
        shared = request.getfixturevalue("shared_data")
        return create_detector("yunet", str(shared / "weights/yunet/yunet_s_640_640.onnx"))
    except pytest.skip.Exception:
        return create_detector("haar")


@pytest.mark.slow
def test_finetune_yolo_then_detect_through_the_yolo_detector(demo_frames, tmp_path, request):
    """A tiny YOLO face model trained with ultralytics on frames auto-labelled by YuNet, then used
    through the `yolo` detector on frames it never saw."""
    from dflab.data.faces import finetune_yolo

    import torch

    labeler = _labeler(request)
    threads = torch.get_num_threads()
    train, held_out = demo_frames[0::3][:40], demo_frames[1::6][:12]
    best = finetune_yolo(train, tmp_path / "yolo", labeler, "yolov8n.yaml", epochs=30,
                         imgsz=128, batch=4, mosaic=0.0, warmup_epochs=0)
    assert best.exists()
    det = create_detector("yolo", str(best), det_size=128, min_confidence=0.25)
    assert det.describe()["device"] == "cpu"
    ious = []
    for path in held_out:
        import cv2

        img = cv2.imread(str(path))
        ref, got = labeler.detect(img), det.detect(img)
        assert ref, path
        if got:
            a, b = ref[0].box, got[0].box
            ix = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
            ious.append(ix / (ref[0].area + got[0].area - ix))
    assert len(ious) >= 0.8 * len(held_out), f"found faces in {len(ious)}/{len(held_out)}"
    assert np.median(ious) > 0.5, ious
    # ultralytics sets torch to cpu_count - 1 threads on CPU; a later training here must not
    # inherit that (the CLI and dashboard runs of tests/test_lab.py then differed)
    assert torch.get_num_threads() == threads
    assert os.environ.get("OMP_NUM_THREADS") == _OMP


@pytest.mark.slow
def test_cli_faces_finetune_runs_one_epoch(demo_frames, tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for p in demo_frames[:8]:
        (imgs / f"{p.parent.parent.name}_{p.name}").write_bytes(p.read_bytes())
    out = subprocess.run([sys.executable, "-m", "dflab", "faces", "finetune", "--images",
                          str(imgs), "--out", str(tmp_path / "y"), "--epochs", "1", "--imgsz", "64",
                          "--labeler", "haar"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "preprocess.detector=yolo" in out.stdout
    assert list((tmp_path / "y").rglob("*.pt"))


@pytest.mark.slow
def test_default_det_size_finds_the_same_faces_as_640_on_real_clips(shared_data, yunet_weights):
    """The default working resolution (320, chosen for speed: issue 12) against 640 on the FF++
    and DFDC clips: the same frames have a face and the primary boxes overlap closely."""
    import cv2

    from dflab.core.config import PreprocessConfig
    from dflab.data.faces import primary_face
    from dflab.data.sources import list_videos

    recs = [r for r in list_videos("folder", shared_data, labels=shared_data / "manifest.csv")
            if r.exists and not r.is_image]
    frames = []
    for r in recs:
        cap = cv2.VideoCapture(r.path)
        i = 0
        while cap.grab():
            if i % 15 == 0:
                frames.append(cap.retrieve()[1])
            i += 1
        cap.release()
    default = PreprocessConfig().det_size
    assert default < 640
    boxes = {}
    for size in (default, 640):
        det = create_detector("yunet", str(yunet_weights), size, 0.6)
        boxes[size] = [primary_face(det.detect(f), f.shape) for f in frames]
    found = {s: sum(b is not None for b in v) for s, v in boxes.items()}
    assert len(frames) > 150 and found[default] >= found[640] >= 0.99 * len(frames), found
    ious = [_iou(a.box, b.box) for a, b in zip(boxes[default], boxes[640]) if a and b]
    # box jitter between working resolutions is ~0.9 IoU at any size (480 vs 640 likewise)
    assert np.median(ious) > 0.85 and np.mean(np.array(ious) > 0.7) > 0.97, sorted(ious)[:10]


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.slow
def test_ultralytics_import_leaves_threads_and_environment_alone():
    """ultralytics sets OMP_NUM_THREADS=1 in os.environ and turns OpenCV's threads off when
    imported; dflab imports it so that neither reaches this process or the ones it starts."""
    import subprocess
    import sys

    probe = ("import os, cv2; {imp}; "
             "print(os.environ.get('OMP_NUM_THREADS'), os.environ.get('NUMEXPR_MAX_THREADS'), "
             "cv2.getNumThreads())")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "NUMEXPR_MAX_THREADS")}

    def run(imp):
        out = subprocess.run([sys.executable, "-c", probe.format(imp=imp)], env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()[-3:]

    import cv2

    bare = run("import ultralytics")
    assert bare[0] == "1" and int(bare[2]) <= 1  # what ultralytics does on its own
    ours = run("from dflab.data.faces import _yolo_class; _yolo_class()")
    assert ours[:2] == ["None", "None"] and int(ours[2]) == cv2.getNumThreads() > 0
