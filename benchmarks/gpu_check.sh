#!/usr/bin/env bash
# One prepared check for a lent GPU (issue 15 item 5), under 10 minutes in all:
#   0. environment: nvidia-smi, Python / jax / torch versions, jax's devices, imports;
#   1. the sampler at SmolLM2-135M shape (random weights) against transformers `generate`
#      on CUDA: greedy, batch 16 x 128 and 64 x 256 new tokens, f32 and bf16 weights;
#      identical greedy tokens checked (f32 with full-f32 matmuls on both sides);
#   2. a full train step at Qwen2.5-0.5B shape (random weights, 8 x 1024 tokens, bf16 and
#      f32/TF32 matmuls, one process each): tokens/s and MFU against the same-run matmul
#      peak and the GPU's nominal dense peak;
#   3. the GPU-relevant tests (transformers parity, sampling, chunked log-probs, LoRA,
#      scoring, export, policy losses; not the `slow` ones, not the 8-device mesh ones),
#      with full-f32 matmuls (tests/conftest.py);
#   4. if time is left: the GRPO update at SmolLM2 shape, chunked vs full [N, T, V] logits
#      (compiled temporaries, step time, MFU).
# Each part runs under its own `timeout`, cut to the time left of GPU_CHECK_BUDGET_S
# (default 540 s); a part that fails does not stop the next.
#
# Output (all under $OUT, at most 3 files, as the device tool brings back 8):
#   $OUT/gpu_check.log               everything printed, ending with the summary tables
#   $OUT/gpu_check_summary.md        the summary tables (benchmarks/gpu_summary.py)
#   $OUT/gpu_check_results.tar.gz    the JSON results and per-part logs
#
# Run through the device tool from the repository root (see benchmarks/README.md):
#   bash benchmarks/gpu_check.sh
# and on any machine, as a seconds-long check that every part's command runs (CPU, tiny
# shapes, tests only collected):
#   OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh --cpu-smoke
set -u -o pipefail

cd "$(dirname "$0")/.." || exit 1
SMOKE=0
if [[ "${1:-}" == "--cpu-smoke" ]]; then SMOKE=1; elif [[ -n "${1:-}" ]]; then
  echo "usage: bash benchmarks/gpu_check.sh [--cpu-smoke]" >&2; exit 2
