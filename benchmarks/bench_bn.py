"""Benchmarks for course_lib's BatchNormalization: `make bench` runs this. Not a test.

Four measurements, each printed as a ratio and written to ``benchmarks/results.json`` (the
book's benchmark page is generated from that file, never typed by hand):

1. A BN training step (forward, backward, moving-statistics update) for shapes (256, 512)
   and (64, 32, 32, 64): course_lib vs ``keras.layers.BatchNormalization`` vs
   ``tf.compat.v1.nn.fused_batch_norm``, each in a ``tf.function`` with and without
   ``jit_compile``. Goals: <= 1.0x Keras, <= 1.3x the fused kernel.
2. Inference of two conv-BN-ReLU stacks (3x3 and 1x1 convolutions) before and after
   ``fold_batchnorm``, with and without XLA. Goal: >= 1.2x. Also timed: the same convolutions with
   nothing between them, the ceiling of what folding can save.
3. Memory of a training step of a small CNN with and without BN (JAX backend, in a
   subprocess, exact bytes rather than a noisy process-RSS reading): the peak XLA's compiled
   step needs (it fuses BN into its neighbours), and the activations saved between forward
   and backward when nothing is fused (what an eager framework keeps alive).
4. K = 5 seeds of the Figure 1 MLP (with BN, batch 60) trained as one batched model
   (``course_lib.replicas``) vs one run vs 5 runs one after the other: time per SGD step, the
   ratios batched / one run and sequential / batched, the matmul FLOPs per step and the FLOP
   rate achieved, next to a large matmul's rate (what the cores can do at best).
   ``--replicas-only`` runs just this one and updates its entry of the results file.

Timing: each variant is warmed up (traced/compiled) first; then ``--repeats`` rounds, each
running every variant for at least ``--steps`` steps and at least ``--round-seconds`` (so that
a sub-millisecond step is not timed over a few milliseconds). Variants are interleaved
round-robin, in an order that rotates each round, so that machine noise hits all of them alike.
Times are the best round's; ratios are the median over the rounds of the ratio within a round
(paired, so that a slow spell hits both sides), with the quartiles of those ratios as the
spread. Run on an otherwise idle machine.

Under XLA the training step is also read as the compiler's optimized HLO: the number of passes
over the activations (reads and writes of a tensor of the input's size) that each variant's
compiled program makes. That count does not depend on machine noise, and says what the timing
can be expected to show.
"""

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

RESULTS = Path(__file__).with_name("results.json")
SHAPES = [(256, 512), (64, 32, 32, 64)]
MOMENTUM, EPSILON = 0.99, 1e-3


def _best_time(fns, steps, repeats, round_seconds=0.0):
    """Seconds per step for each of ``fns`` (dict name -> zero-arg callable): the best of
    ``repeats`` runs of ``steps`` steps, as ``timeit`` reports. Other processes on the machine
    can only add time to a run, so the minimum is the least noisy estimate. ``steps`` is raised
    so that a run of the slowest variant lasts ``round_seconds``. The order of the variants
    rotates from round to round, so that none always runs first. Also returns every run's time,
    for paired ratios, and the number of steps per run."""
    slowest = 0.0
    for fn in fns.values():
        start = time.perf_counter()
        _block(fn())
        slowest = max(slowest, time.perf_counter() - start)
    steps = max(steps, math.ceil(round_seconds / max(slowest, 1e-9)))
    names = list(fns)
    samples = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            for _ in range(steps):
                out = fns[name]()
            _block(out)
            samples[name].append((time.perf_counter() - start) / steps)
    return {name: min(s) for name, s in samples.items()}, samples, steps


def _paired_quartiles(samples, a, b):
    """First quartile, median and third quartile over the rounds of ``a``'s time / ``b``'s time
    in the same round: the runs of a round are adjacent in time, so a slow spell of the machine
    hits both."""
    ratios = [x / y for x, y in zip(samples[a], samples[b])]
    q1, median, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return q1, median, q3


_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%?([\w.\-]+) = (\(.*?\)|\S+) ([\w\-]+)\((.*?)\)")
_NO_DATA = ("parameter", "constant", "bitcast", "tuple", "get-tuple-element")


