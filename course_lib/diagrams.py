"""The book's diagrams: drawn by matplotlib from declared structures that the tests check.

Two diagrams, each drawn from data that ``tests/test_diagrams.py`` compares with an independent
oracle, so that a picture cannot silently disagree with the computation it shows:

- which values Batch, Layer, Instance and Group Normalization average over (the cubes of
  Figure 2 of Wu and He, 2018): :func:`shared_statistics_mask` and
  :func:`draw_normalization_axes`, used in chapters 3 and 8;
- the computational graph of the BN transform, forward and backward, in the notation of
  chapter 2: :data:`BN_GRAPH`, :func:`bn_node_functions`, :func:`bn_backward_terms` and
  :func:`draw_batchnorm_graph`.

It also holds the book's figure style, :data:`BOOK_STYLE` and :func:`use_book_style`, which every
chapter that draws applies in its imports cell, so that a figure stays legible on a phone.

Only NumPy is needed to import this module; matplotlib is imported by the drawing functions.
"""

import numpy as np

__all__ = [
    "BOOK_WIDTH",
    "MIN_FONT_SIZE",
    "BOOK_STYLE",
    "use_book_style",
    "NORMALIZATION_KINDS",
    "NORMALIZATION_TITLES",
    "shared_statistics_mask",
    "draw_normalization_axes",
    "BN_GRAPH",
    "BN_NODE_LABELS",
    "BN_BACKWARD_LABELS",
    "bn_node_functions",
    "bn_graph_forward",
    "bn_backward_terms",
    "draw_batchnorm_graph",
]

# --- The book's figure style -------------------------------------------------------------------

# Why these numbers. The inline backend writes a figure as a PNG at ``figure.dpi`` (100) with
# ``bbox_inches="tight"`` (0.1 inch of padding each side), so a 5-inch figure is 510-520 pixels
# wide. Jupyter Book shows an image at its pixel width, capped at the content width: 342 CSS px
# on a 390-px phone (measured in Chromium), so the phone scales the figure by 342 / 520 = 0.66.
# A 12-point text is 12 / 72 * 100 = 16.7 pixels in the PNG, and 16.7 * 0.66 = 11.0 CSS px on the
# phone, against 10 CSS px for the smallest text a page may carry (at matplotlib's default
# 10 points on a 6.4-inch figure it was 13.9 * 342 / 650 = 7.3 px). On a desktop the same figure
# shows at its natural 520 px, its text at 16.7 px.
BOOK_WIDTH = 5.0      # inches: the standard width of a figure of the book (one column of panels)
MIN_FONT_SIZE = 12    # points: the smallest text a figure of the book may carry

BOOK_STYLE = {
    "figure.dpi": 100,                     # the pixel arithmetic above assumes 100 dpi
    "figure.figsize": (BOOK_WIDTH, 3.6),
    "font.size": MIN_FONT_SIZE,            # ticks, legends, annotations: 12 pt
    "axes.titlesize": 13,
    "axes.labelsize": 13,
    "xtick.labelsize": MIN_FONT_SIZE,
    "ytick.labelsize": MIN_FONT_SIZE,
    "legend.fontsize": MIN_FONT_SIZE,
    "legend.title_fontsize": MIN_FONT_SIZE,
    "figure.titlesize": 13,
    "figure.labelsize": 13,
}
"""The book's matplotlib settings (``rcParams``): figures :data:`BOOK_WIDTH` inches wide, no text
smaller than :data:`MIN_FONT_SIZE` points (ticks, legends), axis labels and titles 13 points, so
that the smallest text of a figure reads at about 11 CSS px on a 390-px phone screen."""


def use_book_style():
    """Apply :data:`BOOK_STYLE` to matplotlib's ``rcParams``, for every figure drawn after it.

    A chapter calls it once, in its imports cell. A figure then keeps to the style by not
    passing font sizes below :data:`MIN_FONT_SIZE` and by being at most :data:`BOOK_WIDTH`
    inches wide (two panels side by side are stacked instead); ``tests/test_figure_style.py``
    checks both.
    """
    import matplotlib.pyplot as plt

    plt.rcParams.update(BOOK_STYLE)


# --- Which values share a mean and a variance ---------------------------------------------------

NORMALIZATION_KINDS = ("batch", "layer", "instance", "group")
NORMALIZATION_TITLES = {"batch": "Batch Norm", "layer": "Layer Norm",
                        "instance": "Instance Norm", "group": "Group Norm"}

