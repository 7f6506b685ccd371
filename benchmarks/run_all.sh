#!/usr/bin/env bash
# Reproduce benchmarks/results/ (heavy: run on an otherwise quiet machine; ~20 min on 2 vCPUs).
#   1. build the models (random weights; dense baselines through optimum, KroneckerBERT through kronedge)
#   2. host latency: the headline run (seq 128, batch 1, 2 threads) and a 1-thread grid
#   3. ORT per-op-type profile of the Kronecker vs the dense graphs
#   4. ARM instruction counts under emulated Pi 4 / Pi 5 CPUs, twice each (repeatability)
set -euo pipefail
cd "$(dirname "$0")/.."
export ORT_DISABLE_TELEMETRY=1 HF_HUB_OFFLINE=1
M=benchmarks/work/models
R=benchmarks/results
mkdir -p "$R"

nice -n 5 python benchmarks/make_models.py

MODELS=(dense-fp32 dense-o2 dense-int8 dense-o2-int8 tinybert-fp32 tinybert-int8 kb8-fp32 kb8-int8 kb21-fp32 kb21-int8 bal21-fp32 bal21-int8)
ARGS=(); for m in "${MODELS[@]}"; do ARGS+=("$M/$m"); done

# Headline: ratios of every model to optimum's dense BERT_BASE fp32 (baseline = first), interleaved.
nice -n 5 kronedge bench "${ARGS[@]}" --seq 128 --batch 1 --threads 2 --warmup 5 --iters 40 --json \
  --output "$R/latency.json" --markdown "$R/latency.md" --plot "$R/latency.png" > /dev/null

nice -n 5 kronedge bench $M/dense-fp32 $M/dense-int8 $M/dense-o2-int8 $M/tinybert-int8 $M/kb21-fp32 $M/kb21-int8 \
  $M/bal21-fp32 $M/bal21-int8 --seq 128 --batch 1 --threads 1 --warmup 5 --iters 40 --json --output "$R/latency_1thread.json" --markdown "$R/latency_1thread.md" > /dev/null

# 1-thread grid (the more stable setting on shared VMs).
nice -n 5 kronedge bench "${ARGS[@]}" --seq 32,128 --batch 1,8 --threads 1 --warmup 2 --iters 10 --no-rss \
  --output "$R/latency_grid_1thread.json" --markdown "$R/latency_grid_1thread.md" --plot "$R/latency_grid_1thread.png" > /dev/null

nice -n 5 python benchmarks/profile_ops.py --seq 128 --threads 1 --runs 20 \
  dense-fp32=$M/dense-fp32 dense-int8=$M/dense-int8 dense-o2-int8=$M/dense-o2-int8 \
  kb21-fp32=$M/kb21-fp32 kb21-int8=$M/kb21-int8 > "$R/profile_ops.md"

nice -n 5 python benchmarks/arm_instructions.py --cpus cortex-a53,cortex-a72,cortex-a76 --seq 128 \
  --names dense-int8-arm64,tinybert-int8-arm64,kb21-int8-arm64 \
  $M/dense-int8-arm64 $M/tinybert-int8-arm64 $M/kb21-int8-arm64
