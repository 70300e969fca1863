#!/usr/bin/env bash
# The prepared device check, about 5 minutes on one GPU: `bench profile` of DEIQT, QFM-IQM,
# HyperIQA and MANIQA at batch 128 in bf16 (random weights: the cost of a step does not depend
# on them), then a one-epoch `bench run` of DEIQT on a synthetic KonIQ-sized set (10,073
# images of 512x384) with its training images kept and cropped on the device
# (--data-on-device on). Prints one JSON object: the four profiles and the run's timings.
#
#   benchmarks/gpu_check.sh [OUT_DIR]          on a GPU
#   benchmarks/gpu_check.sh --tiny [OUT_DIR]   the same steps at CPU scale (tests run it)
set -euo pipefail

tiny=0
if [[ "${1:-}" == "--tiny" ]]; then tiny=1; shift; fi
out="${1:-$(mktemp -d)}"
mkdir -p "$out"
python="${PYTHON:-python}"
bench=("${BENCH:-bench}")

if (( tiny )); then
  device=cpu amp=off batch=4 steps=2 images=40 size=64x48
  recipe=(--recipe demo) run_sets=(--set backbone=test_resnet --set pretrained=false
                                   --set img_size=32 --set batch_size=4
                                   --set train_crops=1 --set test_crops=1)
else
  device=cuda amp=bf16 batch=128 steps=20 images=10073 size=512x384
  recipe=(--set pretrained=false) run_sets=(--set pretrained=false)
fi

for model in deiqt qfm hyperiqa maniqa; do
  "${bench[@]}" profile --model "$model" "${recipe[@]}" --device "$device" --amp "$amp" \
    --batch-size "$batch" --steps "$steps" --image-size "$size" \
    --json "$out/profile_$model.json" > "$out/profile_$model.log"
done

"$python" - "$out/koniq_sized" "$images" "$size" <<'PY'
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

root, count = Path(sys.argv[1]), int(sys.argv[2])
width, height = (int(v) for v in sys.argv[3].split("x"))
(root / "images").mkdir(parents=True, exist_ok=True)
base = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)

def write(index):
    # one picture rolled per image: distinct files at the cost of one random draw
    Image.fromarray(np.roll(base, index, axis=1)).save(root / f"images/{index:05d}.jpg", quality=90)

with ThreadPoolExecutor(8) as pool:
    list(pool.map(write, range(count)))
labels = np.random.default_rng(1).uniform(1, 5, count)
rows = ["file,mos"] + [f"images/{i:05d}.jpg,{labels[i]:.3f}" for i in range(count)]
(root / "labels.csv").write_text("\n".join(rows) + "\n")
(root / "generic.yaml").write_text("image: file\nscore: mos\nkind: authentic\n")
PY
"${bench[@]}" data prepare generic --root "$out/koniq_sized" --seeds 0 --no-decode > /dev/null
"${bench[@]}" run --model deiqt --dataset generic --root "$out/koniq_sized" --split 0 \
  "${run_sets[@]}" --set epochs=1 --set warmup_epochs=0 --device "$device" --amp "$amp" \
  --data-on-device on --results "$out/results" --quiet > "$out/run.log"

"$python" - "$out" <<'PY'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
record = json.loads(next((out / "results/runs/deiqt/generic").glob("split0-*/record.json")).read_text())
crops = record["data"]["n_train"] * record["config"]["train_crops"]
train_s = record["timings"]["train_s"]
print(json.dumps({
    "profiles": {m: json.loads((out / f"profile_{m}.json").read_text())
                 for m in ("deiqt", "qfm", "hyperiqa", "maniqa")},
    "run": {"model": "deiqt", "images": record["data"]["n_train"] + record["data"]["n_val"]
            + record["data"]["n_test"], "train_crops": crops, "timings": record["timings"],
            "train_images_per_s": round(crops / train_s, 1) if train_s else None,
            "device": record["device"], "precision": record["precision"],
            "data_path": record["data_path"]},
}, indent=1))
PY
