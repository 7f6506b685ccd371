"""Micro-benchmark: forms of a small left factor product W (m x k) @ X (N, k, p), 1 thread (speed_followup.md)."""
import numpy as np
import time
from runtime.predictor import create_session
from onnx import helper, TensorProto, numpy_helper
def sess(nodes, inits, shape_out):
    g = helper.make_graph(nodes, 'g', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [128, K, P])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, None)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 20)])
    return create_session(m.SerializeToString(), threads=1)
res = {}
for K, M, P in [(2, 16, 192), (16, 2, 192)]:
    w = np.random.randn(M, K).astype(np.float32)
    x = np.random.randn(128, K, P).astype(np.float32)
    s_mm = sess([helper.make_node('MatMul', ['w', 'x'], ['y'])], [numpy_helper.from_array(w, 'w')], None)
    # transposed form (old): Transpose -> MatMul(W^T) -> Transpose
    s_tt = sess([helper.make_node('Transpose', ['x'], ['t'], perm=[0, 2, 1]), helper.make_node('MatMul', ['t', 'wt'], ['u']),
                 helper.make_node('Transpose', ['u'], ['y'], perm=[0, 2, 1])], [numpy_helper.from_array(w.T.copy(), 'wt')], None)
    # broadcast multiply + reduce: (1,M,K,1) * (N,1,K,P) -> sum over K
    s_mr = sess([helper.make_node('Unsqueeze', ['x', 'ax'], ['x4']), helper.make_node('Mul', ['x4', 'w4'], ['p']),
                 helper.make_node('ReduceSum', ['p', 'rax'], ['y'], keepdims=0)],
                [numpy_helper.from_array(np.array([1], np.int64), 'ax'), numpy_helper.from_array(w[None, :, :, None], 'w4'),
                 numpy_helper.from_array(np.array([2], np.int64), 'rax')], None)
    # Einsum
    s_es = sess([helper.make_node('Einsum', ['w', 'x'], ['y'], equation='mk,nkp->nmp')], [numpy_helper.from_array(w, 'w')], None)
    ref = s_mm.run(None, {'x': x})[0]
    for name, s in [('matmul-left', s_mm), ('transpose-matmul-transpose', s_tt), ('mul-reducesum', s_mr), ('einsum', s_es)]:
        out = s.run(None, {'x': x})[0]
        assert np.allclose(out, ref, atol=1e-4), name
        for _ in range(20):
            s.run(None, {'x': x})
        ts = []
        for _ in range(200):
            t0 = time.perf_counter()
            s.run(None, {'x': x})
            ts.append(time.perf_counter() - t0)
        print(f"K={K} M={M} P={P} {name:28s} p50 {np.median(ts)*1e3:.3f} ms  min {min(ts)*1e3:.3f}")
