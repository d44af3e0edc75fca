#!/usr/bin/env bash
# Kumar 10 %: the image model of configs/kumar-gpu.yaml trained on one GPU, then 512 pairs sampled
# and the 256 the grid's filter segmenter reproduces best kept, in ~9 minutes of a 15-minute lease.
#
# The structure model and the filter's segmenter (the 10 % real seed-0 cell) are trained
# beforehand on CPU and carried in .gpu/structure and .gpu/seg (run folders with model/; see
# benchmarks/gpu_kumar_pairs.py), leaving the GPU to the image model, the weak link, for
# train.max_minutes. Whichever of the two is not carried is trained here, side by side with the
# image model (the first lease did that: it halved the image model's speed), the segmenter for
# at most SEG_SECONDS (it keeps its best checkpoint by validation PQ as it goes).
#
# Needs, in the repository root: .gpu/subset10 and .gpu/selection10 (the 10 % subset's patches
# and the segmenter's model-selection patches, as `nudiff experiment` draws them; written by
# `python benchmarks/gpu_kumar_pairs.py prepare`) and, where monai/diffusers are missing, their
# wheels in .whl. Usage (device machine, repository root):
#     bash benchmarks/gpu_kumar_pairs.sh OUT_DIR
# Speed options found by benchmarks/gpu_step_times.py go in IMAGE_SET (see below).
# OUT_DIR receives pairs.tar (the 256 kept pairs + manifests + mosaics), unfiltered_*.tar (the
# 512 sampled), logs.tar (training logs, sample grids, configs) and run.log. Then, here:
#     python benchmarks/gpu_kumar_pairs.py unpack OUT_DIR   # -> runs/kumar-gpu/diffusion/f0.10
set -u
OUT_DIR=${1:?usage: gpu_kumar_pairs.sh OUT_DIR}
CFG=${CFG:-configs/kumar-gpu.yaml}
SEG_SECONDS=${SEG_SECONDS:-300}
SYN_SECONDS=${SYN_SECONDS:-150}
N=${N:-256}
G=${GPU_DIR:-.gpu}  # what travels: the subset, and the models trained beforehand
THREADS=${THREADS:-2}
IMAGE_SET=${IMAGE_SET:-}  # --set overrides of the image model, e.g. "train.compile=default model.flash_attention=true"
SETS=()
for kv in $IMAGE_SET; do SETS+=(--set "$kv"); done
R=${RUN:-runs/kumar-gpu-device}
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
stamp "training what was not carried here ($G/structure, $G/seg), side by side"

PIDS=()
if [ -f $G/structure/model/model.safetensors ]; then
    cp -r $G/structure $R/structure  # trained on CPU: the GPU is the image model's alone
else
    $NUDIFF train structure --config "$CFG" --folder $G/subset10 --out $R/structure --threads "$THREADS" > $R/structure.log 2>&1 &
    PIDS+=($!)
fi
$NUDIFF train image --config "$CFG" --folder $G/subset10 --out $R/image --threads "$THREADS" "${SETS[@]}" > $R/image.log 2>&1 &
PIDS+=($!)
if [ -f $G/seg/model/model.safetensors ]; then
    cp -r $G/seg $R/seg  # the grid's own 10 % real s0 segmenter: the grid's filter exactly
else
    timeout "$SEG_SECONDS" $NUDIFF segment train --config "$CFG" --real $G/subset10 --val $G/selection10 \
        --out $R/seg --seed 0 --threads "$THREADS" > $R/seg.log 2>&1 &
    PIDS+=($!)
fi
wait "${PIDS[@]}"  # (a bare wait would also wait for the tee above: forever)
stamp "trainings ended"
for k in structure image; do tail -n 2 $R/$k/train_log.csv 2>/dev/null | sed "s/^/$k: /"; done
tail -c 600 $R/seg.log 2>/dev/null; echo
cat $R/seg/model/info.json 2>/dev/null; echo

if [ -d $R/seg/model ]; then
    FILTER=(--segmenter $R/seg --keep-top 0.5)
else
    stamp "no segmenter model: sampling $N unfiltered pairs"
    FILTER=(--keep-top 1)
fi
timeout "$SYN_SECONDS" $NUDIFF synthesize --structure-model $R/structure --image-model $R/image -n "$N" \
    --config "$CFG" --real $G/subset10 "${FILTER[@]}" --out $R/synthetic
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
