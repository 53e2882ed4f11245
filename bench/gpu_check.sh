#!/usr/bin/env bash
# The GPU checks of issues 5 and 23 as one prepared script, for a session that is lent a GPU (the
# device tool), all output under $OUT (default runs/gpu_check). Not yet run on a GPU (none was lent
# to the sessions so far); the CPU dry run below takes a few minutes on the 2-core development machine.
#
#   on the device machine (its python3 holds a CUDA torch; nothing to install):
#       bash bench/gpu_check.sh                  # every step
#       STEPS="1 6 7" bash bench/gpu_check.sh    # issue 23 point 1 only: devices for measurement
#   here, as a dry run of the same steps on the CPU (tiny sizes, no bf16, no compile):
#       DEVICE=cpu PY=.venv/bin/python bash bench/gpu_check.sh
# With DEVICE=cuda (the default) and no CUDA device it stops at once with one line and exit 2.
#
# Steps: (1) the machine; (2) `collegial train` end to end on a synthetic CIFAR-10 written in the
# standard pickle format, with --amp --channels-last --compile, then --resume for one more epoch;
# (3) the same under torchrun + DDP (NCCL on CUDA); (4) bench/train_step.py: the official
# formulation (fp32, NCHW) against bf16 + channels_last (+ compile), images/s, TFLOP/s and MFU;
# (5) `collegial reproduce figure1 --pilot-only` at full scale (all 60,000 Fashion-MNIST images,
# 10 epochs, resnext11): the paired seed spread and the seeds that resolve 0.5 points, i.e. the
# scale a GPU sweep needs (CPU dry run: --quick --pilot-only); (6) `collegial
# verify` on the CPU and the device from the same seed (numbers within float tolerance, checked by
# bench/compare_devices.py; both run times) and bench/verify.py; (7) `collegial fit-alpha`
# (Algorithm 1) on the CPU and the device from the same seed: the dedicated engine at its defaults
# (resnext29's block, T=2000, 22 widths, the 1/m check) and the generic engine (resnext11's block),
# numbers within float tolerance and both run times.
# Record what it prints in bench/RESULTS.md with the device name.
set -uo pipefail
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
OUT=${OUT:-runs/gpu_check}
STEPS=${STEPS:-1 2 3 4 5 6 7}
RTOL=${RTOL:-1e-3}
if [ "$DEVICE" = cuda ] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA device here (torch.cuda.is_available() is false for $PY); run it on a GPU machine, or DEVICE=cpu for the CPU dry run" >&2
    exit 2
fi
mkdir -p "$OUT"
WORK=$(mktemp -d)
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
status=0
step() { echo; echo "=== $*"; }
want() { case " $STEPS " in *" $1 "*) return 0;; esac; return 1; }
run() { "$@" || { echo "FAILED ($?): $*"; status=1; }; }

if [ "$DEVICE" = cuda ]; then
    FLAGS=(--device cuda --amp --channels-last --compile); PER_BATCH=2000; BATCH=128; ROUNDS=3
    VARIANTS=bf16+cl+compile,bf16+cl,cl; TORCHRUN_BACKEND=NCCL
else
    FLAGS=(--device cpu --channels-last); PER_BATCH=64; BATCH=8; ROUNDS=1
    VARIANTS=cl; TORCHRUN_BACKEND=gloo
fi

if want 1; then
step "1. machine"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
run "$PY" -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
fi

TRAIN=(-m collegial.cli train resnext29 4x16d --dataset cifar10 --data-dir "$WORK" --batch-size "$BATCH"
       --no-progress "${FLAGS[@]}")
if want 2 || want 3; then
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
fi
if want 2; then
run "$PY" "${TRAIN[@]}" --epochs 2 --out "$WORK/run" 2>&1 | tee "$OUT/train.txt"
run "$PY" "${TRAIN[@]}" --epochs 3 --out "$WORK/run" --resume 2>&1 | tee -a "$OUT/train.txt"
run "$PY" -c "import json, sys; rows = [json.loads(l) for l in open(sys.argv[1])]
print(len(rows), 'metrics rows; last:', rows[-1])" "$WORK/run/metrics.jsonl"
fi