# Face colours of the cubes: (unshaded, shaded, the chosen value) for each visible face.
CUBE_COLOURS = {
    "front": ("white", "#8fbfe8", "#1f4e8c"),
    "top": ("#f0f0f0", "#b5d5f0", "#1f4e8c"),
    "side": ("#dcdcdc", "#6fa3d6", "#1f4e8c"),
}
_DEPTH = (0.5, 0.38)  # the oblique projection of one step along N


def shared_statistics_mask(kind, shape=(4, 6, 5), element=(0, 0, 0), groups=3):
    """Which values share their mean and variance with one value, for BN, LN, IN and GN.

    The activations of a convolution are seen as a block of shape ``(N, C, HW)``: batch,
    channels, and the ``H × W`` positions flattened into one axis, as in Figure 2 of Wu and He
    (2018). The normalisations differ only in the set of values over which they take the mean
    and the variance that normalise a value:

    - ``"batch"`` (BN): every example and position of the value's channel, ``(N, H, W)``;
    - ``"layer"`` (LN): every channel and position of the value's example, ``(C, H, W)``;
    - ``"instance"`` (IN): every position of the value's example and channel, ``(H, W)``;
    - ``"group"`` (GN): every position of the value's example, in the ``C / groups`` channels
      of the value's group (consecutive channels, as ``GroupNormalization`` splits them).

    Args:
        kind: one of ``"batch"``, ``"layer"``, ``"instance"``, ``"group"``.
        shape: ``(N, C, HW)``, three positive integers.
        element: the index ``(n, c, hw)`` of the chosen value.
        groups: the number of groups of ``"group"``; it must divide ``C``.

    Returns:
        A boolean array of shape ``shape``: ``True`` where the value is in the chosen value's
        set (the chosen value included).

    >>> int(shared_statistics_mask("instance", shape=(2, 3, 4)).sum())
    4
    """
    if kind not in NORMALIZATION_KINDS:
        raise ValueError(f"`kind` must be one of {NORMALIZATION_KINDS}. Received: kind={kind!r}")
    if len(shape) != 3 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in shape):
        raise ValueError(f"`shape` must be three positive integers (N, C, HW). Received: shape={shape!r}")
    if len(element) != 3 or not all(0 <= e < s for e, s in zip(element, shape)):
        raise ValueError(f"`element` must be an index into `shape` {tuple(shape)}. Received: element={element!r}")
    n_count, channels, _ = shape
    if not isinstance(groups, (int, np.integer)) or groups < 1 or channels % groups:
        raise ValueError(f"`groups` must divide the channel count. Received: groups={groups!r}, channels={channels}")
    n, c, _ = element
    mask = np.zeros(shape, dtype=bool)
    if kind == "batch":
        mask[:, c, :] = True
    elif kind == "layer":
        mask[n] = True
    elif kind == "instance":
        mask[n, c, :] = True
    else:
        size = channels // groups
        first = c // size * size
        mask[n, first:first + size, :] = True
    return mask


def _cube_faces(shape):
    """Every visible cell face of an ``(N, C, HW)`` block: ``(face, (n, c, hw), corners)``.

    C runs to the right, HW upwards and N into the page; the front face is ``n = 0``, the top
    face ``hw = HW - 1`` and the side face ``c = C - 1``.
    """
    n_count, channels, positions = shape
    dx, dy = _DEPTH
    for c in range(channels):
        for h in range(positions):
            yield "front", (0, c, h), [(c, h), (c + 1, h), (c + 1, h + 1), (c, h + 1)]
    for n in range(n_count):
        x0, y0 = n * dx, positions + n * dy
        for c in range(channels):
            yield "top", (n, c, positions - 1), [(c + x0, y0), (c + 1 + x0, y0),
                                                 (c + 1 + x0 + dx, y0 + dy), (c + x0 + dx, y0 + dy)]
        for h in range(positions):
            x1, y1 = channels + n * dx, h + n * dy
            yield "side", (n, channels - 1, h), [(x1, y1), (x1 + dx, y1 + dy),
                                                 (x1 + dx, y1 + 1 + dy), (x1, y1 + 1)]


