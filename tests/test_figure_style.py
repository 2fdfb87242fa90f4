"""Figures stay legible at a phone's width (issue 17): no text smaller than 10 CSS px at 390 px.

The oracle is the pixel arithmetic of the page, not the style's own numbers. A notebook's figure
reaches the page as the PNG that the inline backend writes (``fig.dpi``, ``bbox_inches="tight"``);
Jupyter Book shows it at its pixel width capped at the content width, 342 CSS px on a 390-px
phone (measured in Chromium with the phone emulated). So a text of ``h`` pixels in that PNG shows
at ``h * min(1, 342 / png_width)`` CSS px. The tests draw a figure, write it as the inline
backend does, read the PNG's width back, and measure every text matplotlib actually drew (its
window extent, per line, unrotated) at that scale; each must be at least 10 px, and so must its
font size.

(a) A representative figure of the book drawn with :func:`course_lib.diagrams.use_book_style`,
the book's two diagrams, and, as the control that shows the check can fail, the figure the book
drew before the style (6.4 inches, matplotlib's default 10-point ticks).
(b) Every chapter notebook that draws applies the style in its imports cell and passes no font
size below :data:`~course_lib.diagrams.MIN_FONT_SIZE` and no figure wider than
:data:`~course_lib.diagrams.BOOK_WIDTH`.
"""

import ast
import io
import itertools
import json
import re
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from PIL import Image  # noqa: E402

from course_lib import diagrams  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
CONTENT_WIDTH = 342  # CSS px: Jupyter Book's content column on a 390-px-wide phone (measured)
MIN_CSS_PX = 10      # the smallest text a figure may show there
INLINE_DPI = 100     # matplotlib's figure.dpi, at which the inline backend writes a figure


@pytest.fixture(autouse=True)
def _restore_rcparams():
    with matplotlib.rc_context():
        yield
    plt.close("all")


def phone_text_sizes(fig):
    """``[(text, line height, font size)]`` in CSS px on the phone, for every text drawn."""
    drawn = []
    original = Text.draw

    def recording_draw(self, renderer):
        if self.get_visible() and self.get_text().strip():
            drawn.append(self)
        return original(self, renderer)

    Text.draw = recording_draw
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight")  # as the inline backend writes it
    finally:
        Text.draw = original
    buffer.seek(0)
    png_width = Image.open(buffer).size[0]
    scale = min(1.0, CONTENT_WIDTH / png_width)
    renderer = fig.canvas.get_renderer()
    sizes = []
    for text in dict.fromkeys(drawn):
        rotation = text.get_rotation()
        text.set_rotation(0)
        height = text.get_window_extent(renderer).height / (text.get_text().count("\n") + 1)
        text.set_rotation(rotation)
        font_px = text.get_fontsize() * fig.dpi / 72
        sizes.append((text.get_text(), height * scale, font_px * scale))
    return sizes


def too_small(fig):
    sizes = phone_text_sizes(fig)
    assert sizes, "no text was drawn"
    return [(t, round(h, 1), round(f, 1)) for t, h, f in sizes if h < MIN_CSS_PX or f < MIN_CSS_PX]


def representative_figure():
    """Two stacked panels as the chapters draw them: titles, labels, ticks, legends, a note."""
    rng = np.random.default_rng(0)
    steps = np.arange(0, 5000, 50)
    fig, axes = plt.subplots(2, 1, figsize=(diagrams.BOOK_WIDTH, 5.6), sharex=True, layout="constrained")
    for label in ("without BN, learning rate 0.5", "with BN, learning rate 2.5"):
        curve = 1 - np.exp(-steps / rng.uniform(300, 900))
        for ax in axes:
            ax.plot(steps, curve, label=label)
    axes[0].set(ylabel="test accuracy", title="(a) mean of 5 seeds; band: lowest to highest seed")
    axes[1].set(ylabel="test accuracy", xlabel="training step", ylim=(0.85, 1.0), title="zoomed in")
    axes[1].annotate("early checkpoint", (500, 0.9), (1500, 0.88), arrowprops=dict(arrowstyle="->"))
    axes[0].legend(loc="lower right")
    fig.legend(["a", "b"], loc="outside lower center", ncols=2)
    return fig


