#!/usr/bin/env bash
# Every GPU check of the open issues, in one bounded run on a lent GPU machine (see README).
# Usage (on the GPU machine, from the repository root): bash benchmarks/gpu_all.sh OUTDIR
# Expects wheels for the packages the machine lacks in .whl/ (diffusers, optimum-quanto, torchao, importlib_metadata).
set -u
dest=${1:?usage: gpu_all.sh OUTDIR}
out=$(mktemp -d)   # every script writes here; one archive and one log go back to OUTDIR
mkdir -p "$dest"
exec > >(tee "$dest/log.txt") 2>&1
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . -e plugins/cuda -e plugins/simulated -e plugins/tiers_default >/dev/null 2>&1 \
  || { echo "editable install failed"; python3 -m pip install --no-index --no-deps --no-build-isolation -e . 2>&1 | tail -5; exit 1; }
{
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
  python3 -c "import torch, transformers, diffusers, optimum.quanto, pluggy; print('torch', torch.__version__, 'transformers', transformers.__version__, 'diffusers', diffusers.__version__, 'pluggy', pluggy.__version__)"
  python3 -c "import torchao; print('torchao', torchao.__version__)" 2>&1 | tail -1
} 2>&1 | tee "$out/env.txt"
CHECKS=${CHECKS:-info detection gpu-tests decoding optimize calibrate platforms memory heldout checkpoints quant placement}   # a subset reruns only those
run() {  # name, seconds, command...
  local name=$1 limit=$2; shift 2
  [[ " $CHECKS " == *" $name "* ]] || return 0
  echo "=== $name (limit ${limit}s)"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
}
run info 20 acestep-core info
run detection 60 python3 benchmarks/gpu_detection.py "$out"
run gpu-tests 60 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_pipeline.py tests/test_cuda_replay.py
run decoding 90 python3 benchmarks/gpu_decoding.py "$out"
run optimize 150 python3 benchmarks/gpu_optimize.py "$out"
run calibrate 140 python3 benchmarks/gpu_calibrate.py "$out" --time-limit 95
run platforms 150 python3 benchmarks/gpu_platforms.py "$out"   # issue #12: precision / lm.backend on the card, Tier 6 and unlimited runs
run memory 540 python3 benchmarks/gpu_memory.py "$out"   # issues 11, 22: every default tier at its limits, OOM recovery on the device, 8 GiB bisection if time is left
run heldout 30 python3 benchmarks/memory_heldout.py
run checkpoints 300 python3 benchmarks/gpu_checkpoints.py "$out"   # issue 21: real-size XL DiT and the 217,204-row LM vs the plan
run placement 120 python3 benchmarks/gpu_placement.py "$out"   # issue #24: a two-device layout (the LM on the CPU with one GPU), a device gone
run quant 300 python3 benchmarks/gpu_quant.py "$out"   # issue 23: per backend × scheme, bytes / time / SNR on the card
ls -la "$out"
tar czf "$dest/results.tgz" -C "$out" .
