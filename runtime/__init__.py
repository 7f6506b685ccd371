"""The torch-free runtime: `runtime.contract` (the exported directory's format, written once),
`runtime.predictor.Predictor` (numpy + onnxruntime + tokenizers), `runtime.hostinfo` (CPU and versions)
and `runtime.serve` (FastAPI + uvicorn). Importing this package must never pull in torch or transformers."""
