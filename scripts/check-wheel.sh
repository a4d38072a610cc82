#!/usr/bin/env bash
# actbench as users install it: build the wheel, install it (not editable; no checkout on the path)
# into a fresh environment that reuses the dependencies installed in .venv, then, from an empty
# temporary directory, run the console scripts: the data check, a tiny multirun with a user's own
# activation added through hydra.searchpath, and its report.
#   scripts/check-wheel.sh            (PY=path/to/python picks the interpreter whose packages are reused)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

src=.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # the tree as git sees it, without build/ and *.egg-info: setuptools would pack their stale copies
    mkdir "$work/src"
    git ls-files -z --cached --others --exclude-standard | tar -c --null -T - | tar -x -C "$work/src"
    src="$work/src"
fi
"$PY" -m pip wheel --quiet --no-deps "$src" -w "$work/wheel"
wheel=$(ls "$work"/wheel/actbench-*.whl)
shipped=$(find "$src/actbench/conf" -name '*.yaml' | wc -l)
packed=$("$PY" -c "import sys, zipfile; print(sum(n.startswith('actbench/conf/') and n.endswith('.yaml') for n in zipfile.ZipFile(sys.argv[1]).namelist()))" "$wheel")
echo "wheel: $(basename "$wheel"): $packed of the $shipped config files"
[ "$packed" = "$shipped" ] || { echo "the wheel lacks config files" >&2; exit 1; }

"$PY" -m venv "$work/env"
deps=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
env_site=$("$work/env/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$deps" > "$env_site/reused-dependencies.pth"   # torch, Lightning, Hydra, ... as installed already
"$work/env/bin/python" -m pip install --quiet --no-deps --ignore-installed "$wheel"

cd "$work" && mkdir -p myconf/activation
cat > my_activations.py <<'PY'
import torch


def swish(x, beta=1.0):
    return x * torch.sigmoid(beta * x)
PY
printf '_target_: my_activations.swish\nbeta: 1.5\n' > myconf/activation/wheel_check_swish.yaml
export PATH="$work/env/bin:$PATH" PYTHONPATH="$work"
python -c "import actbench, sys; p = actbench.__file__; print('actbench from', p); sys.exit(0 if p.startswith('$env_site') else 1)"
actbench-data
actbench-train -m activation=relu,wheel_check_swish "hydra.searchpath=[file://$work/myconf]" trainer.max_epochs=1 \
    data.val_size=1000 probes.activations.histograms=false report=none
actbench-report runs/default | tail -n 3
ls runs/default/activation=wheel_check_swish,*/metrics.json > /dev/null
echo "installed wheel: a run and a report from $work, outside the checkout"