def draw_normalization_axes(shape=(4, 6, 5), element=(0, 0, 0), groups=3, kinds=NORMALIZATION_KINDS,
                            fontsize=13):
    """The four normalisations as shaded blocks of activations, in one matplotlib figure.

    Each panel draws an ``(N, C, HW)`` block of cells; the cells of
    :func:`shared_statistics_mask` are shaded, the chosen value darkest. Two columns of
    panels, :data:`BOOK_WIDTH` inches wide, so that the figure stays legible at a phone's width.

    Every cell face carries a gid ``"<kind> <face> <n> <c> <hw>"``, so that a test can read
    back which cells the figure shades.

    Returns:
        The ``matplotlib.figure.Figure``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, Polygon

    kinds = tuple(kinds)
    n_count, channels, positions = shape
    dx, dy = _DEPTH
    cols = 1 if len(kinds) == 1 else 2
    rows = -(-len(kinds) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(BOOK_WIDTH / 2 * cols, 2.5 * rows), layout="constrained",
                             squeeze=False)
    for ax, kind in zip(axes.flat, kinds):
        mask = shared_statistics_mask(kind, shape, element, groups)
        for face, index, corners in _cube_faces(shape):
            plain, shaded, chosen = CUBE_COLOURS[face]
            colour = chosen if index == tuple(element) else shaded if mask[index] else plain
            ax.add_patch(Polygon(corners, closed=True, facecolor=colour, edgecolor="0.35", lw=0.7,
                                 gid=f"{kind} {face} {index[0]} {index[1]} {index[2]}"))
        arrow = dict(arrowstyle="-|>", mutation_scale=12, color="black", lw=1.2)
        # C along the bottom edge, H x W up the left edge, N along the bottom of the side face.
        ax.add_patch(FancyArrowPatch((0, -0.55), (channels, -0.55), **arrow))
        ax.text(channels / 2, -0.75, "C", ha="center", va="top", fontsize=fontsize)
        ax.add_patch(FancyArrowPatch((-0.55, 0), (-0.55, positions), **arrow))
        ax.text(-0.8, positions / 2, "H, W", ha="right", va="center", rotation=90, fontsize=fontsize)
        start = (channels + 0.45, -0.3)
        ax.add_patch(FancyArrowPatch(start, (start[0] + n_count * dx, start[1] + n_count * dy), **arrow))
        ax.text(start[0] + n_count * dx + 0.15, start[1] + n_count * dy / 2 - 0.1, "N",
                ha="left", va="center", fontsize=fontsize)
        ax.set_title(NORMALIZATION_TITLES[kind], fontsize=fontsize + 1)
        ax.set_xlim(-2.0, channels + n_count * dx + 1.0)
        ax.set_ylim(-1.9, positions + n_count * dy + 0.2)
        ax.set_aspect("equal")
        ax.axis("off")
    for ax in axes.flat[len(kinds):]:
        ax.axis("off")
    return fig


# --- The computational graph of the BN transform (chapter 2) -------------------------------------

# Node -> its parents, in the order of Algorithm 1: equations eq-bn-mean, eq-bn-var,
# eq-bn-normalise and eq-bn-scale-shift of chapter 2, then a loss computed from y.
BN_GRAPH = {
    "x": (),
    "gamma": (),
    "beta": (),
    "mu": ("x",),
    "var": ("x", "mu"),
    "xhat": ("x", "mu", "var"),
    "y": ("xhat", "gamma", "beta"),
    "loss": ("y",),
}

BN_NODE_LABELS = {
    "x": r"$x_i$",
    "mu": r"$\mu_\mathcal{B}$",
    "var": r"$\sigma^2_\mathcal{B}$",
    "xhat": r"$\hat{x}_i$",
    "gamma": r"$\gamma$",
    "beta": r"$\beta$",
    "y": r"$y_i$",
    "loss": r"$\ell$",
}

# (child, parent) -> the gradient the backward arrow from child to parent carries: the term of
# chapter 2's backward equations (eq-bn-backward) that the chain rule sends along that edge.
BN_BACKWARD_LABELS = {
    ("loss", "y"): r"$\partial \ell / \partial y_i$",
    ("y", "xhat"): r"$\partial \ell / \partial y_i \cdot \gamma$",
    ("y", "gamma"): r"$\Sigma_i\, \partial \ell / \partial y_i \cdot \hat{x}_i$",
    ("y", "beta"): r"$\Sigma_i\, \partial \ell / \partial y_i$",
    ("xhat", "var"): (r"$\Sigma_i\, \partial \ell / \partial \hat{x}_i \cdot (x_i - \mu_\mathcal{B})$"
                      "\n" r"$\cdot\, (-1/2)\, (\sigma^2_\mathcal{B} + \epsilon)^{-3/2}$"),
    ("xhat", "mu"): (r"$\Sigma_i\, \partial \ell / \partial \hat{x}_i$" "\n"
                     r"$\cdot\, (-1) / \sqrt{\sigma^2_\mathcal{B} + \epsilon}$"),
    ("var", "mu"): (r"$\partial \ell / \partial \sigma^2_\mathcal{B}$" "\n"
                    r"$\cdot\, \Sigma_i\, (-2) (x_i - \mu_\mathcal{B}) / m$"),
    ("xhat", "x"): (r"$\partial \ell / \partial \hat{x}_i$" "\n"
                    r"$\cdot\, 1 / \sqrt{\sigma^2_\mathcal{B} + \epsilon}$"),
    ("var", "x"): r"$\partial \ell / \partial \sigma^2_\mathcal{B} \cdot 2 (x_i - \mu_\mathcal{B}) / m$",
    ("mu", "x"): (r"$\partial \ell / \partial \mu_\mathcal{B}$" "\n" r"$\cdot\, 1 / m$"),
}


def bn_node_functions(eps=1e-3, loss=np.sum):
    """Each node of :data:`BN_GRAPH` as a function of exactly its parents, in their order.

    ``x`` has shape ``(m, features)``; the statistics are taken over axis 0, one feature at a
    time. ``loss`` maps ``y`` to the scalar loss.
    """
    return {
        "mu": lambda x: x.mean(axis=0),
        "var": lambda x, mu: ((x - mu) ** 2).mean(axis=0),
        "xhat": lambda x, mu, var: (x - mu) / np.sqrt(var + eps),
        "y": lambda xhat, gamma, beta: gamma * xhat + beta,
        "loss": lambda y: loss(y),
    }


def bn_graph_forward(x, gamma, beta, eps=1e-3, loss=np.sum):
    """Every node's value, computed along :data:`BN_GRAPH` with :func:`bn_node_functions`."""
    values = {"x": np.asarray(x), "gamma": np.asarray(gamma), "beta": np.asarray(beta)}
    functions = bn_node_functions(eps, loss)
    for node, parents in BN_GRAPH.items():
        if parents:
            values[node] = functions[node](*(values[p] for p in parents))
    return values


