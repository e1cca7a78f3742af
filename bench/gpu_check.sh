#!/usr/bin/env bash
# The GPU check, in one run: the `pytest -m gpu` tests, bench_inference.py --device cuda (ours
# against MONAI's sliding_window_inference, fp16 both, each at its best batch, a ResEnc-M network
# and 128^3 windows over a 320^3 volume, the bare forward as the limit), bench_nnunet.py
# --device cuda when it exists; then one table, and bench/RESULTS.md's GPU section rewritten with
# the GPU, torch, CUDA and cuDNN versions. Under 6 minutes on one GPU (each step has a time limit:
# tests 160 s, inference 150 s, nnunet 50 s when nnunetv2 is importable).
#
# Without a CUDA device it says so and runs what the CPU can, in about a minute (the tests skip,
# a small CPU bench runs), so CI keeps the script working; bench/RESULTS.md is then left alone
# unless --results FILE is given.
#
#   bench/gpu_check.sh [--results FILE]
#
# PYTHON picks the interpreter (default: .venv/bin/python if present, else python3).
# GPU_CHECK_COMPILE=auto lets the probe try torch.compile in the bench (default off: compiling a
# 100 M-parameter network takes minutes of the budget; the tests check compiled masks).
# A machine without the package registry (the lent GPU machine) gets what it lacks as wheels in
# .whl/, installed into a scratch folder first; make them here with
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl monai dynamic-network-architectures
# (.whl/ is git-ignored: a copy of the working tree reaches the GPU machine with it only if named
# among the paths to carry). With $OUT set, everything the steps wrote comes back as one archive.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

results=""
if [[ "${1:-}" == "--results" && -n "${2:-}" ]]; then
    results=$2
fi
if [[ -n "${PYTHON:-}" ]]; then
    python=$PYTHON
elif [[ -x .venv/bin/python ]]; then
    python=.venv/bin/python
else
    python=python3
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
: >"$work/steps.tsv"

