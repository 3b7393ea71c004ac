#!/usr/bin/env bash
# The one GPU check (about 8 minutes): the CUDA tests (AMP fp16/bf16 training and resume, the
# torch features backend against NumPy, YOLO and onnxruntime on the GPU), then the GPU
# benchmarks, one table at the end. Run it where CUDA exists: `bash benchmarks/gpu_check.sh`
# (the `device` tool of the workplace runs it on a lent GPU). Nothing here is timed in a test:
# the benchmarks print their own ratios.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
out=$(mktemp -d)
$PY - <<'PYEOF'
import torch
assert torch.cuda.is_available(), "no CUDA device: run this where a GPU is"
print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PYEOF
[ $? -eq 0 ] || exit 1
timeout 300 $PY -m pytest tests/test_gpu.py tests/test_features.py -m gpu -q -p no:cacheprovider \
  --junitxml="$out/gpu.xml" > "$out/tests.log" 2>&1; tests=$?
tail -3 "$out/tests.log"
# timm's published figure for tf_efficientnet_b4 at 380 px with AMP: 195 img/s training on an
# RTX 3090; the trainer's own images/s with the same model and size, and against a bare loop
timeout 180 $PY benchmarks/bench_train.py --backbone tf_efficientnet_b4 --size 380 --batch 32 \
  > "$out/train.log" 2>&1; bench=$?
timeout 120 $PY benchmarks/bench_features.py > "$out/features.log" 2>&1
# preprocessing with decode auto: NVDEC where torchcodec is installed, else the CPU skip decoder
timeout 300 $PY benchmarks/bench_preprocess.py > "$out/preprocess.log" 2>&1
$PY - "$out" "$tests" "$bench" <<'PYEOF'
import re, sys
from pathlib import Path
out, tests, bench = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
rows = [("CUDA tests (pytest -m gpu)", "passed" if tests == "0" else f"failed ({tests})")]
t = (out / "train.log").read_text()
m = re.findall(r"([\d.]+) images/s", t)
rows.append(("trainer images/s, tf_efficientnet_b4 @ 380 AMP (timm: 195 on an RTX 3090)",
             m[0] if m else f"no figure ({bench})"))
rows.append(("trainer / bare loop", (re.findall(r"ratio[^\d]*([\d.]+)", t) or ["n/a"])[0]))
f = (out / "features.log").read_text()
rows.append(("features, torch backend on the GPU (crops/s)",
             (re.findall(r"torch[^\n]*?([\d.]+) crops/s", f) or ["n/a"])[0]))
p = (out / "preprocess.log").read_text()
for clips, dec, fps in re.findall(r"^(\S+ \S+) .*?decode auto \((\w+)\).*?\n\s+pipeline\s+([\d.]+)",
                                  p, re.M | re.S):
    rows.append((f"preprocessing {clips}, decoder {dec}, sampled frames/s", fps))
w = max(len(r[0]) for r in rows)
for k, v in rows:
    print(f"{k:<{w}}  {v}")
print(f"logs: {out}")
PYEOF