# --- (a) Rendered sizes ---------------------------------------------------------------------

def test_the_style_is_the_documented_one():
    diagrams.use_book_style()
    for key, value in diagrams.BOOK_STYLE.items():
        assert plt.rcParams[key] == (list(value) if isinstance(value, tuple) else value), key
    assert plt.rcParams["figure.dpi"] == INLINE_DPI
    sizes = [v for k, v in diagrams.BOOK_STYLE.items() if k.endswith(("size", "fontsize")) and k != "figure.figsize"]
    assert min(sizes) == diagrams.MIN_FONT_SIZE


def test_a_figure_in_the_book_style_is_legible_at_390_px():
    diagrams.use_book_style()
    fig = representative_figure()
    assert fig.get_size_inches()[0] == diagrams.BOOK_WIDTH
    assert too_small(fig) == []


@pytest.mark.parametrize("draw", [diagrams.draw_normalization_axes, diagrams.draw_batchnorm_graph],
                         ids=["normalization_axes", "batchnorm_graph"])
@pytest.mark.parametrize("styled", [True, False], ids=["book_style", "matplotlib_defaults"])
def test_the_diagrams_are_legible_at_390_px(draw, styled):
    # The diagrams set their own sizes: they must pass with or without the book's style.
    diagrams.use_book_style() if styled else plt.rcdefaults()
    fig = draw()
    assert fig.get_size_inches()[0] <= diagrams.BOOK_WIDTH
    assert too_small(fig) == []


def test_the_check_fails_on_the_figures_the_book_drew_before():
    # The control: 6.4 inches wide with matplotlib's 10-point ticks and legend showed its smallest
    # text at about 7.3 CSS px on the phone, so the oracle must reject it.
    plt.rcdefaults()
    fig = representative_figure()
    fig.set_size_inches(6.4, 5.6)
    small = too_small(fig)
    assert small and min(f for _, _, f in small) < 8, small
    assert {"training step", "test accuracy", "with BN, learning rate 2.5"} <= {t for t, _, _ in small}
    # ... and a text set below the style's minimum is caught even in a figure of the right width.
    diagrams.use_book_style()
    fig = representative_figure()
    fig.axes[0].legend(loc="lower right", fontsize=9)
    assert {t for t, _, _ in too_small(fig)} == {"without BN, learning rate 0.5", "with BN, learning rate 2.5"}


def test_no_gradient_label_of_the_bn_graph_touches_an_arrow_or_another_text():
    # Legible also means unobstructed: each label of the graph sits clear of every arrow (a
    # few pixels of margin) and of the nodes, the legend and the other labels.
    fig = diagrams.draw_batchnorm_graph()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    boxes = {t.get_gid(): (t.get_bbox_patch() if t.get_gid().startswith("node ") else t).get_window_extent(renderer)
             for t in ax.texts}
    boxes["legend"] = ax.get_legend().get_window_extent(renderer)
    overlaps = [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes.items(), 2)
                if box_a.overlaps(box_b)]
    assert overlaps == []
    crossings = []
    for arrow in ax.patches:
        if isinstance(arrow, FancyArrowPatch):
            paths, _ = arrow._get_path_in_displaycoord()
            points = np.concatenate([p.interpolated(100).vertices for p in paths])
            crossings += [(arrow.get_gid(), gid) for gid, box in boxes.items()
                          if gid.startswith("label ") and box.padded(3).count_contains(points)]
    assert crossings == []
    frame = ax.get_window_extent(renderer)
    assert all(frame.x0 - 1 <= b.x0 and b.x1 <= frame.x1 + 1 for b in boxes.values()), "a text leaves the figure"


# --- (b) The chapters -----------------------------------------------------------------------

