"""The benchmark's own arithmetic (benchmarks/bench_bn.py): the HLO pass counter and the paired
quartiles. The timings themselves are not tested (they are benchmarks, not tests)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_bn  # noqa: E402

# Counted by hand: fusion.1 reads a and b (2 reads) and writes two full-size tensors and a
# 6-vector; the reduce reads the first tensor (1); add reads the second and a (2) and writes one;
# fusion.2 reads add (1) and only slices a row of a (no pass), and writes one. The tuple, its
# elements, parameters and constants move nothing.
_HLO = """
HloModule m

%slicer (p0: f32[4,6], p1: f32[4,6]) -> f32[4,6] {
  %p0 = f32[4,6]{1,0} parameter(0)
  %p1 = f32[4,6]{1,0} parameter(1)
  %row = f32[1,6]{1,0} slice(%p1), slice={[0:1], [0:6]}
  %wide = f32[4,6]{1,0} broadcast(%row), dimensions={0,1}
  ROOT %product = f32[4,6]{1,0} multiply(%p0, %wide)
}

ENTRY %main (a: f32[4,6], b: f32[4,6]) -> (f32[4,6], f32[6]) {
  %a = f32[4,6]{1,0} parameter(0)
  %b = f32[4,6]{1,0} parameter(1)
  %zero = f32[] constant(0)
  %fusion.1 = (f32[4,6]{1,0}, f32[4,6]{1,0}, f32[6]{0}) fusion(%a, %b), kind=kLoop, calls=%f
  %gte.0 = f32[4,6]{1,0} get-tuple-element(%fusion.1), index=0
  %gte.1 = f32[4,6]{1,0} get-tuple-element(%fusion.1), index=1
  %reduce = f32[6]{0} reduce(%gte.0, %zero), dimensions={0}, to_apply=%sum
  %add = f32[4,6]{1,0} add(%gte.1, %a)
  %fusion.2 = f32[4,6]{1,0} fusion(%add, %a), kind=kLoop, calls=%slicer
  ROOT %tuple = (f32[4,6]{1,0}, f32[6]{0}) tuple(%fusion.2, %reduce)
}
"""


def test_memory_passes_counts_a_hand_counted_module():
    assert bench_bn._memory_passes(_HLO, 24) == (6, 4)
    # 6-vectors: the fusion's third output and the reduce's; nothing reads one.
    assert bench_bn._memory_passes(_HLO, 6) == (0, 2)


@pytest.mark.parametrize("fn, expected", [
    (lambda x, y: x * 2.0 + 1.0, (1, 1)),  # one fused loop: read x, write the result
    (lambda x, y: x * y + y, (2, 1)),      # one fused loop over both inputs
    (lambda x, y: x * y[:1], (1, 1)),      # y's first row only: no pass over y
])
def test_memory_passes_on_what_xla_compiles(fn, expected):
    tf = pytest.importorskip("tensorflow")
    x = tf.random.stateless_normal((32, 48), seed=(1, 2))
    y = tf.random.stateless_normal((32, 48), seed=(3, 4))
    compiled = tf.function(fn, jit_compile=True)
    hlo = compiled.experimental_get_compiler_ir(x, y)(stage="optimized_hlo")
    assert bench_bn._memory_passes(hlo, 32 * 48) == expected


def test_paired_quartiles_match_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(1, 2, 15), rng.uniform(1, 2, 15)
    q1, median, q3 = bench_bn._paired_quartiles({"a": list(a), "b": list(b)}, "a", "b")
    expected = np.percentile(a / b, [25, 50, 75], method="weibull")  # statistics' "exclusive"
    np.testing.assert_allclose([q1, median, q3], expected, rtol=1e-12)


def test_best_time_rotates_the_order_and_keeps_every_run():
    order = []
    fns = {name: (lambda name=name: order.append(name) or np.zeros(1)) for name in "abc"}
    best, samples, steps = bench_bn._best_time(fns, steps=2, repeats=3)
    rounds = [order[3 + 6 * r: 3 + 6 * (r + 1): 2] for r in range(3)]  # after the warm-up calls
    assert rounds == [list("abc"), list("bca"), list("cab")]
    assert steps == 2 and all(len(s) == 3 for s in samples.values())
    assert all(best[name] == min(samples[name]) for name in fns)


def test_convolutions_only_keeps_every_convolution_and_its_weights():
    keras = pytest.importorskip("keras")

    model = bench_bn._conv_bn_stack(3, 8, (6, 6, 3), blocks=2)
    bare = bench_bn._convolutions_only(model)
    assert [type(layer) for layer in bare.layers[1:]] == [keras.layers.Conv2D] * 2
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 3)).astype("float32")
    expected = x  # the NumPy oracle: each 3x3 "same" convolution, one after the other
    for conv in [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]:
        w = np.asarray(conv.kernel)
        padded = np.pad(expected, [(0, 0), (1, 1), (1, 1), (0, 0)])
        expected = sum(padded[:, i:i + 6, j:j + 6] @ w[i, j] for i in range(3) for j in range(3))
    np.testing.assert_allclose(np.asarray(bare(x)), expected, rtol=1e-5, atol=1e-5)


def test_replica_benchmark_variants_train_alike():
    """The replicas benchmark's variants do the same work: the one-run loop, the Keras fit loop
    (``sgd_fit``'s) and replica 0 of the batched model train the same network on the same
    mini-batches to the same weights."""
    pytest.importorskip("keras")
    tf = pytest.importorskip("tensorflow")
    from course_lib import experiments, replicas

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(200, 784)).astype("float32"))
    y = tf.constant(rng.integers(0, 10, 200).astype("int32"))
    idx = tf.constant(experiments.minibatch_indices(200, 10, 20, seed=0), tf.int32)
    build = dict(hidden_layers=1, units=8)
    one, fit = (experiments.build_mlp(True, seed=0, **build) for _ in range(2))
    stacked = replicas.build_mlp_replicas(True, seeds=[0, 1], **build)
    replicas._train_chunk_fn(one, x, y, 0.5, 20, False)(idx)
    bench_bn._keras_fit_step(fit, x, y, idx)()
    both = tf.constant(replicas.replica_batches(200, 10, 20, [0, 1]), tf.int32)
    replicas._train_chunk_fn(stacked, x, y, 0.5, 20, False)(both)
    replica = replicas.extract_replica(stacked, 0)
    for a, b, c in zip(one.get_weights(), fit.get_weights(), replica.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)
    start = experiments.build_mlp(True, seed=0, **build).get_weights()[0]
    assert not np.allclose(one.get_weights()[0], start)  # it did train