def _memory_passes(hlo, size):
    """Passes over the activations in XLA's optimized HLO: ``(reads, writes)`` of tensors with
    ``size`` elements by the instructions of the entry computation. Each fusion is one loop, so
    a tensor it reads is read once and one it writes is written once; a tensor a fusion only
    slices (a few elements of it), tuples, tuple elements, parameters, constants and bitcasts
    move no data."""
    computations = dict(re.findall(r"\n(?:ENTRY )?%?([\w.\-]+) \([^\n]*\{\n(.*?)\n\}", hlo, re.S))
    entry = re.search(r"\nENTRY %?([\w.\-]+) ", hlo).group(1)
    sizes, reads, writes = {}, 0, 0
    for line in computations[entry].splitlines():
        m = _INSTRUCTION.match(line)
        if not m:
            continue
        name, shape, op, operands = m.groups()
        outputs = [math.prod(int(d) for d in dims.split(",") if d)
                   for dims in re.findall(r"\w+\[([\d,]*)\]", shape)]
        operands = re.findall(r"%([\w.\-]+)", operands)
        if op == "get-tuple-element":
            outputs = [sizes[operands[0]][int(re.search(r"index=(\d+)", line).group(1))]]
        sizes[name] = outputs
        if op in _NO_DATA:
            continue
        called = re.search(r"calls=%?([\w.\-]+)", line)
        sliced = _sliced_parameters(computations.get(called.group(1), "")) if called else set()
        reads += sum(sizes.get(a, [0]) == [size] and i not in sliced
                     for i, a in enumerate(operands))
        writes += outputs.count(size)
    return reads, writes


def _xla_passes(fns, size, *args):
    """``{name: passes}`` over tensors of ``size`` elements in what XLA compiled for each
    ``jit_compile`` function of ``fns``, called with ``args``; and the same as a printed note."""
    passes = {name: sum(_memory_passes(fn.experimental_get_compiler_ir(*args)(
        stage="optimized_hlo"), size)) for name, fn in fns.items()}
    note = " | XLA passes over the activations: " + ", ".join(f"{k} {v}" for k, v in passes.items())
    return passes, note


def _sliced_parameters(body):
    """Indices of a fused computation's parameters that it only slices."""
    params = {m[0]: int(m[1]) for m in re.findall(r"%([\w.\-]+) = \S+ parameter\((\d+)\)", body)}
    users = {name: set() for name in params}
    for line in body.splitlines():
        m = _INSTRUCTION.match(line)
        if m:
            for operand in re.findall(r"%([\w.\-]+)", m.group(4)):
                if operand in users:
                    users[operand].add(m.group(3))
    only_sliced = {"slice", "dynamic-slice"}
    return {params[name] for name, ops in users.items() if ops and ops <= only_sliced}


def _block(out):
    import numpy as np

    np.asarray(out[0] if isinstance(out, (tuple, list)) else out)


def _layer_step(layer, x, dy, jit):
    import tensorflow as tf

    layer(x, training=True)  # build

    @tf.function(jit_compile=jit)
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * dy)
        return tape.gradient(loss, [x, layer.gamma, layer.beta])

    return step


def _fused_step(x, dy, jit):
    import tensorflow as tf

    c = x.shape[-1]
    x4 = tf.reshape(x, (x.shape[0], 1, 1, c)) if len(x.shape) == 2 else x
    dy4 = tf.reshape(dy, x4.shape)
    gamma, beta = tf.Variable(tf.ones(c)), tf.Variable(tf.zeros(c))
    mean, var = tf.Variable(tf.zeros(c)), tf.Variable(tf.ones(c))

    @tf.function(jit_compile=jit)
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x4)
            y, m, v = tf.compat.v1.nn.fused_batch_norm(
                x4, gamma, beta, mean=mean, variance=var, epsilon=EPSILON,
                is_training=True, exponential_avg_factor=1.0 - MOMENTUM,
            )
            loss = tf.reduce_sum(y * dy4)
        mean.assign(m)
        var.assign(v)
        return tape.gradient(loss, [x4, gamma, beta])

    return step


