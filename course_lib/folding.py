"""Fold inference-mode Batch Normalization into the preceding Dense or convolution layer.

In inference BN is a fixed per-channel affine map, so after a linear layer ``x @ w + b``
(or a convolution, which is linear per output channel) the two compose into one:

```
s  = gamma / sqrt(moving_variance + epsilon)          # per output channel
w' = w * s                                           # scales the kernel's output axis
b' = (b - moving_mean) * s + beta                    # b = 0 for a layer without bias
y  = x @ w' + b'  ==  BN_inference(x @ w + b)
```

The folded model computes the same function with one layer less per pair, which is what
deployment tools (TFLite, TensorRT, ONNX Runtime) do before running a network.
"""

import keras
import numpy as np

# Layers whose kernel has the output channels on its last axis, as `s` needs.
FOLDABLE = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def _is_bn(layer):
    from course_lib.batch_normalization import BatchNormalization

    return isinstance(layer, (BatchNormalization, keras.layers.BatchNormalization))


def _can_fold(producer, bn):
    """Whether ``bn`` normalizes exactly the output channels of a linear ``producer``."""
    if type(producer) not in FOLDABLE or not _is_bn(bn) or not bn.built:
        return False
    config = producer.get_config()
    if config.get("activation", "linear") != "linear" or getattr(producer, "lora_enabled", False):
        return False
    if producer.dtype_policy.quantization_mode is not None:
        return False
    rank = bn.input_spec.ndim
    channels = 1 if config.get("data_format") == "channels_first" else rank - 1
    return bn.axis % rank == channels


def _folded_weights(producer, bn):
    """``[w', b']`` in float64, then cast to the producer's variable dtype."""
    kernel = np.asarray(producer.kernel, dtype=np.float64)
    bias = np.asarray(producer.bias, dtype=np.float64) if producer.use_bias else 0.0
    mean, var = (np.asarray(v, dtype=np.float64) for v in (bn.moving_mean, bn.moving_variance))
    gamma = np.asarray(bn.gamma, dtype=np.float64) if bn.scale else 1.0
    beta = np.asarray(bn.beta, dtype=np.float64) if bn.center else 0.0
    s = gamma / np.sqrt(var + bn.epsilon)
    dtype = keras.backend.standardize_dtype(producer.kernel.dtype)
    return [(kernel * s).astype(dtype), ((bias - mean) * s + beta).astype(dtype)]


def _with_bias(producer):
    config = producer.get_config()
    config["use_bias"] = True
    return type(producer).from_config(config)


def _clone(layer):
    if isinstance(layer, keras.Model):
        return fold_batchnorm(layer)  # nested models are folded too (weights included)
    return type(layer).from_config(layer.get_config())


def _functional_pairs(model):
    """{producer: bn} for every BN whose input only a foldable layer's output feeds."""
    nodes = [node for depth in model._nodes_by_depth.values() for node in depth]
    calls = {}
    consumers = {}
    for node in nodes:
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
        for tensor in node.input_tensors:
            consumers[id(tensor)] = consumers.get(id(tensor), 0) + 1
    outputs = {id(t) for t in model.outputs}
    pairs = {}
    for node in nodes:
        bn = node.operation
        if not _is_bn(bn) or len(node.input_tensors) != 1:
            continue
        (x,) = node.input_tensors
        producer = x._keras_history.operation
        if (
            calls[id(bn)] == 1
            and calls.get(id(producer)) == 1
            and consumers[id(x)] == 1
            and id(x) not in outputs
            and node.arguments.kwargs.get("training") is not True  # BN in training mode
            and _can_fold(producer, bn)
        ):
            pairs[producer] = bn
    return pairs


def fold_batchnorm(model):
    """A new inference model in which each foldable BN is merged into the layer before it.

    A BN layer (``course_lib.BatchNormalization`` or ``keras.layers.BatchNormalization``)
    is folded when its input is the output of a ``Dense``, ``Conv1D``, ``Conv2D`` or
    ``Conv3D`` layer with no activation (with or without bias; ``channels_first`` too) that
    feeds nothing else, and the BN normalizes that layer's channel axis. Every other layer,
    BN included, is copied with its weights; nested Sequential and functional models are
    folded in turn. ``model`` itself is left unchanged. The result is for inference only:
    it computes ``model(x, training=False)``.

    Args:
        model: A built Sequential or functional Keras model.

    Returns:
        A new Keras model with the same inputs and outputs, and fewer layers.

    Reference:
        Jacob et al., "Quantization and Training of Neural Networks for Efficient
        Integer-Arithmetic-Only Inference", CVPR 2018, section 3.2 (batch normalization
        folding). https://arxiv.org/abs/1712.05877

    >>> import numpy as np, keras
    >>> from course_lib import BatchNormalization
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), BatchNormalization()])
    >>> folded = fold_batchnorm(model)
    >>> [type(layer).__name__ for layer in folded.layers]
    ['Dense']
    >>> x = np.ones((2, 3), "float32")
    >>> bool(np.allclose(folded(x), model(x), atol=1e-6))
    True
    """
    from keras.src.models.functional import Functional

    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a Keras model. Received: model={model!r}")
    if isinstance(model, keras.Sequential):
        if not model.built or not model.inputs:
            raise ValueError(
                "`model` must be built, with a known input shape (start it with "
                f"keras.Input). Received: model={model.name!r}"
            )
        layers, new_layers, copies = model.layers, [], []
        i = 0
        while i < len(layers):
            if i + 1 < len(layers) and _can_fold(layers[i], layers[i + 1]):
                new = _with_bias(layers[i])
                copies.append((new, _folded_weights(layers[i], layers[i + 1])))
                i += 2
            else:
                new = _clone(layers[i])
                copies.append((new, None if isinstance(layers[i], keras.Model)
                               else layers[i].get_weights()))
                i += 1
            new_layers.append(new)
        (inputs,) = model.inputs
        folded = keras.Sequential(
            [keras.Input(batch_shape=inputs.shape, dtype=inputs.dtype)] + new_layers,
            name=f"{model.name}_folded",
        )
    elif isinstance(model, Functional):
        pairs = _functional_pairs(model)
        folded_bns = set(map(id, pairs.values()))
        copies = []

        def clone_function(layer):
            if id(layer) in folded_bns:
                return layer  # never called: call_function skips it
            new = _with_bias(layer) if layer in pairs else _clone(layer)
            weights = (_folded_weights(layer, pairs[layer]) if layer in pairs
                       else None if isinstance(layer, keras.Model) else layer.get_weights())
            copies.append((new, weights))
            return new

        def call_function(layer, *args, **kwargs):
            return args[0] if id(layer) in folded_bns else layer(*args, **kwargs)

        folded = keras.models.clone_model(
            model, clone_function=clone_function, call_function=call_function
        )
        folded.name = f"{model.name}_folded"
    else:
        raise ValueError(
            "`model` must be a Sequential or functional model: a subclassed model has no "
            f"layer graph to rewrite. Received: model={model.name!r} of type "
            f"{type(model).__name__}"
        )
    for layer, weights in copies:
        if weights is not None:
            layer.set_weights(weights)
    return folded