def bn_backward_terms(values, dl_dy, eps=1e-3):
    """The gradient each backward edge of :data:`BN_GRAPH` carries, by chapter 2's equations.

    Args:
        values: the node values of :func:`bn_graph_forward`.
        dl_dy: the upstream gradient, the same shape as ``x``.

    Returns:
        ``{(child, parent): array}``, the keys of :data:`BN_BACKWARD_LABELS`. A node's gradient
        is the sum of the terms arriving at it, e.g. ``dl/dx`` is the sum of the three terms
        ``(xhat, x)``, ``(var, x)`` and ``(mu, x)``.
    """
    x, mu, var, xhat, gamma = (values[k] for k in ("x", "mu", "var", "xhat", "gamma"))
    m = x.shape[0]
    dl_dy = np.asarray(dl_dy)
    terms = {("loss", "y"): dl_dy,
             ("y", "xhat"): dl_dy * gamma,
             ("y", "gamma"): (dl_dy * xhat).sum(axis=0),
             ("y", "beta"): dl_dy.sum(axis=0)}
    dxhat = terms["y", "xhat"]
    terms["xhat", "var"] = (dxhat * (x - mu)).sum(axis=0) * -0.5 * (var + eps) ** -1.5
    terms["xhat", "mu"] = (dxhat * -1 / np.sqrt(var + eps)).sum(axis=0)
    dvar = terms["xhat", "var"]
    terms["var", "mu"] = dvar * (-2 * (x - mu)).sum(axis=0) / m
    dmu = terms["xhat", "mu"] + terms["var", "mu"]
    terms["xhat", "x"] = dxhat / np.sqrt(var + eps)
    terms["var", "x"] = dvar * 2 * (x - mu) / m
    terms["mu", "x"] = np.broadcast_to(dmu / m, x.shape)
    return terms


# Where the nodes sit (data units; the figure keeps the aspect ratio): the forward pass runs
# down the page, so that the graph is tall and narrow, for a phone's screen.
_GRAPH_POSITIONS = {
    "x": (2.6, 21.0),
    "mu": (5.8, 15.2),
    "var": (9.9, 11.2),
    "xhat": (2.6, 6.2),
    "gamma": (7.4, 4.6),
    "beta": (7.4, 1.0),
    "y": (2.6, 3.0),
    "loss": (2.6, 0.4),
}
# Which side of each forward edge its backward arrow runs on (+1: left of the forward direction).
_BACKWARD_SIDE = {("x", "xhat"): -1, ("x", "var"): 1, ("x", "mu"): -1, ("mu", "var"): -1,
                  ("mu", "xhat"): 1, ("var", "xhat"): 1, ("xhat", "y"): -1, ("gamma", "y"): -1,
                  ("beta", "y"): 1, ("y", "loss"): -1}
