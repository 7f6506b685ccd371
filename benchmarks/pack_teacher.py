"""Copy a fine-tuned teacher directory with its weights in fp16 (half the bytes), or back to fp32.

A GPU machine that takes at most 64 MiB of files cannot take MiniLM's 90 MB of fp32 weights; the
fp16 copy (45 MB) can, and is restored to fp32 there before use. fp16 keeps 11 significant bits,
far more than the dev-set accuracy can see; the teacher is re-scored after the round trip.

    python benchmarks/pack_teacher.py pack runs/teachers/sst2-0ab9747d3684 .gpu/teacher
    python benchmarks/pack_teacher.py unpack .gpu/teacher runs/teachers/sst2-0ab9747d3684
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def convert(src: Path, dst: Path, dtype: torch.dtype) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name != "model.safetensors":
            shutil.copy2(f, dst / f.name)
    tensors = load_file(src / "model.safetensors")
    out = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    tmp = dst / "model.safetensors.tmp"
    save_file(out, tmp, metadata={"format": "pt"})
    tmp.replace(dst / "model.safetensors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["pack", "unpack"])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    args = parser.parse_args()
    convert(args.src, args.dst, torch.float16 if args.action == "pack" else torch.float32)
    print(f"{args.action}: {args.src} -> {args.dst}")


if __name__ == "__main__":
    main()
