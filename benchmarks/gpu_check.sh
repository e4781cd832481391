#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU, in one call of under five minutes, every bncli
# command on CUDA, the tests marked cuda, and the depth benchmark against its lower bound, all
# written to one file (default benchmarks/results_cuda.md):
#
#   bash benchmarks/gpu_check.sh [OUT_FILE]
#
# It runs bncli from this checkout with the machine's own python3 and torch (PYTHON=... to pick
# another). Packages that python lacks can travel as wheels in .whl/ (pydantic and
# pydantic_core, on an image without them): they are installed to /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results_cuda.md}
py=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
  $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 COLUMNS=160
work=$(mktemp -d)
status=0
{
  echo "# bncli on CUDA: benchmarks/gpu_check.sh"
  echo
  echo '```'
  date -u "+%Y-%m-%d %H:%M UTC"
  nvidia-smi -L 2>&1 | head -4
  $py -c "import torch, sys; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA')"
  echo '```'
} > "$out"
if ! $py -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "no CUDA device here: nothing to check" | tee -a "$out"
  exit 1
fi

step() {  # step TITLE COMMAND...: run it, its output and exit code into the file
  local title=$1; shift
  echo "== $title" >&2
  local t0=$SECONDS
  { echo; echo "## $title"; echo; echo '```console'; echo "\$ $*"; } >> "$out"
  (cd "$work" && "$@") >> "$out" 2>&1
  local rc=$?
  { echo "(exit $rc, $((SECONDS - t0)) s)"; echo '```'; } >> "$out"
  [ $rc -eq 0 ] || status=1
}

bn=("$py" -m bncli)
step "depth study, the notebook's defaults" "${bn[@]}" depth-study --every 20 --name defaults
step "depth study, N(0,1) without a norm" "${bn[@]}" depth-study --init normal --norm none --every 10 --name diverges
step "depth study, --grads --erank" "${bn[@]}" depth-study --depth 50 --grads --erank --every 10 --name grads
step "depth study, bfloat16 and --keep-weights" "${bn[@]}" depth-study --dtype bfloat16 --keep-weights --every 25 --name bf16
step "depth study, depth 20000" "${bn[@]}" depth-study --depth 20000 --name deep
step "running stats, BatchNorm2d and 3d" "${bn[@]}" running-stats --dims 3 --name rs3
step "convergence" "${bn[@]}" convergence --name conv
step "sweep, two workers on one GPU" "${bn[@]}" sweep "$PWD/configs/sweeps/init_vs_norm.yaml" --workers 2 --no-progress
step "show and plot" "${bn[@]}" show results/sweeps/init_vs_norm
step "plot" "${bn[@]}" plot results/sweeps/init_vs_norm --metric chan_var
step "the tests marked cuda" "$py" -m pytest -m cuda -q -p no:cacheprovider "$PWD/tests"
step "the depth benchmark on CUDA (bncli against its lower bound)" \
  "$py" "$PWD/benchmarks/bench_depth.py" --device cuda --sizes notebook,large,wide --no-memory --out -
rm -rf "$work"
echo "written: $out (status $status)" >&2
exit $status