FONT_KEYWORDS = {"fontsize", "labelsize", "titlesize", "title_fontsize"}
TEXT_CALLS = {"text", "annotate", "set_title", "set_xlabel", "set_ylabel", "suptitle", "supxlabel",
              "supylabel", "legend", "figtext", "set_label_text", "FontProperties"}
NAMED_SIZES = {name: scale for name, scale in matplotlib.font_manager.font_scalings.items() if name}


def code_of(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    for index, cell in enumerate(cells):
        if cell["cell_type"] == "code":
            source = "".join(cell["source"])
            # IPython magics and shell lines are not Python: blank them, keeping line numbers.
            yield index, "\n".join("" if line.lstrip().startswith(("%", "!")) else line
                                   for line in source.split("\n"))


def font_sizes(tree):
    """``(line, where, size in points)`` for every font size a cell sets; named sizes relative to
    the style's ``font.size``."""
    found = []

    def points(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.Constant) and node.value in NAMED_SIZES:
            return NAMED_SIZES[node.value] * diagrams.MIN_FONT_SIZE
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            for keyword in node.keywords:
                if keyword.arg in FONT_KEYWORDS or (keyword.arg == "size" and name in TEXT_CALLS):
                    size = points(keyword.value)
                    if size is not None:
                        found.append((node.lineno, f"{name}({keyword.arg}=...)", size))
        elif isinstance(node, ast.Dict):  # rcParams.update({...}), prop={"size": ...}
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and isinstance(key.value, str) and \
                        re.fullmatch(r"(.*\.)?(size|\w*fontsize|\w*labelsize|\w*titlesize)", key.value):
                    size = points(value)
                    if size is not None:
                        found.append((node.lineno, key.value, size))
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript):  # rcParams[...] =
            key = node.targets[0].slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str) and "size" in key.value:
                size = points(node.value)
                if size is not None:
                    found.append((node.lineno, key.value, size))
    return sorted(found)


def figure_widths(tree):
    """``(line, width in inches)`` for every ``figsize=(w, h)`` and ``set_size_inches(w, h)``."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        for keyword in node.keywords:
            if keyword.arg == "figsize" and isinstance(keyword.value, ast.Tuple):
                width = keyword.value.elts[0]
                if isinstance(width, ast.Constant):
                    found.append((node.lineno, width.value))
        if getattr(node.func, "attr", "") == "set_size_inches" and node.args and isinstance(node.args[0], ast.Constant):
            found.append((node.lineno, node.args[0].value))
    return sorted(found)


def draws(notebook):
    return any("matplotlib" in source for _, source in code_of(notebook))


def test_the_static_check_sees_what_it_must():
    tree = ast.parse('ax.legend(fontsize=10)\nax.text(0, 0, "a", size="small")\nrng.normal(size=3)\n'
                     'plt.rcParams.update({"font.size": 11})\nplt.rcParams["legend.fontsize"] = 9\n'
                     'ax.tick_params(labelsize=12)\nfig = plt.figure(figsize=(6.4, 3))\n')
    assert [s for _, _, s in font_sizes(tree)] == pytest.approx([10, 10, 11, 9, 12], abs=0.01)
    assert [w for _, w in figure_widths(tree)] == [6.4]


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_draws_in_the_book_style(notebook):
    if not draws(notebook):
        pytest.skip("draws no figure")
    cells = list(code_of(notebook))
    imports = next(source for _, source in cells if re.search(r"^import matplotlib", source, re.M))
    assert re.search(r"^(diagrams\.)?use_book_style\(\)", imports, re.M), \
        "the cell that imports matplotlib must call use_book_style()"
    problems = []
    for index, source in cells:
        tree = ast.parse(source)
        problems += [f"cell {index} line {line}: {where} = {size:g} pt" for line, where, size in font_sizes(tree)
                     if size < diagrams.MIN_FONT_SIZE]
        problems += [f"cell {index} line {line}: figsize width {width:g} in" for line, width in figure_widths(tree)
                     if width > diagrams.BOOK_WIDTH]
    assert problems == []