fi
OUT=${OUT:-/tmp/gpu_check_out}
WORK=${GPU_CHECK_WORK:-/tmp/gpu_check_work}
mkdir -p "$OUT" "$WORK" || exit 1
PY=${PYTHON:-python3}
# --cpu-smoke runs on a CPU that may be shared: 4x the limits, no tight budget.
SLOW=$(( SMOKE ? 4 : 1 ))
BUDGET=${GPU_CHECK_BUDGET_S:-$(( SMOKE ? 3000 : 540 ))}
rm -rf "${WORK:?}"/* "$OUT/gpu_check_results.tar.gz" "$OUT/gpu_check_summary.md"
LOG=$OUT/gpu_check.log

main() {

# Carried wheels (.whl/, see benchmarks/README.md) for packages the image lacks.
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONDONTWRITEBYTECODE=1

if (( SMOKE )); then
  export JAX_PLATFORMS=cpu
  JAXDEV=cpu; TORCHDEV=cpu
else
  JAXDEV=gpu; TORCHDEV=cuda
fi

START=$SECONDS
FAILED=()

pack() {  # the JSONs and part logs so far -> one tarball in $OUT
  tar -czf "$OUT/gpu_check_results.tar.gz" -C "$WORK" . 2>/dev/null || true
}

# part NAME LIMIT_S COMMAND...: run under `timeout`, cut to the budget left (less a
# 20-second reserve for the summary); skipped if under 15 s are left.
part() {
  local name=$1 limit=$(( $2 * SLOW )); shift 2
  local left=$(( BUDGET - (SECONDS - START) - 20 ))
  (( limit > left )) && limit=$left
  echo
  echo "=== [$(date -u +%H:%M:%S)] $name (limit ${limit}s, $(( SECONDS - START ))s elapsed)"
  if (( limit < 15 )); then
    echo "SKIPPED $name: out of time"; FAILED+=("$name(skipped)"); return
  fi
  local t0=$SECONDS rc
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$WORK/$name.log"
  rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $(( SECONDS - t0 ))s"
  (( rc == 124 || rc == 137 )) && echo "TIMEOUT $name"
  (( rc != 0 )) && FAILED+=("$name(rc=$rc)")
  pack
}

# ---------------------------------------------------------------- 0. environment
env_check() {
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 \
    || echo "(no nvidia-smi)"
  echo "load average: $(cat /proc/loadavg 2>/dev/null)"; echo "cores: $(nproc)"
  "$PY" - <<'EOF'
import importlib, platform, sys
print("python", platform.python_version(), sys.executable)
for name in ("jax", "jaxlib", "flax", "optax", "chex", "torch", "transformers", "safetensors",
             "tokenizers", "numpy", "pytest", "hypothesis", "einops", "orbax.checkpoint"):
    try:
        module = importlib.import_module(name)
        print(f"{name:18s} {getattr(module, '__version__', '?')}")
    except Exception as err:  # report every missing package, not only the first
        print(f"{name:18s} MISSING ({type(err).__name__}: {err})")
import jax
print("jax backend:", jax.default_backend(), jax.devices())
import torch
print("torch cuda:", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
import rewardlab, rewardlab.sampling, rewardlab.rl.update, rewardlab.models.lora
print("rewardlab imported from", rewardlab.__file__)
EOF
}
export PY
export -f env_check
part env 60 bash -c env_check
if (( ! SMOKE )) && ! grep -q "jax backend: gpu" "$WORK/env.log"; then
  echo "FAIL: jax sees no GPU (see env above); the GPU parts would only measure the CPU."
  FAILED+=("no-jax-gpu")
fi

# ---------------------------------------------------------------- 1. sampler vs transformers
if (( SMOKE )); then
  SHAPE=(--hidden 64 --ffn 128 --layers 2 --heads 4 --kv-heads 2 --vocab 512)
  RUNS=("float32 4 8" "bfloat16 4 8")
else
  SHAPE=(--hidden 576 --ffn 1536 --layers 30 --heads 9 --kv-heads 3 --vocab 49152)
  RUNS=("float32 16 128" "bfloat16 16 128" "float32 64 256" "bfloat16 64 256")
fi
for run in "${RUNS[@]}"; do
  read -r dtype batch new <<<"$run"
  precision=()  # f32: full-f32 matmuls in jax (TF32 otherwise), as torch's default
  [[ $dtype == float32 ]] && precision=(JAX_DEFAULT_MATMUL_PRECISION=highest)
  part "sampler_${dtype}_b${batch}" 90 env XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 "${precision[@]}" \
    "$PY" benchmarks/sampler.py "${SHAPE[@]}" --param-dtype "$dtype" --batch "$batch" \
    --new-tokens "$new" --prompt-len 16 --repeats 3 --cache-chunks none --torch-threads 1 \
    --device "$JAXDEV" --torch-device "$TORCHDEV" --out "$WORK/sampler_${dtype}_b${batch}.json"
done

# ---------------------------------------------------------------- 2. train step, Qwen2.5-0.5B
if (( SMOKE )); then
  part train_step 120 "$PY" benchmarks/train_step.py --device cpu --sizes d256 \
    --dtype float32,bfloat16 --steps 1 --warmup 0 --batch 2 --seq 64 --matmul-n 256 \
    --out "$WORK/train_step_smoke.json"
else
  # one process per dtype, so that a slow compile of one cannot lose the other's result
  part train_step_bf16 150 "$PY" benchmarks/train_step.py --device gpu --sizes qwen05b \
    --dtype bfloat16 --steps 5 --warmup 2 --out "$WORK/train_step_gpu_bf16.json"
  part train_step_f32 120 "$PY" benchmarks/train_step.py --device gpu --sizes qwen05b \
    --dtype float32 --steps 5 --warmup 2 --out "$WORK/train_step_gpu_f32.json"
fi

# ---------------------------------------------------------------- 3. tests
# The mesh tests need 8 devices (8 fake CPU devices in `make test`), not one GPU.
DESELECT="not mesh and not sharded_normalizations"
TESTS=(tests/test_hf.py tests/test_sampling.py tests/test_logprobs.py tests/test_lora.py
       tests/test_score.py tests/test_export.py tests/test_losses_policy.py)
if (( SMOKE )); then
  part tests 120 "$PY" -m pytest -qq -p no:cacheprovider --collect-only -m "not slow" \
    -k "$DESELECT" "${TESTS[@]}"
else
  # No preallocation: torch (the reference) shares the GPU with jax in these processes.
  part tests 150 env XLA_PYTHON_CLIENT_PREALLOCATE=false "$PY" -m pytest -q \
    -p no:cacheprovider -m "not slow" -k "$DESELECT" -rf "${TESTS[@]}"
fi

# ---------------------------------------------------------------- 4. RL step (if time is left)
if (( SMOKE )); then
  part rl_step 120 "$PY" benchmarks/rl_step.py --cpu-smoke --variants chunked,unchunked \
    --out "$WORK/rl_step_smoke.json"
else
  part rl_step 180 "$PY" benchmarks/rl_step.py --random --device gpu --steps 3 \
    --variants chunked,unchunked --out "$WORK/rl_step_gpu.json"
fi

# ---------------------------------------------------------------- summary
echo
echo "=== summary ($(( SECONDS - START ))s in all; load average $(cat /proc/loadavg 2>/dev/null))"
"$PY" benchmarks/gpu_summary.py "$WORK" | tee "$OUT/gpu_check_summary.md"
pack
if (( ${#FAILED[@]} )); then
  echo "NOT OK: ${FAILED[*]}"
  return 1
fi
echo "ALL PARTS OK"
}

main 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
