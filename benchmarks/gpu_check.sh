#!/bin/bash
# One call on a lent GPU machine (device tool, about 15 minutes in all): the default pipeline,
# then `--env cifar10` and `--env cifar10_mobilenetv2`, each under its own time limit, and per
# run each stage's seconds and the block search's overhead against the teacher's training.
# Prepared beforehand in the repository root, as for cifar10_gpu.sh (no internet there):
#   .whl/               Python 3.12 wheels of kedro, kedro-datasets, torch-pruning and their
#                       pure-Python needs (torch and torchvision are on the machine)
#   .cifar/train.tar.gz the class folders of CIFAR-10 JPEGs (tar czf ... -C cifar10_train_20k .)
# Each run's log and reports land in $OUT/<run>/. Dry run on a CPU: SECONDS_EACH=60 OUT=/tmp/o
# bash benchmarks/gpu_check.sh (a run cut by its limit reports what it finished).
set -u
OUT=${OUT:?set OUT to a folder for the results}
SECONDS_EACH=${SECONDS_EACH:-200}
start=$(date +%s)
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
fi
export KEDRO_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1 COLUMNS=200
if [ -f .cifar/train.tar.gz ] && [ ! -d data/01_raw/cifar10/train ]; then
  mkdir -p data/01_raw/cifar10/train && tar xzf .cifar/train.tar.gz -C data/01_raw/cifar10/train
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
echo "set-up: $(( $(date +%s) - start )) s"

run() {  # run NAME KEDRO_ARGS...: one pipeline run from empty data folders (01_raw kept)
  local name=$1; shift
  mkdir -p "$OUT/$name"
  local root=data  # the environment's data_root (conf/<env>/globals.yml)
  [[ " $* " =~ " --env "([a-z0-9_]+) ]] && root=data/${BASH_REMATCH[1]}
  rm -rf "$root"/0[2-8]_* && git checkout -q -- data 2>/dev/null
  local began=$(date +%s)
  timeout "$SECONDS_EACH" python3 -m kedro run "$@" > "$OUT/$name/run.log" 2>&1
  echo "== $name: exit $? after $(( $(date +%s) - began )) s"
  cp "$root"/08_reporting/*.json "$OUT/$name/" 2>/dev/null
  grep -oE "Completed node|Running node: [a-z_.]+|done in [0-9.]+ ?s" "$OUT/$name/run.log" | tail -40
  python3 - "$OUT/$name" <<'EOF'
import json, sys
from pathlib import Path
folder = Path(sys.argv[1])
def read(name):
    path = folder / name
    return json.loads(path.read_text()) if path.exists() else {}
teacher, search, metrics = read("teacher_metrics.json"), read("block_search_metrics.json"), read("metrics.json")
print("teacher train s:", teacher.get("train_seconds"), " block search s:", search.get("seconds"),
      " overhead vs teacher:", search.get("overhead_vs_teacher"))
for model, row in metrics.items():
    if isinstance(row, dict) and "top1" in row:
        print(f"  {model}: test top-1 {row['top1']:.2f} (mean {row.get('top1_mean')}), "
              f"FLOPs {row['flops']:.3g}, params {row['params']:.3g}")
EOF
}

run default
run cifar10 --env cifar10
run cifar10_mobilenetv2 --env cifar10_mobilenetv2
echo "total: $(( $(date +%s) - start )) s"