if compgen -G ".whl/*.whl" >/dev/null; then
    if "$python" -m pip install -q --no-index --no-deps --no-compile --target "$work/site" .whl/*.whl; then
        export PYTHONPATH="$work/site:$PYTHONPATH"
    else
        echo "gpu_check: installing the wheels in .whl/ failed; going on without them" >&2
    fi
fi

# step NAME LIMIT_SECONDS COMMAND...: run it with a time limit, log it, record status and time.
step() {
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS status
    echo "== $name (at most ${limit} s): $*"
    timeout --kill-after=10 "$limit" "$@" >"$work/$name.log" 2>"$work/$name.err"
    status=$?
    if ((status == 124 || status == 137)); then
        echo "gpu_check: $name ran past its ${limit} s" | tee -a "$work/$name.log"
    fi
    printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" >>"$work/steps.tsv"
    tail -n 25 "$work/$name.log"
    if ((status != 0)); then
        tail -n 15 "$work/$name.err" >&2
    fi
}

"$python" - "$work/environment.json" <<'EOF'
import datetime, json, platform, shutil, subprocess, sys
info = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "python": platform.python_version()}
try:
    import torch
except Exception as error:  # no torch: nothing to check
    info.update(cuda=False, reason=f"import torch failed: {error}")
else:
    info.update(torch=torch.__version__, cuda_runtime=torch.version.cuda, cuda=False)
    info["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    if torch.cuda.is_available():
        try:
            torch.ones(8, device="cuda").sum().item()  # a real op: a P100 under cu128 fails here
            properties = torch.cuda.get_device_properties(0)
            info.update(
                cuda=True, gpu=properties.name, capability=f"{properties.major}{properties.minor}",
                memory_gib=round(properties.total_memory / 2**30, 1), gpus=torch.cuda.device_count(),
            )
        except Exception as error:
            info["reason"] = f"cuda:0 fails a test op: {str(error).splitlines()[0]}"
    else:
        info["reason"] = f"torch {torch.__version__} sees no CUDA device"
    if info["cuda"] and shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        done = subprocess.run(query, capture_output=True, text=True, check=False)
        info["driver"] = done.stdout.strip().splitlines()[0] if done.stdout.strip() else None
json.dump(info, open(sys.argv[1], "w"), indent=2)
print("gpu_check:", json.dumps(info))
EOF
gpu=$("$python" -c "import json, sys; print(int(json.load(open(sys.argv[1]))['cuda']))" "$work/environment.json" 2>/dev/null || echo 0)
if [[ "$gpu" == 1 ]]; then
    echo "gpu_check: CUDA device found; the whole check runs"
else
    echo "gpu_check: NO CUDA DEVICE: the GPU tests skip and a small CPU bench runs instead"
fi

# A per-test limit below the step's (with pytest-timeout, where installed), so one stuck test
# fails alone and the JUnit report, which the table is made from, is still written.
per_test=()
if "$python" -c "import pytest_timeout" 2>/dev/null; then
    per_test=(--timeout "${GPU_CHECK_TEST_TIMEOUT:-90}")
fi
step tests "${GPU_CHECK_TESTS_LIMIT:-160}" "$python" -m pytest -m gpu tests/test_gpu.py -q -rs \
    -p no:cacheprovider "${per_test[@]}" --junitxml="$work/gpu-tests.xml"

compile=(--no-compile)
if [[ "${GPU_CHECK_COMPILE:-off}" == auto ]]; then
    compile=()
fi
if [[ "$gpu" == 1 ]]; then
    model=resenc-m
    "$python" -c "import dynamic_network_architectures" 2>/dev/null || {
        echo "gpu_check: dynamic-network-architectures is missing (see .whl above): the random built-in U-Net instead"
        model=random
    }
    step inference "${GPU_CHECK_BENCH_LIMIT:-150}" "$python" bench/bench_inference.py --device cuda \
        --model "$model" --patch 128 --shape 320 320 320 --amp fp16 --batch auto --repeat 3 \
        "${compile[@]}" --json "$work/inference.json"
    # nnUNetPredictor needs nnunetv2 and its whole tree, which the lent machine lacks unless
    # carried: without it the step is skipped (said in the log), not failed.
    if "$python" -c "import nnunetv2" 2>/dev/null; then
        step nnunet "${GPU_CHECK_NNUNET_LIMIT:-50}" "$python" bench/bench_nnunet.py --device cuda \
            --mirroring off --repeat 1 --no-exact
    else
        echo "gpu_check: nnunetv2 is not importable here: bench_nnunet.py skipped"
    fi
else
    # One torch thread: on a busy shared CPU a second one mostly spin-waits.
    step inference "${GPU_CHECK_BENCH_LIMIT:-150}" "$python" bench/bench_inference.py --device cpu \
        --model demo --patch 32 --shape 48 48 48 --batch 2 --repeat 2 --threads 1 \
        --json "$work/inference.json"
    if [[ -f bench/bench_nnunet.py ]]; then
        echo "gpu_check: bench_nnunet.py is left to a GPU run"
    fi
fi

if [[ -z "$results" && "$gpu" == 1 ]]; then
    results=bench/RESULTS.md
fi
echo
"$python" bench/gpu_report.py "$work" ${results:+--results "$results"}
status=$?
if [[ -z "$results" ]]; then
    echo "gpu_check: no GPU, so bench/RESULTS.md is left as it is"
fi
if [[ -n "${OUT:-}" && -d "${OUT:-}" ]]; then
    # One archive (logs, stderr with the probe's decisions, the JUnit report) and the results.
    tar czf "$OUT/gpu-check.tgz" -C "$work" --exclude=site .
    [[ -n "$results" && -f "$results" ]] && cp "$results" "$OUT"/
fi
echo "gpu_check: the steps' logs are in $work"
exit "$status"