def bench_training_step(steps, repeats, round_seconds):
    import keras
    import tensorflow as tf

    import course_lib

    rows = []
    for shape in SHAPES:
        x = tf.random.stateless_normal(shape, seed=(1, 2))
        dy = tf.random.stateless_normal(shape, seed=(3, 4))
        for jit in (False, True):
            fns = {
                "course_lib": _layer_step(course_lib.BatchNormalization(), x, dy, jit),
                "keras": _layer_step(keras.layers.BatchNormalization(), x, dy, jit),
                "fused": _fused_step(x, dy, jit),
            }
            for fn in fns.values():
                _block(fn())  # trace and compile outside the timing
            t, samples, run_steps = _best_time(fns, steps, repeats, round_seconds)
            keras_q = _paired_quartiles(samples, "course_lib", "keras")
            fused_q = _paired_quartiles(samples, "course_lib", "fused")
            row = {
                "shape": list(shape),
                "jit_compile": jit,
                "steps_per_round": run_steps,
                "rounds": repeats,
                "ms": {k: v * 1e3 for k, v in t.items()},
                "vs_keras": keras_q[1],
                "vs_fused": fused_q[1],
                "vs_keras_quartiles": [keras_q[0], keras_q[2]],
                "vs_fused_quartiles": [fused_q[0], fused_q[2]],
            }
            passes = ""
            if jit:  # what XLA compiled: passes over the activations (reads + writes)
                row["xla_passes"], passes = _xla_passes(fns, math.prod(shape))
            rows.append(row)
            print(
                f"train step {str(shape):>18} jit={jit!s:5}  course_lib {row['ms']['course_lib']:7.3f} ms"
                f"  keras {row['ms']['keras']:7.3f} ms  fused {row['ms']['fused']:7.3f} ms"
                f"  -> {row['vs_keras']:.2f}x keras [{keras_q[0]:.2f}, {keras_q[2]:.2f}],"
                f" {row['vs_fused']:.2f}x fused [{fused_q[0]:.2f}, {fused_q[2]:.2f}]{passes}",
                flush=True,
            )
    return rows


# Two conv-BN-ReLU stacks: 3x3 convolutions (the convolution dominates the time) and 1x1
# "pointwise" ones, as in MobileNet's blocks (BN's pass over the activations is a large share).
FOLD_STACKS = [
    {"kernel": 3, "channels": 64, "input": (32, 32, 16), "batch": 32},
    {"kernel": 1, "channels": 64, "input": (56, 56, 64), "batch": 16},
]


def _conv_bn_stack(kernel, channels, input_shape, blocks=6):
    import keras
    import numpy as np

    import course_lib

    keras.utils.set_random_seed(0)
    inputs = keras.Input(input_shape)
    h = inputs
    for _ in range(blocks):
        h = keras.layers.Conv2D(channels, kernel, padding="same", use_bias=False)(h)
        h = course_lib.BatchNormalization()(h)
        h = keras.layers.ReLU()(h)
    model = keras.Model(inputs, h)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # non-trivial statistics, as after training
        if isinstance(layer, course_lib.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(size=c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=c).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, size=c).astype("float32"))
            layer.beta.assign(rng.normal(size=c).astype("float32"))
    return model


def _convolutions_only(model):
    """The convolutions of a chain such as ``_conv_bn_stack``'s, same weights, with nothing
    between them: no BN, no ReLU. Folding keeps every convolution and can at best make the rest
    free, so original / this is the ceiling of the speed-up folding can give. (A model with only
    its BN layers left out would not do: TensorFlow's graph optimizer fuses a convolution, a bias
    add and a ReLU into one kernel, but not a convolution without a bias and a ReLU, so the folded
    model can run faster than that one.)"""
    import keras

    h = inputs = keras.Input(model.input_shape[1:])
    for layer in model.layers[1:]:
        if not isinstance(layer, keras.layers.Conv2D):
            continue
        clone = type(layer).from_config(layer.get_config())
        h = clone(h)
        clone.set_weights(layer.get_weights())
    return keras.Model(inputs, h)