if want 3; then
step "3. torchrun --nproc_per_node 1 ($TORCHRUN_BACKEND)"
run "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 "${TRAIN[@]}" --epochs 1 \
    --out "$WORK/ddp" 2>&1 | tee "$OUT/torchrun.txt"
fi

if want 4; then
step "4. bench/train_step.py: reference (official, fp32 NCHW) vs $VARIANTS"
if [ "$DEVICE" = cuda ]; then
    run "$PY" bench/train_step.py --device cuda --batch "$BATCH" --variants "$VARIANTS" --rounds "$ROUNDS" --iters 20 --warmup 5 \
        2>&1 | tee "$OUT/train_step.txt"
else
    run "$PY" bench/train_step.py --archs 1x128d --batch "$BATCH" --variants "$VARIANTS" --rounds 1 \
        --iters 1 --warmup 1 --no-check 2>&1 | tee "$OUT/train_step.txt"
fi
fi

if want 5; then
step "5. reproduce figure1 (resnext11, Fashion-MNIST) on $DEVICE"
if [ "$DEVICE" = cuda ]; then
    F1=(--family resnext11 --train-limit 60000 --test-limit 10000 --val-images 5000 --epochs 10 --seeds 4
        --target-difference 0.5 --pilot-only --device cuda)
else
    F1=(--quick --family resnext11 --pilot-only)
fi
COLLEGIAL_CACHE="$WORK/cache" run "$PY" -m collegial.cli reproduce figure1 "${F1[@]}" --out "$OUT/figure1" \
    2>&1 | tee "$OUT/figure1.txt"
fi

if want 6; then
step "6. collegial verify (issues 18, 23): the whole resnext11 on MNIST pairs, CPU against $DEVICE, the same seed"
if [ "$DEVICE" = cuda ]; then
    VT=(--trials 64 --pairs 8); VA=(1x64d 26x3d 174x3d)
else
    VT=(--trials 4 --pairs 2); VA=(2x4d)
fi
for tag in cpu device; do  # the same seed: the same initializations on both, numbers within float tolerance
    d=cpu; [ $tag = cpu ] || d=$DEVICE  # (the CPU dry run compares two CPU runs)
    COLLEGIAL_CACHE="$WORK/cache-$tag" run "$PY" -m collegial.cli verify resnext11 "${VA[@]}" --dataset mnist "${VT[@]}" \
        --device "$d" --no-predict --no-progress --json > "$OUT/verify-$tag.json"
done
run "$PY" bench/compare_devices.py verify "$OUT/verify-cpu.json" "$OUT/verify-device.json" --rtol "$RTOL"
[ "$DEVICE" = cuda ] && run "$PY" bench/verify.py --device cuda 2>&1 | tee "$OUT/verify_bench.txt"
fi

if want 7; then
step "7. collegial fit-alpha (Algorithm 1, issue 23): CPU against $DEVICE from the same seed, and the times"
if [ "$DEVICE" = cuda ]; then
    FA=(); FG=(--trials 256 --widths 2,3,4,6,8,12,16)   # the dedicated engine at its defaults; the generic one smaller
else
    FA=(--trials 64 --widths 2,3,4,6,8 --m-law 2); FG=(--trials 32 --widths 2,3,4)
fi
for tag in cpu device; do
    d=cpu; [ $tag = cpu ] || d=$DEVICE  # (the CPU dry run compares two CPU runs)
    COLLEGIAL_CACHE="$WORK/cache-$tag" run "$PY" -m collegial.cli fit-alpha "${FA[@]}" --device "$d" --no-progress --json \
        > "$OUT/alpha-$tag.json"
    COLLEGIAL_CACHE="$WORK/cache-$tag" run "$PY" -m collegial.cli fit-alpha --family resnext11 "${FG[@]}" --no-m-law \
        --device "$d" --no-progress --json > "$OUT/alpha-generic-$tag.json"
done
run "$PY" bench/compare_devices.py alpha "$OUT/alpha-cpu.json" "$OUT/alpha-device.json" --rtol "$RTOL"
run "$PY" bench/compare_devices.py alpha "$OUT/alpha-generic-cpu.json" "$OUT/alpha-generic-device.json" --rtol "$RTOL"
fi

rm -rf "$WORK"
echo; [ $status = 0 ] && echo "gpu_check: all steps ran" || echo "gpu_check: some steps FAILED"
exit $status
