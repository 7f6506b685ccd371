"""The factor shapes of one Kronecker layer (torch-free, so that configs and the CLI can name them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KronShape:
    """Factor shapes of one Kronecker layer: W (m1*m2 x n1*n2) ~= sum_rank A (m1 x n1) ⊗ B (m2 x n2)."""

    m1: int
    n1: int
    m2: int
    n2: int
    rank: int = 1

    def __post_init__(self):
        for name in ("m1", "n1", "m2", "n2", "rank"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"KronShape.{name} must be a positive integer, got {value!r}")

    @property
    def out_features(self) -> int:
        return self.m1 * self.m2

    @property
    def in_features(self) -> int:
        return self.n1 * self.n2

    @property
    def params(self) -> int:
        return self.rank * (self.m1 * self.n1 + self.m2 * self.n2)

    @property
    def a_first(self) -> bool:
        """True when contracting with A first costs fewer multiply-adds than with B first.

        On a tie the factor with the longer inner dimension goes first. When that is B, its product is one
        flat GEMM over the input's contiguous axis, and the small A, second, sits between two axis swaps of
        this layer's own that an exporter turns into one copy-free left-hand product (A first would put the
        first swap on the layer's input, which Q, K and V share).
        """
        if self.macs_a_first != self.macs_b_first:
            return self.macs_a_first < self.macs_b_first
        return self.n1 > self.n2

    @property
    def macs_a_first(self) -> int:
        # (n2, n1) @ A^T -> (n2, r*m1) ... then (m1, r*n2) @ B^T -> (m1, m2)
        return self.rank * (self.n2 * self.n1 * self.m1 + self.m1 * self.n2 * self.m2)

    @property
    def macs_b_first(self) -> int:
        # (n1, n2) @ B^T -> (n1, r*m2) ... then (m2, r*n1) @ A^T -> (m2, m1)
        return self.rank * (self.n1 * self.n2 * self.m2 + self.m2 * self.n1 * self.m1)

    @property
    def macs(self) -> int:
        """Multiply-adds per input vector (one token) in the cheaper order."""
        return min(self.macs_a_first, self.macs_b_first)

    def as_list(self) -> list[int]:
        return [self.m1, self.n1, self.m2, self.n2, self.rank]

    @classmethod
    def from_list(cls, values) -> "KronShape":
        return cls(*[int(v) for v in values])

    def __str__(self) -> str:
        rank = f" x{self.rank}" if self.rank > 1 else ""
        return f"A {self.m1}x{self.n1} ⊗ B {self.m2}x{self.n2}{rank}"
