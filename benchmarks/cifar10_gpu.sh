#!/bin/bash
# How benchmarks/cifar10.md was measured on a lent GPU machine (no internet there): the same
# `kedro run --env cifar10` as on a CPU. Prepared beforehand in the repository root:
#   .whl/               Python 3.12 wheels of kedro, kedro-datasets and their pure-Python needs
#   .cifar/train.tar.gz the class folders of CIFAR-10 JPEGs (tar czf ... -C cifar10_train_20k .)
# Outputs go to $OUT as tarballs, refreshed every 45 s, so an interrupted run can resume.
set -u
start=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src KEDRO_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1
mkdir -p data/01_raw/cifar10/train && tar xzf .cifar/train.tar.gz -C data/01_raw/cifar10/train
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; python3 -c "import torch; print(torch.__version__, torch.cuda.is_available())"
echo "setup took $(( $(date +%s) - start )) s"
snapshot() {
  tar czf $OUT/models.tgz --exclude='data/cifar10/06_models/checkpoints' --exclude='data/cifar10/06_models/candidate_weights.pt' data/cifar10/06_models 2>/dev/null
  tar czf $OUT/checkpoints.tgz data/cifar10/06_models/checkpoints 2>/dev/null
  tar czf $OUT/reports.tgz data/cifar10/07_model_output data/cifar10/08_reporting 2>/dev/null
}
( while sleep 45; do snapshot; done ) &
saver=$!
timeout ${RUN_SECONDS:-500} python3 -m kedro run --env cifar10 ${KEDRO_ARGS:-} > $OUT/run.log 2>&1
echo "kedro exit $?"
kill $saver; snapshot
grep -E "epoch [0-9]+/|Completed node|Error|error" $OUT/run.log | grep -v "^ " | tail -60
echo "total $(( $(date +%s) - start )) s"; ls -la $OUT
