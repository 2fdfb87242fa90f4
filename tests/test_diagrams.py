"""course_lib.diagrams: each diagram against an independent oracle.

- The normalisation-axes masks against course_lib's own layers: perturbing one input value
  changes the normalised output at the chosen value exactly when the mask says they share
  statistics. The drawn cubes shade exactly the mask.
- The BN graph against the NumPy reference: its nodes, computed along the declared edges,
  are the reference's values; every listed parent matters (numeric perturbation); each leaf
  reaches exactly the reference outputs the graph says it does; every backward edge carries
  the numeric vector-Jacobian product of its node, and the terms sum to the reference's
  gradients. The drawn arrows are exactly the declared edges.
"""

import doctest
import inspect
import itertools

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Polygon  # noqa: E402

import course_lib  # noqa: E402
from course_lib import diagrams, reference  # noqa: E402

# --- Normalisation axes -----------------------------------------------------------------------

N, H, W, C, GROUPS = 3, 2, 5, 4, 2  # every dimension differs; 2 groups of 2 channels
MASK_SHAPE = (N, C, H * W)
CHOSEN = [(0, 0, 0), (2, 3, 7), (1, 2, 4), (1, 1, 9)]  # (n, c, hw)


def _layer(kind):
    if kind == "batch":
        return course_lib.BatchNormalization(dtype="float64")
    if kind == "layer":
        return course_lib.LayerNormalization(axis=[1, 2, 3], dtype="float64")
    if kind == "instance":
        return course_lib.InstanceNormalization(dtype="float64")
    return course_lib.GroupNormalization(groups=GROUPS, dtype="float64")


@pytest.fixture(scope="module")
def oracle_masks():
    """{kind: {chosen: mask}} measured on the layers, from one perturbation of every input."""
    import keras

    rng = np.random.default_rng(0)
    probe = rng.normal(size=(N, H, W, C)) * rng.uniform(0.5, 3, size=(N, 1, 1, C))
    measured = {}
    for kind in diagrams.NORMALIZATION_KINDS:
        layer = _layer(kind)
        run = lambda x: keras.ops.convert_to_numpy(layer(x, training=True))  # noqa: B023, E731
        base = run(probe)
        masks = {chosen: np.zeros(MASK_SHAPE, dtype=bool) for chosen in CHOSEN}
        for n, h, w, c in itertools.product(range(N), range(H), range(W), range(C)):
            x = probe.copy()
            x[n, h, w, c] += 1.0
            delta = np.abs(run(x) - base)
            for chosen in CHOSEN:
                cn, cc, chw = chosen
                change = delta[cn, chw // W, chw % W, cc]
                assert change > 1e-9 or change < 1e-12, (kind, chosen, change)  # clear either way
                masks[chosen][n, c, h * W + w] = change > 1e-9
        measured[kind] = masks
    return measured


@pytest.mark.parametrize("kind", diagrams.NORMALIZATION_KINDS)
@pytest.mark.parametrize("chosen", CHOSEN)
def test_mask_is_what_the_layer_shares_statistics_over(oracle_masks, kind, chosen):
    mask = diagrams.shared_statistics_mask(kind, MASK_SHAPE, chosen, groups=GROUPS)
    expected = oracle_masks[kind][chosen]
    assert mask.shape == expected.shape and mask.dtype == bool
    np.testing.assert_array_equal(mask, expected, err_msg=f"{kind} at {chosen}")
    assert mask[chosen]


def test_the_oracle_tells_every_kind_apart(oracle_masks):
    # A mask of the wrong kind could not pass: the measured sets of the four layers all differ.
    for a, b in itertools.combinations(diagrams.NORMALIZATION_KINDS, 2):
        assert any((oracle_masks[a][c] != oracle_masks[b][c]).any() for c in CHOSEN), (a, b)


@pytest.mark.parametrize("bad", [dict(kind="batchnorm"), dict(shape=(2, 3)), dict(element=(0, 6, 0)),
                                 dict(groups=4)])
def test_bad_arguments_raise_a_value_error_naming_them(bad):
    args = dict(kind="group", shape=(2, 6, 5), element=(0, 0, 0), groups=3) | bad
    with pytest.raises(ValueError, match=f"`{next(iter(bad))}`"):
        diagrams.shared_statistics_mask(**args)


def test_the_cubes_shade_exactly_the_mask_and_fit_a_phone():
    shape, element, groups = (4, 6, 5), (0, 0, 0), 3
    fig = diagrams.draw_normalization_axes(shape, element, groups)
    try:
        width, _ = fig.get_size_inches()
        assert width <= 6.4
        axes = [ax for ax in fig.axes if ax.get_title()]
        assert [ax.get_title() for ax in axes] == ["Batch Norm", "Layer Norm", "Instance Norm", "Group Norm"]
        fig.canvas.draw()
        lefts = {round(ax.get_position().x0, 2) for ax in axes}
        bottoms = {round(ax.get_position().y0, 2) for ax in axes}
        assert len(lefts) == 2 and len(bottoms) == 2, "a 2 x 2 grid"
        for ax, kind in zip(axes, diagrams.NORMALIZATION_KINDS):
            texts = [t.get_text() for t in ax.texts]
            assert {"N", "C", "H, W"} <= set(texts), texts
            assert all(t.get_fontsize() >= 11 for t in ax.texts + [ax.title])
            mask = diagrams.shared_statistics_mask(kind, shape, element, groups)
            cells = [p for p in ax.patches if isinstance(p, Polygon)]
            assert len(cells) == shape[1] * shape[2] + shape[0] * (shape[1] + shape[2])
            for cell in cells:
                name, face, *index = cell.get_gid().split()
                index = tuple(int(i) for i in index)
                assert name == kind
                plain = matplotlib.colors.to_rgba(diagrams.CUBE_COLOURS[face][0])
                assert (tuple(cell.get_facecolor()) != plain) == bool(mask[index]), (kind, face, index)
    finally:
        plt.close(fig)


# --- The BN graph -------------------------------------------------------------------------------

EPS = 1e-3


@pytest.fixture
def bn_inputs():
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 3.0, size=(6, 3))
    gamma, beta, g = rng.normal(size=3), rng.normal(size=3), rng.normal(size=(6, 3))
    return x, gamma, beta, g


