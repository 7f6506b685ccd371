"""ONNX export of kronedge models (and dense baselines) for the edge runtime.

Public entry points:
  exporters.export.export_model(model, out_dir, target, quantize, profile, task, max_length)  `kronedge export`
  exporters.validate.validate(onnx_path, torch_model, ...)        names, dynamic axes, shapes, values; raises
  exporters.passes.optimize(model, profile, num_heads, head_size)  declarative graph rules, returns counts
  exporters.quantize.QuantPreset.arm64() / .x86_64(vnni=...)       int8 presets (dynamic or static QDQ)
  exporters.validate.check_domains / check_ort_matches            portable ops only; model.ort agrees with model.onnx
  exporters.evaluate.evaluate_exported(dir, task)                  task metric through the runtime's Predictor (`kronedge eval`)
  exporters.optimum_baseline.optimum_baseline(spec, out_dir, ...)  dense baselines through optimum
  python -m exporters.profile_bench MODEL                          latency of the export profiles
The exported directory's format is defined once, torch-free, in runtime/contract.py (docs/INTERFACES.md).
"""
