"""The NumPy reference against numeric gradients, direct formulas and the Keras layer."""

import numpy as np
import pytest

from course_lib import reference as ref

SHAPES_AXES = [((7, 5), -1), ((7, 5), 0), ((4, 3, 5, 6), -1), ((4, 3, 5, 6), 1)]


def _case(rng, shape, axis):
    x = rng.normal(size=shape) * 2.0 + 0.5
    c = shape[axis]
    gamma = rng.uniform(0.5, 1.5, size=c)
    beta = rng.normal(size=c)
    return x, gamma, beta


@pytest.mark.parametrize("shape,axis", SHAPES_AXES)
def test_forward_train_matches_definition(rng, shape, axis):
    x, gamma, beta = _case(rng, shape, axis)
    y, mean, var = ref.batchnorm_forward_train(x, gamma, beta, eps=1e-3, axis=axis)
    # Independent formulation: move the feature axis last and flatten everything else.
    flat = np.moveaxis(x, axis, -1).reshape(-1, shape[axis])
    np.testing.assert_allclose(mean, flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(var, flat.var(0), rtol=1e-12)  # biased: ddof=0
    expected = gamma * (flat - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-3) + beta
    got = np.moveaxis(y, axis, -1).reshape(-1, shape[axis])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape,axis", SHAPES_AXES)
def test_backward_matches_numeric_gradient(rng, shape, axis):
    x, gamma, beta = _case(rng, shape, axis)
    dy = rng.normal(size=shape)
    eps = 1e-3
    dx, dgamma, dbeta = ref.batchnorm_backward(dy, x, gamma, eps=eps, axis=axis)

    def loss_x(xv):
        return np.sum(ref.batchnorm_forward_train(xv, gamma, beta, eps, axis)[0] * dy)

    def loss_gamma(g):
        return np.sum(ref.batchnorm_forward_train(x, g, beta, eps, axis)[0] * dy)

    def loss_beta(b):
        return np.sum(ref.batchnorm_forward_train(x, gamma, b, eps, axis)[0] * dy)

    assert ref.relative_error(dx, ref.numeric_gradient(loss_x, x)) <= 1e-6
    assert ref.relative_error(dgamma, ref.numeric_gradient(loss_gamma, gamma)) <= 1e-6
    assert ref.relative_error(dbeta, ref.numeric_gradient(loss_beta, beta)) <= 1e-6


def test_gradient_check_detects_a_wrong_gradient(rng):
    """The checker itself must be able to fail: a gradient without the mean term is caught."""
    x, gamma, beta = _case(rng, (6, 4), -1)
    dy = rng.normal(size=x.shape)
    _, _, var = ref.batchnorm_forward_train(x, gamma, beta)
    naive_dx = dy * gamma / np.sqrt(var + 1e-3)  # treats mu and sigma as constants

    def loss_x(xv):
        return np.sum(ref.batchnorm_forward_train(xv, gamma, beta)[0] * dy)

    assert ref.relative_error(naive_dx, ref.numeric_gradient(loss_x, x)) > 1e-2


def test_inference_uses_given_statistics(rng):
    x, gamma, beta = _case(rng, (5, 3), -1)
    mean, var = np.array([1.0, -2.0, 0.5]), np.array([4.0, 0.25, 1.0])
    y = ref.batchnorm_forward_inference(x, gamma, beta, mean, var, eps=0.0)
    np.testing.assert_allclose(y, gamma * (x - mean) / np.sqrt(var) + beta)


def test_moving_average_convention():
    assert ref.update_moving_average(10.0, 0.0, momentum=0.99) == pytest.approx(9.9)
    assert ref.update_moving_average(10.0, 20.0, momentum=0.0) == pytest.approx(20.0)


def test_population_statistics_is_unbiased(rng):
    """Algorithm 2: m/(m-1) times the mean biased batch variance estimates the population variance."""
    m = 4
    batches = rng.normal(loc=3.0, scale=2.0, size=(20000, m, 2))
    means = batches.mean(axis=1)
    variances = batches.var(axis=1)  # biased, as in training
    mean, var = ref.population_statistics(means, variances, batch_size=m)
    np.testing.assert_allclose(mean, 3.0, atol=0.05)
    np.testing.assert_allclose(var, 4.0, rtol=0.03)
    assert np.all(np.mean(variances, axis=0) < 3.2)  # without the correction: 4 * 3/4 = 3
    with pytest.raises(ValueError, match="batch_size=1"):
        ref.population_statistics(means, variances, batch_size=1)


@pytest.mark.parametrize("shape,axis", [((9, 4), -1), ((3, 4, 5, 6), 1), ((3, 4, 5, 6), -1)])
def test_reference_matches_keras_layer(rng, shape, axis):
    """The reference and the layer agree in float64: forward, moving statistics and backward."""
    from conftest import layer_gradients

    import course_lib

    x, gamma, beta = _case(rng, shape, axis)
    dy = rng.normal(size=shape)
    layer = course_lib.BatchNormalization(axis=axis, momentum=0.9, dtype="float64")
    layer.build(shape)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    y = np.asarray(layer(x, training=True))
    y_ref, mean, var = ref.batchnorm_forward_train(x, gamma, beta, eps=1e-3, axis=axis)
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(layer.moving_mean.numpy(), ref.update_moving_average(0.0, mean, 0.9))
    np.testing.assert_allclose(
        layer.moving_variance.numpy(), ref.update_moving_average(1.0, var, 0.9)
    )
    dx, (dgamma, dbeta) = layer_gradients(layer, x, dy)
    dx_ref, dgamma_ref, dbeta_ref = ref.batchnorm_backward(dy, x, gamma, eps=1e-3, axis=axis)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(dgamma, dgamma_ref, rtol=1e-8)
    np.testing.assert_allclose(dbeta, dbeta_ref, rtol=1e-8)
