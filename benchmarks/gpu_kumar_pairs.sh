#!/usr/bin/env bash
# Kumar 10 %: the diffusion models of configs/kumar-gpu.yaml, the pair filter's segmenter and the
# filtered synthetic pairs, on one GPU in under 9 minutes (a GPU lease of 15 minutes in all).
#
# The three trainings run side by side on the one GPU (small models leave it mostly idle one at a
# time): structure and image model for train.max_minutes each, the 10 % real seed-0 segmenter
# (the grid's reference cell, here only to score the pairs) for at most SEG_SECONDS (it keeps
# its best checkpoint by validation PQ as it goes). Then `nudiff synthesize` samples 512 pairs and
# keeps the 256 its segmenter reproduces best, as the CPU grid does.
#
# Needs, in the repository root: .gpu/subset10 and .gpu/selection10 (the 10 % subset's patches
# and the segmenter's model-selection patches, as `nudiff experiment` draws them; written by
# `python benchmarks/gpu_kumar_pairs.py prepare`) and, where monai/diffusers are missing, their
# wheels in .whl. Usage (device machine, repository root):
#     bash benchmarks/gpu_kumar_pairs.sh OUT_DIR
# OUT_DIR receives pairs.tar (the 256 kept pairs + manifests + mosaics), unfiltered_*.tar (the
# 512 sampled), logs.tar (training logs, sample grids, configs) and run.log. Then, here:
#     python benchmarks/gpu_kumar_pairs.py unpack OUT_DIR   # -> runs/kumar-gpu/diffusion/f0.10
set -u
OUT_DIR=${1:?usage: gpu_kumar_pairs.sh OUT_DIR}
CFG=${CFG:-configs/kumar-gpu.yaml}
SEG_SECONDS=${SEG_SECONDS:-300}
SYN_SECONDS=${SYN_SECONDS:-150}
N=${N:-256}
THREADS=${THREADS:-2}
R=runs/kumar-gpu-device
mkdir -p "$OUT_DIR" "$R"
exec > >(tee "$OUT_DIR/run.log") 2>&1
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }

if ! python3 -c "import monai, diffusers" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src PYTHONUNBUFFERED=1
NUDIFF="python3 -m nudiff.cli"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, monai, diffusers; print('torch', torch.__version__, 'monai', monai.__version__, 'diffusers', diffusers.__version__, 'cuda', torch.cuda.is_available())"
stamp "training: structure, image and the filter's segmenter side by side"

$NUDIFF train structure --config "$CFG" --folder .gpu/subset10 --out $R/structure --threads "$THREADS" > $R/structure.log 2>&1 &
PIDS=($!)
$NUDIFF train image --config "$CFG" --folder .gpu/subset10 --out $R/image --threads "$THREADS" > $R/image.log 2>&1 &
PIDS+=($!)
timeout "$SEG_SECONDS" $NUDIFF segment train --config "$CFG" --real .gpu/subset10 --val .gpu/selection10 \
    --out $R/seg --seed 0 --threads "$THREADS" > $R/seg.log 2>&1 &
PIDS+=($!)
wait "${PIDS[@]}"  # (a bare wait would also wait for the tee above: forever)
stamp "trainings ended"
for k in structure image; do tail -n 2 $R/$k/train_log.csv | sed "s/^/$k: /"; done
tail -c 600 $R/seg.log; echo
cat $R/seg/model/info.json 2>/dev/null; echo

if [ -d $R/seg/model ]; then
    FILTER=(--segmenter $R/seg --keep-top 0.5)
else
    stamp "no segmenter model: sampling $N unfiltered pairs"
    FILTER=(--keep-top 1)
fi
timeout "$SYN_SECONDS" $NUDIFF synthesize --structure-model $R/structure --image-model $R/image -n "$N" \
    --config "$CFG" --real .gpu/subset10 "${FILTER[@]}" --out $R/synthetic
stamp "synthesis ended ($?)"

S=$R/synthetic
# back to the caller: at most 8 files of 16 MiB (the device tool's limits)
(cd $R && tar -cf "$OUT_DIR/pairs.tar" synthetic/manifest.json synthetic/images synthetic/labels \
    synthetic/mosaic.png 2>/dev/null)
if [ -d $S/unfiltered/images ]; then
    ls $S/unfiltered/images | sort > /tmp/names
    split -n l/2 /tmp/names /tmp/part_
    for p in /tmp/part_a?; do
        sed 's#^#synthetic/unfiltered/images/#; p; s#/images/#/labels/#' "$p" > "$p.list"
        tar -cf "$OUT_DIR/unfiltered_$(basename "$p").tar" -C $R -T "$p.list"
    done
fi
(cd $R && find . \( -path ./synthetic/images -o -path ./synthetic/labels -o -path ./synthetic/structures \
    -o -path ./synthetic/unfiltered/images -o -path ./synthetic/unfiltered/labels \
    -o -path ./synthetic/unfiltered/structures -o -name checkpoints -o -name tb -o -name pred \) -prune \
    -o -type f ! -name '*.safetensors' -print | tar -cf "$OUT_DIR/logs.tar" -T -)
ls -la "$OUT_DIR"
stamp "done"
