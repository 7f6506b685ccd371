"""Kronecker layers against dense references, and the optimality of the nearest-Kronecker init."""

import pytest
import torch
from torch import nn

from kronedge.layers import (KronShape, KroneckerEmbedding, KroneckerLinear, kron_dense,
                             kronecker_singular_values, nearest_kronecker)

# (m1, n1, m2, n2): square, rectangular, odd and prime sizes, both contraction orders.
SHAPES = [(4, 4, 8, 8), (3, 5, 7, 2), (2, 16, 24, 12), (16, 2, 12, 24), (1, 7, 5, 1), (13, 1, 1, 11)]


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("dims", SHAPES)
def test_forward_matches_torch_kron(dims, rank):
    shape = KronShape(*dims, rank=min(rank, dims[0] * dims[1], dims[2] * dims[3]))
    torch.manual_seed(0)
    layer = KroneckerLinear(shape)
    nn.init.normal_(layer.bias)
    x = torch.randn(2, 5, shape.in_features)
    dense = kron_dense(layer.a, layer.b)
    expected = x @ dense.T + layer.bias
    assert torch.allclose(layer(x), expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(layer.to_dense(), dense)


def test_a_cost_tie_contracts_the_longer_factor_first():
    # kb8's attention sizes in both orders: B 384x384 first (no swap on the shared input), or A 384x384 first
    assert not KronShape(2, 2, 384, 384).a_first and KronShape(384, 384, 2, 2).a_first
    assert KronShape(2, 2, 384, 384).macs_a_first == KronShape(2, 2, 384, 384).macs_b_first


def test_both_contraction_orders_agree():
    torch.manual_seed(0)
    a_first = KronShape(2, 16, 24, 12)
    b_first = KronShape(16, 2, 12, 24)
    assert a_first.a_first and not b_first.a_first
    for shape in (a_first, b_first):
        layer = KroneckerLinear(shape, bias=False)
        x = torch.randn(7, shape.in_features)
        assert torch.allclose(layer(x), x @ layer.to_dense().T, atol=1e-5)


def test_forward_never_builds_dense_weight(monkeypatch):
    layer = KroneckerLinear(KronShape(8, 8, 8, 8))
    monkeypatch.setattr(torch, "kron", lambda *a, **k: pytest.fail("forward called torch.kron"))
    layer(torch.randn(3, 64))


@pytest.mark.parametrize("rank", [1, 2, 4])
def test_nearest_kronecker_error_equals_svd_tail(rank):
    torch.manual_seed(0)
    shape = KronShape(6, 4, 5, 3, rank)
    w = torch.randn(shape.out_features, shape.in_features, dtype=torch.float64)
    a, b = nearest_kronecker(w, shape)
    error = torch.linalg.norm(w - kron_dense(a, b)) ** 2
    sigma = kronecker_singular_values(w, shape)
    assert torch.allclose(error, (sigma[rank:] ** 2).sum(), rtol=1e-9)


def test_nearest_kronecker_beats_random_perturbations():
    torch.manual_seed(0)
    shape = KronShape(6, 4, 5, 3, 2)
    w = torch.randn(shape.out_features, shape.in_features, dtype=torch.float64)
    a, b = nearest_kronecker(w, shape)
    best = torch.linalg.norm(w - kron_dense(a, b))
    for _ in range(20):
        a2 = a + 1e-2 * torch.randn_like(a)
        b2 = b + 1e-2 * torch.randn_like(b)
        assert torch.linalg.norm(w - kron_dense(a2, b2)) > best


def test_nearest_kronecker_recovers_exact_product():
    torch.manual_seed(0)
    a, b = torch.randn(1, 3, 4), torch.randn(1, 5, 2)
    w = torch.kron(a[0], b[0])
    a2, b2 = nearest_kronecker(w, KronShape(3, 4, 5, 2))
    assert torch.allclose(kron_dense(a2, b2), w, atol=1e-5)


def test_full_rank_sum_reproduces_any_dense_layer():
    torch.manual_seed(0)
    dense = nn.Linear(12, 10)
    shape = KronShape(2, 3, 5, 4, rank=6)  # rank = min(m1*n1, m2*n2): exact
    layer = KroneckerLinear.from_dense(dense, shape)
    x = torch.randn(4, 12)
    assert torch.allclose(layer(x), dense(x), atol=1e-5)


def test_from_dense_rejects_mismatched_shape():
    with pytest.raises(ValueError, match="implies a 6x8 weight"):
        KroneckerLinear.from_dense(nn.Linear(8, 7), KronShape(2, 2, 3, 4))


def test_rank_above_maximum_is_rejected():
    with pytest.raises(ValueError, match="exceeds the largest useful rank"):
        nearest_kronecker(torch.randn(6, 8), KronShape(2, 2, 3, 4, rank=5))


@pytest.mark.parametrize("rank", [1, 2])
def test_embedding_lookup_equals_dense_table(rank):
    torch.manual_seed(0)
    emb = KroneckerEmbedding(50, 12, k=4, rank=rank)
    ids = torch.randint(0, 50, (3, 7))
    assert torch.allclose(emb(ids), emb.to_dense()[ids], atol=1e-6)
    assert emb.to_dense().shape == (50, 12)


def test_embedding_from_dense_is_the_nearest_table():
    torch.manual_seed(0)
    dense = nn.Embedding(40, 8)
    emb = KroneckerEmbedding.from_dense(dense, k=8, rank=8)  # rank = k: exact
    ids = torch.arange(40)
    assert torch.allclose(emb(ids), dense(ids), atol=1e-5)
    shape = KronShape(40, 2, 1, 4, 1)
    a, b = nearest_kronecker(dense.weight, shape)
    rank1 = KroneckerEmbedding.from_dense(dense, k=4)
    assert torch.allclose(rank1.to_dense(), kron_dense(a, b), atol=1e-6)


def test_embedding_width_must_divide():
    with pytest.raises(ValueError, match="not divisible by k=5"):
        KroneckerEmbedding(10, 12, k=5)


def test_shape_counts():
    shape = KronShape(48, 384, 16, 2)  # KroneckerBERT21 attention in Table 1's order
    assert shape.params == 48 * 384 + 16 * 2
    assert shape.macs == min(shape.macs_a_first, shape.macs_b_first) < 768 * 768
    with pytest.raises(ValueError, match="positive integer"):
        KronShape(0, 1, 1, 1)
