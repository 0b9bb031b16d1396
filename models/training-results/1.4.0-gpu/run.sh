#!/bin/bash
# Twenty-second session, on the lent H200 (one call): recipe 1.4.0's nine folds, each scored at the
# node's grid step 3 and again at steps 4 and 5 (``--steps``), and recipe 1.12.0's two pilot folds,
# all eleven side by side on the one GPU. Needs gpu-pack/cases.npz.xz (the training cases of
# ``train_default.py pack``, uncompressed npz, xz) and .whl/ (segmentation-models-pytorch, pydicom
# for the machine's Python 3.12). Results come back under $OUT (the device tool's folder).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 OMP_NUM_THREADS=1 MPLBACKEND=Agg
python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('gpu-pack/cases.npz.xz'), open('/tmp/cases.npz', 'wb'))" || exit 1
A=models/training-results/1.4.0-gpu B=models/training-results/1.12.0 LIMIT=${LIMIT:-480} MINUTES=${MINUTES:-5}
mkdir -p "$A" "$B"
{ nvidia-smi -L; python3 -c "import torch, timm, segmentation_models_pytorch as smp; print('torch', torch.__version__, 'timm', timm.__version__, 'smp', smp.__version__)"; nproc; } > "$A/machine.txt" 2>&1
pids=()
for head in siemens philips mni152 robex pycortex-s1 radiomics-brain1 sdcflows-epi ds000031 seg3d-epilepsy; do
  timeout "$LIMIT" python3 models/train_default.py loo "$head" --recipe 1.4.0 --cases /tmp/cases.npz --results "$A" --device cuda --threads 1 --max-minutes "$MINUTES" --steps 4,5 > "$A/loo-$head.log" 2>&1 &
  pids+=($!)
done
for head in radiomics-brain1 pycortex-s1; do
  timeout "$LIMIT" python3 models/train_default.py loo "$head" --recipe 1.12.0 --cases /tmp/cases.npz --results "$B" --device cuda --threads 1 --max-minutes "$MINUTES" > "$B/loo-$head.log" 2>&1 &
  pids+=($!)
done
(while sleep 20; do echo "$(date +%T) $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader) load $(cut -d' ' -f1 /proc/loadavg)"; done) >> "$A/machine.txt" 2>&1 &
monitor=$!
for pid in "${pids[@]}"; do wait "$pid"; echo "exit $?" >> "$A/machine.txt"; done
kill "$monitor"
tail -n 3 "$A"/*.log "$B"/*.log
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
tar czf "$OUT/results.tgz" --exclude='*.pt' --exclude='*.ckpt' --exclude='*probabilities.npz' "$A" "$B"
tar cf - "$A"/*probabilities.npz "$B"/*probabilities.npz | split -b 15M - "$OUT/probabilities.tar."
cp "$A/loo-radiomics-brain1.pt" "$OUT/" 2>/dev/null
ls -la "$OUT"