# Where each gradient label sits (data units) and how it is aligned there: clear of every arrow
# and of the other labels at the figure's font sizes (tests/test_figure_style.py checks it).
_LABEL_PLACES = {("loss", "y"): (2.1, 1.7, "right"), ("y", "xhat"): (2.1, 4.6, "right"),
                 ("y", "gamma"): (3.4, 4.9, "left"), ("y", "beta"): (4.2, 0.95, "left"),
                 ("xhat", "var"): (7.6, 7.2, "center"), ("xhat", "mu"): (4.6, 10.15, "left"),
                 ("var", "mu"): (6.75, 11.55, "center"), ("xhat", "x"): (2.1, 13.2, "right"),
                 ("var", "x"): (6.4, 18.2, "left"), ("mu", "x"): (4.5, 16.0, "right")}
_GRAPH_LIMITS = ((-0.2, 10.6), (-0.5, 21.9))  # the axes' x and y limits (data units)

FORWARD_COLOUR, BACKWARD_COLOUR = "black", "#c0392b"


def draw_batchnorm_graph(fontsize=12):
    """The computational graph of the BN transform, forward and backward, in one figure.

    Nodes are the quantities of chapter 2; solid black arrows are :data:`BN_GRAPH`'s forward
    edges (gid ``"forward <parent> <child>"``), dashed red arrows the backward flow of the
    gradient (gid ``"backward <child> <parent>"``), labelled with :data:`BN_BACKWARD_LABELS`
    (gid ``"label <child> <parent>"``). Each node is a text with gid ``"node <name>"``.

    Returns:
        The ``matplotlib.figure.Figure``, :data:`BOOK_WIDTH` inches wide.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch

    (x0, x1), (y0, y1) = _GRAPH_LIMITS
    fig, ax = plt.subplots(figsize=(BOOK_WIDTH, BOOK_WIDTH * (y1 - y0) / (x1 - x0)), layout="constrained")
    node_box = dict(boxstyle="circle,pad=0.35", facecolor="#f4f4f4", edgecolor="0.3", lw=1.0)
    for node, (px, py) in _GRAPH_POSITIONS.items():
        ax.text(px, py, BN_NODE_LABELS[node], ha="center", va="center", fontsize=fontsize + 3,
                bbox=node_box, gid=f"node {node}", zorder=3)
    shrink = 17  # points between an arrow's end and its node's centre

    for child, parents in BN_GRAPH.items():
        for parent in parents:
            start, end = np.array(_GRAPH_POSITIONS[parent]), np.array(_GRAPH_POSITIONS[child])
            ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14,
                                         color=FORWARD_COLOUR, lw=1.4, shrinkA=shrink, shrinkB=shrink,
                                         gid=f"forward {parent} {child}", zorder=2))
            direction = (end - start) / np.linalg.norm(end - start)
            normal = np.array([-direction[1], direction[0]]) * _BACKWARD_SIDE[parent, child]
            offset = 0.25 * normal
            ax.add_patch(FancyArrowPatch(end + offset, start + offset, arrowstyle="-|>", mutation_scale=14,
                                         color=BACKWARD_COLOUR, lw=1.4, linestyle=(0, (4, 3)),
                                         shrinkA=shrink, shrinkB=shrink,
                                         gid=f"backward {child} {parent}", zorder=2))
            lx, ly, ha = _LABEL_PLACES[child, parent]
            ax.text(lx, ly, BN_BACKWARD_LABELS[child, parent], ha=ha, va="center", fontsize=fontsize,
                    color=BACKWARD_COLOUR, gid=f"label {child} {parent}", zorder=4,
                    bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none", alpha=0.9))
    ax.legend(handles=[Line2D([], [], color=FORWARD_COLOUR, lw=1.4, label="forward: the value"),
                       Line2D([], [], color=BACKWARD_COLOUR, lw=1.4, ls=(0, (4, 3)),
                              label=r"backward: $\partial \ell / \partial \cdot$ it carries")],
              loc="upper right", fontsize=fontsize, frameon=False)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig
