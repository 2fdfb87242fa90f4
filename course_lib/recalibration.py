"""Recompute the inference statistics of every Batch Normalization layer of a model from data.

Two recipes, both applied layer by layer in the order the layers run, so that each layer sees
the outputs of the layers before it *with their new statistics*:

```
method="population"   (Ioffe & Szegedy 2015, Algorithm 2; batches of m values per feature)
    E[x]   = mean over batches of mu_B
    Var[x] = m / (m - 1) * mean over batches of sigma2_B      # unbiased
method="adabn"        (Li et al. 2016, Adaptive BN: the statistics of the new domain)
    E[x], Var[x] = mean and (biased) variance of the layer's inputs over all the data
```

``m`` counts every value a feature has in a batch: ``batch_size`` after a ``Dense`` layer,
``batch_size * H * W`` after a ``Conv2D``. When batch sizes differ (a smaller last batch),
batches are weighted by their ``m``, which is Algorithm 2 when they are all equal.
"""

import contextlib
import itertools

import keras
import numpy as np

METHODS = ("population", "adabn")


class _Stop(BaseException):
    """Ends a forward pass once the layer being recalibrated has seen its inputs.

    A BaseException, so that Keras's error handlers (``except Exception``) let it through.
    """


def _bn_layers_of(model):
    """Every BN layer inside ``model``, nested models and layers included."""
    from course_lib.batch_normalization import BatchNormalization

    kinds = (BatchNormalization, keras.layers.BatchNormalization)
    # _flatten_layers is how Keras itself walks nested layers (Layer.summary, saving).
    layers = model._flatten_layers(include_self=False)
    return [layer for layer in layers if isinstance(layer, kinds)]


def _batches(data, batch_size, steps):
    """A function returning a fresh iterator over the input batches (``x`` only)."""
    if isinstance(data, (np.ndarray, dict)) or keras.ops.is_tensor(data):
        n = len(next(iter(data.values()))) if isinstance(data, dict) else len(data)

        def source():
            for start in range(0, n, batch_size):
                if isinstance(data, dict):
                    yield {k: v[start:start + batch_size] for k, v in data.items()}
                else:
                    yield data[start:start + batch_size]
    elif not hasattr(data, "__iter__"):
        raise ValueError(
            "`data` must be an array, a tensor, a dict of arrays or an iterable of batches. "
            f"Received: data={data!r:.200}"
        )
    elif iter(data) is data:  # a one-shot iterator or generator: keep its batches
        kept = list(itertools.islice(data, steps))
        source = lambda: iter(kept)  # noqa: E731
    else:
        source = lambda: iter(data)  # noqa: E731

    def first_elements():
        for batch in itertools.islice(source(), steps):
            # (x, y) or (x, y, sample_weight) as in `fit`: keep x.
            yield batch[0] if isinstance(batch, tuple) else batch

    return first_elements


def _batch_moments(x, axis, mask):
    """Count, mean and biased variance per feature of one batch, in float64."""
    x = np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64)
    axes = tuple(a for a in range(x.ndim) if a != axis % x.ndim)
    if mask is None:
        w = np.ones(x.shape[:-1] + (1,))
    else:  # Keras's convention: one mask value per position of inputs.shape[:-1]
        w = np.asarray(keras.ops.convert_to_numpy(mask), dtype=bool)[..., None].astype(np.float64)
    w = np.broadcast_to(w, x.shape)
    count = w.sum(axis=axes)
    mean = (w * x).sum(axis=axes) / np.maximum(count, 1.0)
    var = (w * (x - np.expand_dims(mean, axes)) ** 2).sum(axis=axes) / np.maximum(count, 1.0)
    return count, mean, var


def _combine(stats, method, layer):
    """The layer's new mean and variance from its per-batch (count, mean, variance)."""
    counts, means, variances = (np.stack(s) for s in zip(*stats))  # (batches, features)
    total = np.maximum(counts.sum(axis=0), 1.0)  # a feature masked everywhere gets 0, 0
    mean = (counts * means).sum(axis=0) / total
    if method == "adabn":  # exact: within-batch plus between-batch variance
        var = (counts * (variances + (means - mean) ** 2)).sum(axis=0) / total
    else:
        if counts.min() < 2:
            raise ValueError(
                "Algorithm 2's m/(m-1) needs at least 2 values per feature in every batch. "
                f"Received: m={int(counts.min())} in a batch for layer {layer.name!r}; "
                "use a larger batch_size"
            )
        var = (counts * counts / (counts - 1.0) * variances).sum(axis=0) / total
    return mean, var


def _assign(layer, mean, var):
    dtype = keras.backend.standardize_dtype(layer.moving_mean.dtype)
    layer.moving_mean.assign(mean.astype(dtype))
    layer.moving_variance.assign(var.astype(dtype))
    if getattr(layer, "renorm", False):  # renorm keeps moving_var = moving_stddev**2 - eps
        layer.moving_stddev.assign(np.sqrt(var + layer.epsilon).astype(dtype))


@contextlib.contextmanager
def _hooked(layers, hook):
    """Call ``hook(layer, inputs, mask)`` whenever one of ``layers`` runs."""
    for layer in layers:
        def call(inputs, training=None, mask=None, _layer=layer, _call=layer.call):
            hook(_layer, inputs, mask)
            return _call(inputs, training=training, mask=mask)

        layer.call = call  # an instance attribute shadows the method until deleted
    try:
        yield
    finally:
        for layer in layers:
            del layer.call


def recalibrate_batchnorm(model, data, batch_size=32, steps=None, method="population"):
    """Recompute ``moving_mean`` and ``moving_variance`` of every BN layer of ``model``.

    Every ``course_lib.BatchNormalization`` and ``keras.layers.BatchNormalization`` counts,
    nested models included. For each in turn, in the order of a forward pass, the model runs
    in inference mode (``training=False``) on ``data`` up to that layer; the layer's inputs
    give its new statistics (see the module docstring), which the later layers then use.
    With ``renorm=True``, ``moving_stddev`` is set to ``sqrt(Var[x] + epsilon)`` to match.

    Args:
        model: A built Keras model (Sequential, functional or subclassed).
        data: Inputs: a NumPy array, tensor or dict of arrays, split into batches of
            ``batch_size``; or an iterable of batches (a ``tf.data.Dataset``, a list, a
            generator), each ``x`` or an ``(x, y)`` / ``(x, y, sample_weight)`` tuple.
        batch_size: Batch size used to split arrays (ignored for iterables). Algorithm 2
            depends on it: it is the ``m`` of the training batches in the paper.
        steps: Number of batches to use; ``None`` for all of them.
        method: ``"population"`` (Algorithm 2) or ``"adabn"`` (exact statistics of the
            data, as in AdaBN for a new domain).

    Returns:
        ``model``, modified in place.

    Reference:
        Ioffe & Szegedy, "Batch Normalization", ICML 2015, Algorithm 2.
        https://arxiv.org/abs/1502.03167
        Li, Wang, Shi, Liu & Hou, "Revisiting Batch Normalization For Practical Domain
        Adaptation", 2016. https://arxiv.org/abs/1603.04779

    >>> import numpy as np, keras
    >>> from course_lib import BatchNormalization
    >>> model = keras.Sequential([keras.Input((3,)), BatchNormalization()])
    >>> x = np.random.default_rng(0).normal(5.0, 2.0, size=(512, 3))
    >>> _ = recalibrate_batchnorm(model, x, batch_size=64, method="adabn")
    >>> np.allclose(model.layers[0].moving_mean.numpy(), x.mean(axis=0))
    True
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a Keras model. Received: model={model!r}")
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}. Received: method={method!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(
            f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}"
        )
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"`steps` must be None or a positive integer. Received: steps={steps!r}")
    layers = _bn_layers_of(model)
    if not layers:
        raise ValueError(
            "`model` has no BatchNormalization layer to recalibrate. "
            f"Received: model={model.name!r}"
        )
    batches = _batches(data, batch_size, steps)
    if next(batches(), None) is None:
        raise ValueError(f"`data` gave no batch. Received: data={data!r:.200}")

    # The order the layers run in (a topological order), and how often each runs per pass.
    order = []
    with _hooked(layers, lambda layer, x, mask: order.append(layer)):
        model(next(batches()), training=False)
    for layer in dict.fromkeys(order):  # first call order, each layer once
        calls = order.count(layer)
        stats = []

        def capture(hooked_layer, x, mask):
            stats.append(_batch_moments(x, hooked_layer.axis, mask))
            if len(stats) % calls == 0:
                raise _Stop

        with _hooked([layer], capture):
            for x in batches():
                try:
                    model(x, training=False)
                except _Stop:
                    pass
        _assign(layer, *_combine(stats, method, layer))
    return model
