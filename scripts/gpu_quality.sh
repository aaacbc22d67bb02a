#!/bin/bash
# Issue 9's measure at GPU scale, as one prepared command for a bare CUDA machine (torch there, hwnas's other
# needs carried as wheels): the default supernet with two seeds and the 8 subnets trained alone with two draws,
# all at EP epochs on all of cifar10-small, as parallel processes on the one GPU (the nets are launch-bound).
#
# Prepare here (the folder .gpu is git-ignored through .git/info/exclude):
#   mkdir -p .gpu && echo /.gpu/ >> .git/info/exclude
#   tar -C ../shared/datasets -cf .gpu/c10s.tar cifar10-small
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .gpu/whl pydantic pydantic_core annotated-types typing-inspection typing_extensions
#     (the versions this venv has; pydantic_core must be the one pydantic names)
# Run there from the repository root:  EP=20 bash scripts/gpu_quality.sh   (about 6-7 min on an H200 at 20 epochs,
# estimated from the 15-epoch runs of 2026-11-27; OUT collects log.txt and w.tgz, snapshotted every 20 s).
# A dry run on a CPU: EP=0.05 DEV=cpu JOBS=2 OUT=/tmp/gout EXTRA="--train-limit 256 --alone-subset 0 1" bash scripts/gpu_quality.sh
EP=${EP:-20}; DEV=${DEV:-cuda}; JOBS=${JOBS:-18}; EXTRA=${EXTRA:-}; TMO=${TMO:-555}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null; nproc
if [ -d .gpu/whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 3
  export PYTHONPATH=$PWD:/tmp/site
fi
export PYTHONUNBUFFERED=1
mkdir -p /tmp/d && tar -C /tmp/d -xf .gpu/c10s.tar || exit 4
python3 -c "import torch, pydantic; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'pydantic', pydantic.VERSION)"
W=/tmp/w-$EP
( while sleep 20; do tar -C /tmp -czf "$OUT/w.tgz.part" --exclude='*.pt' "$(basename $W)" 2>/dev/null && mv "$OUT/w.tgz.part" "$OUT/w.tgz"; done ) &
SNAP=$!
T0=$(date +%s)
# shellcheck disable=SC2086
timeout "$TMO" python3 scripts/bench_recipes.py --work $W --data /tmp/d/cifar10-small --epochs "$EP" --device "$DEV" \
  --jobs "$JOBS" --alone-seed 0 1 --variant s0 '{}' --variant s1 '{seed: 1}' $EXTRA 2>&1 | tee "$OUT/log.txt"
echo "bench wall $(( $(date +%s) - T0 )) s"
kill $SNAP; tar -C /tmp -czf "$OUT/w.tgz" --exclude='*.pt' "$(basename $W)"
nvidia-smi --query-gpu=memory.used --format=csv 2>/dev/null; date -u
