"""Starting error of Q/K/V factors that share their input side, against separate SVD corners (no training).

For rank r per matrix, the mean relative squared error ||W - W_hat||^2 / ||W||^2 over the teacher's 18 Q/K/V
matrices: separate rank-r truncated SVDs, a shared input-side factor per layer (the stacked [W_q; W_k; W_v] at the
same parameters), and one shared across all layers. The ffn_neurons.md pilot of shared bases starts from these fits.

    python benchmarks/shared_basis_error.py --teacher /path/to/fine-tuned-teacher
"""

from __future__ import annotations

import argparse

import torch


def relative_errors(stacked: torch.Tensor, rank: int, rows: int) -> list[float]:
    """Per (rows x n) block of ``stacked``, its relative squared error under the stack's rank-``rank`` SVD."""
    u, s, vh = torch.linalg.svd(stacked, full_matrices=False)
    fit = (u[:, :rank] * s[:rank]) @ vh[:rank]
    return [float(((stacked[i:i + rows] - fit[i:i + rows]) ** 2).sum() / (stacked[i:i + rows] ** 2).sum())
            for i in range(0, stacked.shape[0], rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="builtin:minilm")
    parser.add_argument("--ranks", type=int, nargs="+", default=[6, 12, 24])
    args = parser.parse_args()
    from kronedge.teachers import load_teacher

    layers = load_teacher(args.teacher, head="base").model.encoder.layer
    qkv = [[getattr(l.attention.self, n).weight.detach().double() for n in ("query", "key", "value")] for l in layers]
    d = qkv[0][0].shape[0]
    for r in args.ranks:
        separate = [e for mats in qkv for w in mats for e in relative_errors(w, r, d)]
        per_layer_rank = r * 3 * 2 * d // (d + 3 * d)
        per_layer = [e for mats in qkv for e in relative_errors(torch.cat(mats), per_layer_rank, d)]
        shared_rank = r * 3 * len(qkv) * 2 * d // (d + 3 * len(qkv) * d)
        shared = relative_errors(torch.cat([w for mats in qkv for w in mats]), shared_rank, d)
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        print(f"r={r}: separate {mean(separate):.4f}; shared per layer R={per_layer_rank} {mean(per_layer):.4f} "
              f"(max {max(per_layer):.4f}); shared across layers R={shared_rank} {mean(shared):.4f} "
              f"(max {max(shared):.4f})")


if __name__ == "__main__":
    main()