def _edges():
    return {(parent, child) for child, parents in diagrams.BN_GRAPH.items() for parent in parents}


def test_the_graph_computes_the_reference_forward(bn_inputs):
    x, gamma, beta, g = bn_inputs
    values = diagrams.bn_graph_forward(x, gamma, beta, eps=EPS, loss=lambda y: np.sum(g * y))
    y, mean, var = reference.batchnorm_forward_train(x, gamma, beta, eps=EPS)
    xhat, _, _ = reference.batchnorm_forward_train(x, np.ones(3), np.zeros(3), eps=EPS)
    np.testing.assert_allclose(values["mu"], mean, rtol=1e-12)
    np.testing.assert_allclose(values["var"], var, rtol=1e-12)
    np.testing.assert_allclose(values["xhat"], xhat, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(values["y"], y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(values["loss"], np.sum(g * y), rtol=1e-12)


def test_every_node_reads_exactly_its_listed_parents_and_each_one_matters(bn_inputs):
    x, gamma, beta, g = bn_inputs
    values = diagrams.bn_graph_forward(x, gamma, beta, eps=EPS, loss=lambda y: np.sum(g * y))
    functions = diagrams.bn_node_functions(EPS, loss=lambda y: np.sum(g * y))
    for node, parents in diagrams.BN_GRAPH.items():
        if not parents:
            continue
        # A node's function takes its parents and nothing else: it cannot read another node.
        assert len(inspect.signature(functions[node]).parameters) == len(parents), node
        base = functions[node](*(values[p] for p in parents))
        for parent in parents:
            moved = [values[p] + 0.1 * (p == parent) for p in parents]
            assert np.abs(functions[node](*moved) - base).max() > 1e-6, f"{node} ignores {parent}"


def _ancestors(node):
    found = set()
    for parent in diagrams.BN_GRAPH[node]:
        found |= {parent} | _ancestors(parent)
    return found


def test_each_leaf_reaches_exactly_the_reference_outputs_the_graph_says(bn_inputs):
    x, gamma, beta, _ = bn_inputs
    leaves = {"x": x, "gamma": gamma, "beta": beta}
    base = dict(zip(("y", "mu", "var"), reference.batchnorm_forward_train(x, gamma, beta, eps=EPS)))
    for leaf in leaves:
        moved = {k: v.copy() for k, v in leaves.items()}
        moved[leaf].flat[0] += 0.5
        out = dict(zip(("y", "mu", "var"), reference.batchnorm_forward_train(
            moved["x"], moved["gamma"], moved["beta"], eps=EPS)))
        for node in ("y", "mu", "var"):
            changed = np.abs(out[node] - base[node]).max() > 1e-9
            assert changed == (leaf in _ancestors(node)), (leaf, node)


def test_each_backward_edge_carries_the_numeric_vector_jacobian_product(bn_inputs):
    x, gamma, beta, g = bn_inputs
    loss = lambda y: np.sum(g * y)  # noqa: E731
    values = diagrams.bn_graph_forward(x, gamma, beta, eps=EPS, loss=loss)
    functions = diagrams.bn_node_functions(EPS, loss=loss)
    terms = diagrams.bn_backward_terms(values, g, eps=EPS)
    assert set(terms) == {(child, parent) for parent, child in _edges()} == set(diagrams.BN_BACKWARD_LABELS)

    def total(node):  # dl/dnode: the sum of the terms arriving at it
        return 1.0 if node == "loss" else sum(t for (_, parent), t in terms.items() if parent == node)

    for (child, parent), term in terms.items():
        parents = diagrams.BN_GRAPH[child]

        def pulled(v, child=child, parent=parent, parents=parents):
            args = [v if p == parent else values[p] for p in parents]
            return np.sum(total(child) * functions[child](*args))

        numeric = reference.numeric_gradient(pulled, np.array(values[parent], dtype=float))
        np.testing.assert_allclose(np.broadcast_to(term, numeric.shape), numeric, rtol=1e-6, atol=1e-8,
                                   err_msg=f"{child} -> {parent}")
    dx, dgamma, dbeta = reference.batchnorm_backward(g, x, gamma, eps=EPS)
    np.testing.assert_allclose(total("x"), dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(total("gamma"), dgamma, rtol=1e-10)
    np.testing.assert_allclose(total("beta"), dbeta, rtol=1e-10)


def test_the_drawn_graph_has_exactly_the_declared_edges():
    fig = diagrams.draw_batchnorm_graph()
    try:
        ax = fig.axes[0]
        nodes = {t.get_gid().split()[1]: np.array(t.get_position()) for t in ax.texts
                 if (t.get_gid() or "").startswith("node ")}
        assert set(nodes) == set(diagrams.BN_GRAPH)
        arrows = {}
        for patch in ax.patches:
            if isinstance(patch, FancyArrowPatch) and patch.get_gid():
                kind, source, target = patch.get_gid().split()
                arrows[kind, source, target] = patch
        forward = {(s, t) for k, s, t in arrows if k == "forward"}
        backward = {(t, s) for k, s, t in arrows if k == "backward"}
        assert forward == _edges() and backward == _edges()
        for (kind, source, target), patch in arrows.items():
            # The arrow runs from its source node to its target node (the backward ones beside).
            start, end = (np.array(p) for p in patch._posA_posB)
            assert np.linalg.norm(start - nodes[source]) < 0.5 and np.linalg.norm(end - nodes[target]) < 0.5, \
                (kind, source, target)
            solid = patch.get_linestyle() in ("-", "solid")
            assert solid == (kind == "forward"), (kind, source, target, patch.get_linestyle())
            colour = matplotlib.colors.to_hex(patch.get_edgecolor())
            assert colour == matplotlib.colors.to_hex(
                diagrams.FORWARD_COLOUR if kind == "forward" else diagrams.BACKWARD_COLOUR)
        labels = {tuple(t.get_gid().split()[1:]): t.get_text() for t in ax.texts
                  if (t.get_gid() or "").startswith("label ")}
        assert labels == diagrams.BN_BACKWARD_LABELS
        assert all(t.get_fontsize() >= 11 for t in ax.texts)
        assert fig.get_size_inches()[0] <= 6.4
    finally:
        plt.close(fig)


def test_docstring_examples():
    result = doctest.testmod(diagrams)
    assert result.attempted > 0 and result.failed == 0
