"""CPU seconds (process_time, so a loaded machine slows it less than wall time) of scoring every
candidate split and rank of one MiniLM layer per role at 5x, with the global search's 2x cap, and
the total extrapolated to all 37 layers. Run it once per code version to compare them:

    python benchmarks/search_cpu.py OUT.json                        # this checkout
    PYTHONPATH=/path/to/other/checkout python benchmarks/search_cpu.py OUT.json
"""
import json
import sys
import time

import torch
from transformers import AutoTokenizer

from kronedge.calibration import calibration_texts, collect_input_stats
from kronedge.fitting import WeightedProblem
from kronedge.structure import layer_candidates
from kronedge.teachers import load_teacher

torch.set_num_threads(1)
loaded = load_teacher("builtin:minilm", head="base")
t = loaded.model.eval()
tok = AutoTokenizer.from_pretrained(loaded.tokenizer_dir)
stats = collect_input_stats(t, tok, calibration_texts("sst2", limit=256))
mods = dict(t.named_modules())
out = {}
for name, kind, count in [("embeddings.word_embeddings", "embedding", 1), ("encoder.layer.0.attention.self.query", "linear", 18),
                          ("encoder.layer.0.attention.output.dense", "linear", 6),
                          ("encoder.layer.0.intermediate.dense", "linear", 6), ("encoder.layer.0.output.dense", "linear", 6)]:
    w = mods[name].weight
    budget = w.numel() // 5
    p = WeightedProblem(w, stats.get(name))
    c0 = time.process_time()
    found = layer_candidates(p, kind, 2 * budget)
    out[name] = {"cpu_s": round(time.process_time() - c0, 2), "candidates": len(found), "layers_like_it": count,
                 "best_error_at_budget": min(c.error for c in found if c.params <= budget)}
    print(name, out[name], flush=True)
out["total_cpu_s_extrapolated"] = round(sum(v["cpu_s"] * v["layers_like_it"] for v in out.values()), 1)
print(json.dumps(out))
json.dump(out, open(sys.argv[1], "w"), indent=1)
