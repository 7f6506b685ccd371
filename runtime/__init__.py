"""The torch-free runtime: `runtime.predictor.Predictor` (numpy + onnxruntime + tokenizers) and
`runtime.serve` (FastAPI + uvicorn). Importing this package must never pull in torch or transformers."""
