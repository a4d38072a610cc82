#!/usr/bin/env bash
# The GPU check, in one go: on a machine with a CUDA GPU and torch, and no network, it installs
# the packages torch lacks there from wheels carried in beside it, then runs the CUDA tests,
# scripts/bench.py --device cuda for every shipped model, and the blog's sweep from the command to
# its report, and prints the figures docs/speed.md's GPU section shows, with the card's name.
#
#   here (with the registries):  make gpu-wheels          # wheels of what torch lacks -> .whl/gpu/
#   on the GPU machine:          scripts/gpu-check.sh [WHEELS] [DATA]
#
# WHEELS defaults to .whl/gpu, DATA (a folder with Fashion-MNIST's four .gz files) to data/.
# About 5 minutes on one H100; every step prints its own time.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=${1:-.whl/gpu}
data=${2:-data}
py=${PYTHON:-python3}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

say() { printf '\n== %s (%(%H:%M:%S)T)\n' "$*" -1; }

$py -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null || {
  echo "gpu-check: no CUDA GPU (or no torch) for $py here; it runs on a machine with both" >&2; exit 2; }
ls "$data"/train-images-idx3-ubyte.gz >/dev/null 2>&1 || {
  echo "gpu-check: no Fashion-MNIST in $data/ (carry in its four .gz files, or name the folder: scripts/gpu-check.sh WHEELS DATA)" >&2; exit 2; }

say "packages"
if ! $py -c 'import hydra, omegaconf, lightning, tensorboard, matplotlib, scipy, optuna, submitit, pytest, filelock, flufl.lock' 2>/dev/null; then
  [ -d "$wheels" ] || { echo "gpu-check: packages are missing and there is no $wheels/ (make gpu-wheels, where PyPI is reachable)" >&2; exit 2; }
  $py -m pip install --quiet --no-index --find-links "$wheels" -r <(ls "$wheels" | sed -n 's/^\([A-Za-z0-9_.]*\)-[0-9].*\.whl$/\1/p' | grep -viE '^(torch|torchvision|nvidia_.*|triton)$')
fi
$py -m pip install --quiet --no-index --no-deps --no-build-isolation -e . >/dev/null 2>&1 || export PYTHONPATH=$PWD
gpu=$($py -c 'import torch; print(torch.cuda.get_device_name())')
echo "card: $gpu; torch $($py -c 'import torch; print(torch.__version__)')"

say "CUDA tests"
$py -m pytest -q -p no:cacheprovider tests/test_cuda_graph.py tests/test_packer.py -k "cuda or graph or bit_for_bit" 2>&1 | tail -3

for model in mlp cnn vit gpt; do   # gpt: on the plays where they were carried into the cache, else a synthetic text
  say "bench: $model"
  packed=$([ "$model" = mlp ] && echo 25 || echo 8)
  $py scripts/bench.py --device cuda --model "$model" --epochs 3 --rounds 2 --skip-startup --packed "$packed" --data-root "$data" 2>&1 \
    | grep -vE "epoch [0-9]+/|test accuracy|test loss"
done

say "the blog's sweep, from the command to its report"
start=$(date +%s)
$py -m actbench.train -m experiment=blog data.root="$data" out_dir="$out" 2>&1 | grep -E "report:|error" || true
echo "sweep: $(( $(date +%s) - start )) s from the command to its report, on $gpu"
sed -n '/^| activation/,/^$/p' "$out"/blog/report.md
