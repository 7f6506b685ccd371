#!/usr/bin/env bash
# SST-2 accuracy rows on one GPU: every method of benchmarks/accuracy.py as its own process, side by
# side (MiniLM-sized models leave a GPU mostly idle, so parallel processes share it well), each under
# the same wall-clock budget for its two KD stages (epochs trimmed to fit, recorded per row).
#
#   bash benchmarks/gpu_accuracy.sh                       # writes runs/gpu-accuracy/
#   OUT=/tmp/x BUDGET_MIN=0.5 S1_EXAMPLES=64 S2_EXAMPLES=256 bash benchmarks/gpu_accuracy.sh   # smoke
#
# Needs the fine-tuned SST-2 teacher at $TEACHER; with PACKED set, it is first restored there from
# an fp16 copy (benchmarks/pack_teacher.py). The rows land in $OUT/accuracy-gpu.json; merge them with
#   python benchmarks/accuracy.py --merge $OUT/accuracy-gpu.json
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-accuracy}
TEACHER=${TEACHER:-runs/teachers/sst2-0ab9747d3684}
BUDGET_MIN=${BUDGET_MIN:-7}
S1_EXAMPLES=${S1_EXAMPLES:-0}
S2_EXAMPLES=${S2_EXAMPLES:-0}
EPOCHS=${EPOCHS:-10}
BATCH=${BATCH:-64}
RUNS=${RUNS:-runs/gpu}
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=2
mkdir -p "$OUT" "$RUNS"

if [ -n "${PACKED:-}" ]; then
    "$PYTHON" benchmarks/pack_teacher.py unpack "$PACKED" "$TEACHER" || exit 1
fi
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi"
    "$PYTHON" -c "import torch, transformers, accelerate, tokenizers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'tokenizers', tokenizers.__version__)"
} 2>&1 | tee "$OUT/env.txt"

common=(--tasks sst2 --compressions 5 --teacher "$TEACHER" --corpus wikitext-2-all --stage1-examples "$S1_EXAMPLES"
        --stage1-epochs 3 --stage1-lr 5e-4 --stage2-examples "$S2_EXAMPLES" --stage2-epochs "$EPOCHS"
        --batch-size "$BATCH" --precision fp32 --time-budget "$BUDGET_MIN" --loss-weights attention=0.1
        --runs "$RUNS")
pids=()
launch() {  # name, then accuracy.py options
    local name=$1; shift
    "$PYTHON" benchmarks/accuracy.py "${common[@]}" "$@" --out "$RUNS/part-$name.json" >"$RUNS/log-$name.txt" 2>&1 &
    pids+=($!)
}
launch kron-s0     --methods kronecker-kd        --budget gpu --stage2-lr 5e-4 --seed 0
launch svd-s0      --methods svd-kd              --budget gpu --stage2-lr 5e-4 --seed 0
launch nokd-s0     --methods kronecker-no-kd     --budget gpu --stage2-lr 5e-4 --seed 0
launch nos1-s0     --methods kronecker-no-stage1 --budget gpu --stage2-lr 5e-4 --seed 0
launch dense-s0    --methods dense-small-kd      --budget gpu --stage2-lr 5e-4 --seed 0
launch kron-s1     --methods kronecker-kd        --budget gpu --stage2-lr 5e-4 --seed 1
launch svd-s1      --methods svd-kd              --budget gpu --stage2-lr 5e-4 --seed 1
launch kron-lr2-s0 --methods kronecker-kd        --budget gpu-lr2e-4 --stage2-lr 2e-4 --seed 0
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done

parts=("$RUNS"/part-*.json)
if [ -e "${parts[0]}" ]; then
    # Every part holds its teacher row and its student row; the merge keeps one of each.
    first=${parts[0]}
    cp "$first" "$OUT/accuracy-gpu.json"
    "$PYTHON" benchmarks/accuracy.py --merge "${parts[@]}" --out "$OUT/accuracy-gpu.json" || status=1
fi
tar -czf "$OUT/logs.tgz" "$RUNS"/log-*.txt "$RUNS"/*/stage*/log.jsonl "$RUNS"/*/stage*/metrics.json 2>/dev/null
for f in "$RUNS"/log-*.txt; do echo "== $f"; grep -E "\[bench\]|time budget|Error|error" "$f" | tail -4; done
exit $status
