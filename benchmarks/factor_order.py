"""Does the order of a Kronecker layer's two factors change how well it fits a real weight?

    python benchmarks/factor_order.py [--teacher builtin:minilm] [--json out.json]

For every linear map of the teacher's encoder: the relative error ||W - A⊗B||_F / ||W||_F of the nearest
Kronecker product with the small factor first (A small, the presets' order since they export without axis
swaps) and with the same two factor sizes swapped (the order of the paper's Table 1 for attention). The sizes
are the kb8 and kb21 shapes with every big-factor dimension scaled to the teacher's width (a BERT_BASE width
of 768 gives the presets' own shapes).
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch

from kronedge.kron_shape import KronShape
from kronedge.layer_roles import layer_role
from kronedge.layers import kron_dense, nearest_kronecker


def preset_factors(name: str) -> dict:
    """(small m x n, big m x n) per role of a preset (A is the small factor in both) at BERT_BASE's width."""
    from kronedge.kron_config import KronConfig

    return {role: ((s.m1, s.n1), (s.m2, s.n2)) for role, s in KronConfig.preset(name).role_shapes.items()}


def relative_error(weight: torch.Tensor, shape: KronShape) -> float:
    a, b = nearest_kronecker(weight, shape)
    return float((weight - kron_dense(a, b)).norm() / weight.norm())


def both_orders(weight: torch.Tensor, small: tuple[int, int], big: tuple[int, int]) -> tuple[float, float]:
    """(error with the small factor first, error with it second) for one weight."""
    return (relative_error(weight, KronShape(small[0], small[1], big[0], big[1])),
            relative_error(weight, KronShape(big[0], big[1], small[0], small[1])))


def scaled(factors: dict, width: int) -> dict:
    return {role: (small, (big[0] * width // 768, big[1] * width // 768)) for role, (small, big) in factors.items()}


def main() -> None:
    from kronedge.teachers import load_teacher

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="builtin:minilm")
    parser.add_argument("--json")
    args = parser.parse_args()
    model = load_teacher(args.teacher, head="base", num_labels=None).model
    width = model.config.hidden_size
    rows = []
    for preset in ("kb8", "kb21"):
        for role, (small, big) in scaled(preset_factors(preset), width).items():
            errors = [both_orders(module.weight.detach().float(), small, big)
                      for name, module in model.named_modules()
                      if isinstance(module, torch.nn.Linear) and name.startswith("encoder.")
                      and layer_role(name) == role]
            first, second = zip(*errors)
            rows.append({"preset": preset, "role": role, "small": small, "big": big, "layers": len(errors),
                         "small_first": statistics.mean(first), "small_second": statistics.mean(second),
                         "small_first_lower_in": sum(f < s for f, s in errors)})
    print(f"teacher {args.teacher} (width {width}); mean relative error of the nearest Kronecker product")
    print("| preset shapes | role | small factor | big factor | layers | small first | small second | small first lower in |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['role']} | {r['small'][0]}x{r['small'][1]} | {r['big'][0]}x{r['big'][1]} | "
              f"{r['layers']} | {r['small_first']:.4f} | {r['small_second']:.4f} | {r['small_first_lower_in']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"teacher": args.teacher, "width": width, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
