#!/usr/bin/env bash
# The GPU checks of issue 5 as one prepared script, for a session that is lent a GPU (the device
# tool), all output under $OUT (default runs/gpu_check). Not yet run on a GPU (none was lent to
# the sessions so far); the CPU dry run below takes ~2 min on the 2-core development machine.
#
#   on the device machine (its python3 holds a CUDA torch; nothing to install):
#       bash bench/gpu_check.sh
#   here, as a dry run of the same steps on the CPU (tiny sizes, no bf16, no compile):
#       DEVICE=cpu PY=.venv/bin/python bash bench/gpu_check.sh
#
# Steps: (1) the machine; (2) `collegial train` end to end on a synthetic CIFAR-10 written in the
# standard pickle format, with --amp --channels-last --compile, then --resume for one more epoch;
# (3) the same under torchrun + DDP (NCCL on CUDA); (4) bench/train_step.py: the official
# formulation (fp32, NCHW) against bf16 + channels_last (+ compile), images/s, TFLOP/s and MFU;
# (5) `collegial reproduce figure1` (issue 11) at larger settings than the CPU defaults:
# resnext11 on 30,000 Fashion-MNIST images, 3 epochs, 3 seeds (CPU dry run: --quick); (6) `collegial
# verify` on the CPU and the device from the same seed (numbers within float tolerance) and bench/verify.py.
# Record what it prints in bench/RESULTS.md with the device name.
set -uo pipefail
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
WORK=$(mktemp -d)
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
status=0
step() { echo; echo "=== $*"; }
run() { "$@" || { echo "FAILED ($?): $*"; status=1; }; }

if [ "$DEVICE" = cuda ]; then
    FLAGS=(--device cuda --amp --channels-last --compile); PER_BATCH=2000; BATCH=128; ROUNDS=3
    VARIANTS=bf16+cl+compile,bf16+cl,cl; TORCHRUN_BACKEND=NCCL
else
    FLAGS=(--device cpu --channels-last); PER_BATCH=64; BATCH=8; ROUNDS=1
    VARIANTS=cl; TORCHRUN_BACKEND=gloo
fi

step "1. machine"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
run "$PY" -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else '')"

step "2. synthetic CIFAR-10 ($((5 * PER_BATCH)) train images) and collegial train ${FLAGS[*]}"
run "$PY" - "$WORK" "$PER_BATCH" <<'EOF'
import pickle, sys
from pathlib import Path
import numpy as np
root, n = Path(sys.argv[1]) / "cifar-10-batches-py", int(sys.argv[2])
root.mkdir(parents=True)
rng = np.random.default_rng(0)
for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    batch = {"batch_label": name, "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             "labels": rng.integers(0, 10, n).tolist()}
    (root / name).write_bytes(pickle.dumps(batch, protocol=4))
(root / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
EOF
TRAIN=(-m collegial.cli train resnext29 4x16d --dataset cifar10 --data-dir "$WORK" --batch-size "$BATCH"
       --no-progress "${FLAGS[@]}")
run "$PY" "${TRAIN[@]}" --epochs 2 --out "$WORK/run" 2>&1 | tee "$OUT/train.txt"
run "$PY" "${TRAIN[@]}" --epochs 3 --out "$WORK/run" --resume 2>&1 | tee -a "$OUT/train.txt"
run "$PY" -c "import json, sys; rows = [json.loads(l) for l in open(sys.argv[1])]
print(len(rows), 'metrics rows; last:', rows[-1])" "$WORK/run/metrics.jsonl"

step "3. torchrun --nproc_per_node 1 ($TORCHRUN_BACKEND)"
run "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 "${TRAIN[@]}" --epochs 1 \
    --out "$WORK/ddp" 2>&1 | tee "$OUT/torchrun.txt"

step "4. bench/train_step.py: reference (official, fp32 NCHW) vs $VARIANTS"
if [ "$DEVICE" = cuda ]; then
    run "$PY" bench/train_step.py --device cuda --batch "$BATCH" --variants "$VARIANTS" --rounds "$ROUNDS" --iters 20 --warmup 5 \
        2>&1 | tee "$OUT/train_step.txt"
else
    run "$PY" bench/train_step.py --archs 1x128d --batch "$BATCH" --variants "$VARIANTS" --rounds 1 \
        --iters 1 --warmup 1 --no-check 2>&1 | tee "$OUT/train_step.txt"
fi

step "5. reproduce figure1 (resnext11, Fashion-MNIST) on $DEVICE"
if [ "$DEVICE" = cuda ]; then
    F1=(--family resnext11 --train-limit 30000 --test-limit 10000 --epochs 3 --seeds 3 --device cuda)
else
    F1=(--quick --family resnext11)
fi
COLLEGIAL_CACHE="$WORK/cache" run "$PY" -m collegial.cli reproduce figure1 "${F1[@]}" --out "$OUT/figure1" \
    2>&1 | tee "$OUT/figure1.txt"

step "6. collegial verify (issue 18): the whole resnext11 on MNIST pairs, CPU against $DEVICE"
if [ "$DEVICE" = cuda ]; then
    VT=(--trials 64 --pairs 8); VA=(1x64d 26x3d 174x3d)
else
    VT=(--trials 4 --pairs 2); VA=(2x4d)
fi
for d in cpu "$DEVICE"; do  # the same seed: the same initializations on both, numbers within float tolerance
    COLLEGIAL_CACHE="$WORK/cache-$d" run "$PY" -m collegial.cli verify resnext11 "${VA[@]}" --dataset mnist "${VT[@]}" \
        --device "$d" --no-predict --no-progress --json > "$OUT/verify-$d.json"
done
run "$PY" -c "import json, sys; a, b = (json.load(open(p))['measured'] for p in sys.argv[1:3])
for x, y in zip(a, b): print(x['arch'], 'v cpu', x['v'], '| device', y['v'], '| rel diff', abs(x['v'] - y['v']) / x['v'],
      '| s/arch cpu', round(x['seconds'], 1), 'device', round(y['seconds'], 1))" "$OUT/verify-cpu.json" "$OUT/verify-$DEVICE.json"
[ "$DEVICE" = cuda ] && run "$PY" bench/verify.py --device cuda 2>&1 | tee "$OUT/verify_bench.txt"

rm -rf "$WORK"
echo; [ $status = 0 ] && echo "gpu_check: all steps ran" || echo "gpu_check: some steps FAILED"
exit $status