def bench_folding(steps, repeats, round_seconds):
    import numpy as np
    import tensorflow as tf

    from course_lib import fold_batchnorm

    rows = []
    for stack in FOLD_STACKS:
        k, c, (h, w, cin), n = stack["kernel"], stack["channels"], stack["input"], stack["batch"]
        model = _conv_bn_stack(k, c, stack["input"])
        folded = fold_batchnorm(model)
        bare = _convolutions_only(model)
        x = tf.random.stateless_normal((n, h, w, cin), seed=(5, 6))
        err = float(np.max(np.abs(np.asarray(model(x, training=False)) - np.asarray(folded(x)))))
        for jit in (False, True):
            fns = {
                "original": tf.function(model, jit_compile=jit),
                "folded": tf.function(folded, jit_compile=jit),
                "convolutions_only": tf.function(bare, jit_compile=jit),
            }
            for fn in fns.values():
                _block(fn(x))
            calls = {name: (lambda fn=fn: fn(x)) for name, fn in fns.items()}
            t, samples, run_steps = _best_time(calls, steps, repeats, round_seconds)
            q1, median, q3 = _paired_quartiles(samples, "original", "folded")
            c1, ceiling, c3 = _paired_quartiles(samples, "original", "convolutions_only")
            row = {
                "model": f"6 x (Conv2D {k}x{k}, {c} ch -> BN -> ReLU), batch {n} x {h} x {w} x {cin}",
                "jit_compile": jit,
                "steps_per_round": run_steps,
                "rounds": repeats,
                "ms": {name: v * 1e3 for name, v in t.items()},
                "speedup": median,
                "speedup_quartiles": [q1, q3],
                "ceiling": ceiling,
                "ceiling_quartiles": [c1, c3],
                "max_abs_diff": err,
            }
            passes = ""
            if jit:  # passes over the blocks' activations in what XLA compiled
                row["xla_passes"], passes = _xla_passes(fns, n * h * w * c, x)
            rows.append(row)
            print(
                f"fold_batchnorm {k}x{k} conv, jit={jit!s:5}: original {row['ms']['original']:.2f} ms,"
                f" folded {row['ms']['folded']:.2f} ms -> {median:.2f}x faster [{q1:.2f}, {q3:.2f}]"
                f" (max |diff| {err:.1e}); ceiling, convolutions only"
                f" {row['ms']['convolutions_only']:.2f} ms: {ceiling:.2f}x"
                f" [{c1:.2f}, {c3:.2f}]{passes}",
                flush=True,
            )
    return rows


_MEMORY_SCRIPT = r"""
import json, os
os.environ["KERAS_BACKEND"] = "jax"
import jax, jax.numpy as jnp, keras
import course_lib

def cnn(bn):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((32, 32, 3))]
    for c in (32, 64, 64, 128):
        layers.append(keras.layers.Conv2D(c, 3, padding="same", use_bias=not bn))
        if bn:
            layers.append(course_lib.BatchNormalization())
        layers.append(keras.layers.ReLU())
    layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)]
    return keras.Sequential(layers)

out = {}
x = jnp.ones((64, 32, 32, 3))
y = jnp.zeros((64,), "int32")
for bn in (False, True):
    model = cnn(bn)
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    def loss(tv, ntv, x, y):
        logits, ntv = model.stateless_call(tv, ntv, x, training=True)
        return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True).mean(), ntv
    step = jax.jit(jax.value_and_grad(loss, has_aux=True))
    mem = step.lower(tv, ntv, x, y).compile().memory_analysis()
    # What an eager framework keeps alive between forward and backward: the residuals.
    from jax._src.ad_checkpoint import saved_residuals  # public: print_saved_residuals
    residuals = saved_residuals(lambda tv: loss(tv, ntv, x, y)[0], tv)
    out["bn" if bn else "no_bn"] = {
        "temp_bytes": int(mem.temp_size_in_bytes),
        "argument_bytes": int(mem.argument_size_in_bytes),
        "output_bytes": int(mem.output_size_in_bytes),
        "residual_bytes": int(sum(a.size * a.dtype.itemsize for a, _ in residuals)),
    }
print(json.dumps(out))
"""


def bench_memory():
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    mem = json.loads(proc.stdout.strip().splitlines()[-1])
    peak = {k: v["temp_bytes"] + v["argument_bytes"] + v["output_bytes"] for k, v in mem.items()}
    saved = {k: v["residual_bytes"] for k, v in mem.items()}
    row = {
        "model": "4 conv layers (32, 64, 64, 128 ch) + ReLU, batch 64 x 32 x 32 x 3",
        "bytes": mem,
        "peak_bytes": peak,
        "ratio": peak["bn"] / peak["no_bn"],
        "saved_for_backward_bytes": saved,
        "saved_ratio": saved["bn"] / saved["no_bn"],
    }
    print(
        f"training-step peak memory (XLA, fused): without BN {peak['no_bn'] / 2**20:.1f} MiB, "
        f"with BN {peak['bn'] / 2**20:.1f} MiB -> {row['ratio']:.2f}x",
        flush=True,
    )
    print(
        f"activations saved for backward (unfused, as eager frameworks keep them): without BN "
        f"{saved['no_bn'] / 2**20:.1f} MiB, with BN {saved['bn'] / 2**20:.1f} MiB"
        f" -> {row['saved_ratio']:.2f}x",
        flush=True,
    )
    return row


# 4. K seeds as one batched model (course_lib.replicas) against K runs one after the other.
REPLICA_SEEDS = 5
REPLICA_BATCH = 60
REPLICA_CHUNK = 50  # SGD steps per compiled call, as fit_replicas runs `record_every` of them


def _matmul_rate(repeats, size=1024):
    """FLOP/s of one large float32 matmul (``size``-cubed, best of ``repeats``): about the most
    arithmetic these cores do per second, the ceiling any training step can approach."""
    import tensorflow as tf

    a = tf.random.stateless_normal((size, size), seed=(7, 8))
    matmul = tf.function(lambda: tf.matmul(a, a))
    _block(matmul())
    best = min(_timed(matmul) for _ in range(repeats))
    return 2 * size**3 / best


def _timed(fn):
    start = time.perf_counter()
    _block(fn())
    return time.perf_counter() - start


def _keras_fit_step(model, x, y, idx):
    """One run the way ``experiments.sgd_fit`` trains (Keras's ``fit``, ``steps_per_execution``
    equal to the chunk), compiled once: a call trains ``len(idx)`` steps."""
    import keras
    import tensorflow as tf

    model.compile(optimizer=keras.optimizers.SGD(0.5), steps_per_execution=len(idx),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    dataset = tf.data.Dataset.from_tensor_slices(idx).map(
        lambda i: (tf.gather(x, i), tf.gather(y, i))).repeat()
    return lambda: model.fit(dataset, epochs=1, steps_per_epoch=len(idx), verbose=0,
                             shuffle=False).history["loss"]


def bench_replicas(repeats, round_seconds, replicas_=REPLICA_SEEDS, chunk=REPLICA_CHUNK):
    """The Figure 1 MLP (784-100-100-100-10 sigmoid, BN, batch 60): ``replicas_`` seeds batched
    in one model vs one run vs ``replicas_`` runs one after the other, seconds per SGD step.

    Every variant runs ``chunk`` steps per call of one compiled function (the loop of
    ``replicas.fit_replicas``, for the single model too), with and without XLA; the batched model
    also with its dense layers as one einsum. One run through Keras's ``fit`` (``sgd_fit``'s loop)
    is timed for reference. FLOPs are the matmuls' (``replicas.matmul_flops_per_step``)."""
    import tensorflow as tf

    import course_lib
    from course_lib import experiments, replicas

    (x_train, y_train), _ = course_lib.load_mnist()
    x = tf.constant(experiments.flatten_images(x_train))
    y = tf.constant(y_train.astype("int32"))
    seeds = list(range(replicas_))
    n, batch = len(x_train), REPLICA_BATCH
    one_flops = replicas.matmul_flops_per_step(experiments.build_mlp(True), batch)
    peak = _matmul_rate(repeats)
    rows = []
    for jit in (False, True):
        singles = [experiments.build_mlp(True, seed=s) for s in seeds]
        one = [replicas._train_chunk_fn(m, x, y, 0.5, batch, jit) for m in singles]
        one_idx = [tf.constant(experiments.minibatch_indices(n, chunk, batch, s), tf.int32)
                   for s in seeds]
        idx = tf.constant(replicas.replica_batches(n, chunk, batch, seeds), tf.int32)
        stacked = replicas.build_mlp_replicas(True, seeds=seeds)
        einsum = replicas.build_mlp_replicas(True, seeds=seeds)
        for layer in einsum.layers:
            if isinstance(layer, replicas.StackedDense):
                layer.implementation = "einsum"
        batched = replicas._train_chunk_fn(stacked, x, y, 0.5, batch, jit)
        batched_einsum = replicas._train_chunk_fn(einsum, x, y, 0.5, batch, jit)
        fns = {
            "one run": lambda f=one[0], i=one_idx[0]: f(i),
            "sequential": lambda fs=one, ii=one_idx: [f(i) for f, i in zip(fs, ii)][-1],
            "batched": lambda f=batched, i=idx: f(i),
            "batched_einsum": lambda f=batched_einsum, i=idx: f(i),
        }
        if not jit:
            fns["one run, keras fit"] = _keras_fit_step(
                experiments.build_mlp(True, seed=0), x, y, one_idx[0])
        for fn in fns.values():
            _block(fn())  # trace and compile outside the timing
        t, samples, run_steps = _best_time(fns, 1, repeats, round_seconds)
        ms = {name: v / chunk * 1e3 for name, v in t.items()}
        vs_one = _paired_quartiles(samples, "batched", "one run")
        speedup = _paired_quartiles(samples, "sequential", "batched")
        einsum_q = _paired_quartiles(samples, "batched_einsum", "batched")
        flops = {"one run": one_flops, "batched": replicas_ * one_flops}
        rate = {"one run": one_flops / (ms["one run"] / 1e3),
                "batched": replicas_ * one_flops / (ms["batched"] / 1e3)}
        row = {
            "model": f"Figure 1 MLP 784-100-100-100-10 sigmoid + BN, batch {batch}, "
                     f"{replicas_} seeds",
            "jit_compile": jit,
            "steps_per_call": chunk,
            "calls_per_round": run_steps,
            "rounds": repeats,
            "ms_per_step": ms,
            "batched_vs_one": vs_one[1],
            "batched_vs_one_quartiles": [vs_one[0], vs_one[2]],
            "sequential_vs_batched": speedup[1],
            "sequential_vs_batched_quartiles": [speedup[0], speedup[2]],
            "einsum_vs_matmuls": einsum_q[1],
            "matmul_flops_per_step": flops,
            "flop_rate": rate,
            "peak_matmul_flop_rate": peak,
        }
        if not jit:
            fit_q = _paired_quartiles(samples, "one run, keras fit", "batched")
            row["keras_fit_sequential_vs_batched"] = replicas_ * fit_q[1]
        rows.append(row)
        print(
            f"replicas jit={jit!s:5}: one run {ms['one run']:.3f} ms/step, {replicas_} sequential "
            f"{ms['sequential']:.3f}, {replicas_} batched {ms['batched']:.3f} (einsum "
            f"{ms['batched_einsum']:.3f}) -> batched / one run {vs_one[1]:.2f}x "
            f"[{vs_one[0]:.2f}, {vs_one[2]:.2f}], sequential / batched {speedup[1]:.2f}x "
            f"[{speedup[0]:.2f}, {speedup[2]:.2f}], einsum / matmuls {einsum_q[1]:.2f}x"
            + (f"; one run through Keras fit {ms['one run, keras fit']:.3f} ms/step, "
               f"{replicas_} of them / batched {row['keras_fit_sequential_vs_batched']:.2f}x"
               if not jit else ""),
            flush=True,
        )
        print(
            f"  matmul FLOPs per step: one run {one_flops / 1e6:.1f} M, batched "
            f"{replicas_ * one_flops / 1e6:.1f} M; rate: one run {rate['one run'] / 1e9:.1f} "
            f"GFLOP/s, batched {rate['batched'] / 1e9:.1f} GFLOP/s, large matmul "
            f"{peak / 1e9:.1f} GFLOP/s. <= 2x one run needs the batched step at >= "
            f"{replicas_ / 2:.1f}x one run's rate: the large matmul is "
            f"{peak / rate['one run']:.2f}x it.",
            flush=True,
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--round-seconds", type=float, default=0.2,
                        help="each variant runs at least this long per round")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--replicas-only", action="store_true",
                        help="run only the replicas benchmark and update its entry in --out")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    if args.replicas_only:
        results = json.loads(args.out.read_text()) if args.out.exists() else {}
        results["replicas"] = bench_replicas(args.repeats, args.round_seconds)
        results["replicas_date"] = time.strftime("%Y-%m-%d")  # the other entries keep their date
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote the replicas entry of {args.out}")
        return

    results = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "devices": [d.device_type for d in tf.config.list_physical_devices()],
        },
        "command": "make bench",
        "date": time.strftime("%Y-%m-%d"),
        "training_step": bench_training_step(args.steps, args.repeats, args.round_seconds),
        "folding": bench_folding(args.steps, args.repeats, args.round_seconds),
        "memory": bench_memory(),
        "replicas": bench_replicas(args.repeats, args.round_seconds),
    }
    results["replicas_date"] = results["date"]
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
