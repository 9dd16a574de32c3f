"""plot: a picture of a diff, so a person sees at a glance which layers changed.

One PNG per :class:`~wvc.ops.diff.DiffResult`. The left panel is a heatmap:
one row per layer, one column per kind of tensor within a layer
(``self_attn.q_proj.weight``), each cell coloured by the tensor's relative
change ‖B - A‖ / ‖A‖ on a log scale. Unchanged tensors are grey, kinds a
layer does not have are blank, and tensors that were added, removed,
reshaped or retyped are hatched; an infinite relative change (A all zeros)
and NaN have colours of their own. The right panel is one bar per layer: the
relative change of the layer's modified tensors taken together,
√(Σ‖B - A‖² / Σ‖A‖²), on the same colour scale.

Layers are found from tensor names (:func:`split_layer`): a name is cut after
its first numeric component (``model.layers.12.mlp.up_proj.weight`` is
``model.layers.12`` + ``mlp.up_proj.weight``); a name without one belongs to
its module (``lm_head.weight`` is ``lm_head`` + ``weight``). Numbered layers
come first in natural order (``layers.2`` before ``layers.10``), the other
groups after them in name order.

matplotlib is an optional extra (``pip install 'wvc[plot]'``), imported only
when a plot is drawn. Only the object-oriented API is used (a ``Figure`` with
an Agg canvas), so pyplot and the process-wide backend are never touched. The
PNG is written to a temporary file next to the target and renamed into place:
the target is either the complete new picture or left as it was.
"""

from __future__ import annotations

import math
import os
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .errors import InputError, PathNotFoundError
from .ops.diff import DiffResult, TensorDiff

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap, LogNorm
    from matplotlib.figure import Figure

__all__ = ["PlotResult", "group_by_layer", "layer_sort_key", "plot_diff", "split_layer"]

MISSING_MATPLOTLIB = "--plot needs matplotlib: pip install 'wvc[plot]'"
TOP_LEVEL = "(top level)"  # how the group of one-component names ("" key) is labelled

_DIGITS = re.compile(r"[0-9]+")
_DIGIT_RUNS = re.compile(r"([0-9]+)")  # split() keeps the runs
_DPI = 120
_MAX_INCHES = 250.0  # Agg refuses images wider or taller than 2**16 pixels
_CMAP = "viridis"
_ABSENT = "#ffffff"
_UNCHANGED = "#dcdcdc"
_INF = "#d62728"  # red: not in viridis
_NAN = "#e377c2"  # pink: not in viridis

Cell = Literal[
    "value", "inf", "nan", "no_norm", "unchanged", "added", "removed", "reshaped", "absent"
]
# (label, face colour, hatch, hatch colour) of each cell kind that is not a colour-scale value.
_STYLES: dict[str, tuple[str, str, str | None, str]] = {
    "unchanged": ("unchanged", _UNCHANGED, None, _UNCHANGED),
    "inf": ("modified, ‖A‖ = 0 (relative change ∞)", _INF, None, _INF),
    "nan": ("modified, NaN", _NAN, None, _NAN),
    "no_norm": ("modified, no relative change (integers, quantized)", _UNCHANGED, "...", "#404040"),
    "added": ("added", _ABSENT, "++", "#2ca02c"),
    "removed": ("removed", _ABSENT, "xx", "#404040"),
    "reshaped": ("reshaped or retyped", _ABSENT, "////", "#1f77b4"),
}  # fmt: skip


@dataclass(frozen=True)
class PlotResult:
    """What :func:`plot_diff` drew."""

    path: Path  # the PNG written
    layers: tuple[str, ...]  # the heatmap's rows, top to bottom ("" is the top-level group)
    tensors: int  # modified tensors drawn (their cells show the relative change)


# --- grouping ----------------------------------------------------------------------


def split_layer(name: str) -> tuple[str, str]:
    """``(layer, kind)`` of a tensor name.

    The layer is the name up to and including its first numeric component
    (``model.layers.12.self_attn.q_proj.weight`` -> ``model.layers.12``,
    ``self_attn.q_proj.weight``). A name without a numeric component belongs to
    its module, the name without its last component (``lm_head.weight`` ->
    ``lm_head``, ``weight``); a one-component name to the top-level group ``""``.
    """
    parts = name.split(".")
    for i, part in enumerate(parts):
        if _DIGITS.fullmatch(part):
            return ".".join(parts[: i + 1]), ".".join(parts[i + 1 :])
    return ".".join(parts[:-1]), parts[-1]


def _natural(s: str) -> tuple[str | int, ...]:
    """Sort key that compares runs of digits as numbers (``h2`` < ``h10``)."""
    # split() alternates text and digits (starting with text), so keys compare position-wise.
    return tuple(int(t) if i % 2 else t for i, t in enumerate(_DIGIT_RUNS.split(s)))


def _is_numbered(layer: str) -> bool:
    return any(_DIGITS.fullmatch(p) for p in layer.split("."))


def layer_sort_key(layer: str) -> tuple[bool, tuple[str | int, ...]]:
    """Numbered layers first, in natural order; then the other groups, by name."""
    return (not _is_numbered(layer), _natural(layer))


def group_by_layer(tensors: Iterable[TensorDiff]) -> dict[str, dict[str, TensorDiff]]:
    """``{layer: {kind: tensor}}``, layers ordered by :func:`layer_sort_key`, kinds naturally."""
    groups: dict[str, dict[str, TensorDiff]] = {}
    for t in tensors:
        layer, kind = split_layer(t.name)
        groups.setdefault(layer, {})[kind] = t
    return {
        layer: {k: groups[layer][k] for k in sorted(groups[layer], key=_natural)}
        for layer in sorted(groups, key=layer_sort_key)
    }


def _columns(groups: Mapping[str, Mapping[str, TensorDiff]]) -> list[str]:
    """Tensor kinds: those of numbered layers first (they line up), then the rest."""
    kinds: dict[str, bool] = {}
    for layer, members in groups.items():
        numbered = _is_numbered(layer)
        for kind in members:
            kinds[kind] = kinds.get(kind, False) or numbered
    return sorted(kinds, key=lambda k: (not kinds[k], _natural(k)))


# --- cells -------------------------------------------------------------------------


def _cell(t: TensorDiff | None) -> tuple[Cell, float]:
    """How one tensor is drawn, and its relative change when that is a colour-scale value."""
    if t is None:
        return "absent", math.nan
    if t.status in ("added", "removed", "unchanged"):
        return t.status, math.nan
    if t.status in ("reshaped", "retyped"):
        return "reshaped", math.nan
    rel = t.stats.relative if t.stats is not None else None
    if rel is None or rel == 0:  # not a float tensor, or only the bits changed (-0.0, NaN payloads)
        return "no_norm", math.nan
    if math.isnan(rel):
        return "nan", math.nan
    if math.isinf(rel):
        return "inf", math.inf
    return "value", rel


def _layer_change(members: Iterable[TensorDiff]) -> float | None:
    """√(Σ‖B - A‖² / Σ‖A‖²) over a layer's modified float tensors (None if it has none)."""
    delta = base = 0.0
    seen = False
    for t in members:
        s = t.stats
        if t.status != "modified" or s is None or s.l2 is None or s.relative is None:
            continue
        if math.isnan(s.l2) or math.isnan(s.relative):
            return math.nan
        if s.relative == 0:
            continue
        seen = True
        delta += s.l2 * s.l2
        if math.isfinite(s.relative):
            base += (s.l2 / s.relative) ** 2
    if not seen:
        return None
    if base == 0:
        return math.inf
    return math.sqrt(delta / base)


# --- drawing -----------------------------------------------------------------------


def plot_diff(
    result: DiffResult, path: str | os.PathLike[str], *, title: str | None = None
) -> PlotResult:
    """Draw the relative change of every modified tensor of ``result``, by layer, as a PNG.

    ``title`` replaces the default headline (``wvc diff A → B``). A diff with no
    changes still writes a picture, saying so. Raises :class:`InputError` if
    matplotlib is not installed or ``path`` is a directory, and
    :class:`PathNotFoundError` if its directory does not exist.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError(MISSING_MATPLOTLIB) from None

    target = Path(os.fspath(path))
    if target.is_dir():
        raise InputError(f"{target}: is a directory, not a file to write the plot to", str(target))
    if not target.parent.is_dir():
        raise PathNotFoundError(str(target.parent), "directory not found")

    headline = title if title is not None else f"wvc diff {_short(result.a)} → {_short(result.b)}"
    heading = f"{headline}\n{_summary(result)}"
    if result.differs:
        fig, layers, drawn = _heatmap(Figure, result, heading)
    else:
        fig, layers, drawn = _nothing(Figure, heading), (), 0
    FigureCanvasAgg(fig)
    _write_png(fig, target)
    return PlotResult(target, layers, drawn)


def _short(side: str) -> str:
    """A commit id shortened like ``wvc log``; a long path keeps its end."""
    if re.fullmatch(r"[0-9a-f]{16,}", side):
        return side[:12]
    return side if len(side) <= 48 else "…" + side[-47:]


def _summary(result: DiffResult) -> str:
    counts = dict.fromkeys(("modified", "added", "removed", "reshaped", "retyped", "unchanged"), 0)
    for t in result.tensors:
        counts[t.status] += 1
    return ", ".join(f"{n} {status}" for status, n in counts.items() if n) or "no tensors"


def _nothing(figure: type[Figure], heading: str) -> Figure:
    fig = figure(figsize=(6.0, 2.5), dpi=_DPI, layout="constrained")
    fig.suptitle(heading, fontsize=10)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, "no modified tensors", ha="center", va="center", fontsize=14, color="#555555")
    return fig


def _heatmap(
    figure: type[Figure], result: DiffResult, heading: str
) -> tuple[Figure, tuple[str, ...], int]:
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm

    groups = group_by_layer(result.tensors)
    layers = list(groups)
    columns = _columns(groups)
    n_rows, n_cols = len(layers), len(columns)
    cells = [[_cell(groups[layer].get(kind)) for kind in columns] for layer in layers]
    bars = [_layer_change(groups[layer].values()) for layer in layers]

    values = [v for row in cells for c, v in row if c == "value"]
    values += [b for b in bars if b is not None and math.isfinite(b)]
    lo, hi = (min(values), max(values)) if values else (1e-3, 1.0)
    if hi <= lo * 1.01:  # one value (or nearly): a decade around it
        lo, hi = lo / math.sqrt(10), hi * math.sqrt(10)
    norm = LogNorm(vmin=lo, vmax=hi)
    cmap = colormaps[_CMAP]
    mappable = ScalarMappable(norm=norm, cmap=cmap)

    # Sizes in inches: rows and labels shrink as layers are added, down to a legible floor.
    row_h = min(0.3, max(0.12, 6.0 / n_rows))
    col_w = min(0.5, max(0.22, 8.0 / n_cols))
    y_font = min(9.0, max(4.5, row_h * 72 * 0.65))
    x_font = min(9.0, max(4.5, col_w * 72 * 0.55))
    row_labels = [layer or TOP_LEVEL for layer in layers]
    longest_row = max(len(s) for s in row_labels)
    longest_col = max(len(s) for s in columns)
    used = {c for row in cells for c, _ in row} | ({"inf"} if math.inf in bars else set())
    legend_rows = math.ceil(len(used & _STYLES.keys()) / 2)
    label_w = longest_row * y_font * 0.6 / 72 + 0.2
    top = 1.4  # headline, summary, colour bar
    bottom = longest_col * x_font * 0.6 / 72 * 0.87 + 0.8 + 0.22 * legend_rows  # labels at 60°
    panels_h = max(n_rows * row_h, 3.5 - top - bottom)
    width = min(_MAX_INCHES, max(7.0, label_w + n_cols * col_w + 2.4))
    height = min(_MAX_INCHES, top + panels_h + bottom)
    panels_w = width - label_w - 0.3

    fig = figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    fig.suptitle(heading, fontsize=10)
    grid = fig.add_gridspec(1, 2, width_ratios=[n_cols * col_w, 1.8])
    heat = fig.add_subplot(grid[0, 0])
    bar = fig.add_subplot(grid[0, 1], sharey=heat)
    if values:  # a colour bar 0.14 in thick across both panels (none when no cell has a value)
        colorbar = fig.colorbar(
            mappable,
            ax=[heat, bar],
            location="top",
            fraction=min(0.15, 0.14 / panels_h),
            pad=min(0.05, 0.08 / panels_h),
            aspect=panels_w / 0.14,
        )
        colorbar.set_label("relative change ‖B - A‖ / ‖A‖ (log scale)", fontsize=8)
        colorbar.ax.tick_params(which="both", labelsize=7)

    drawn = _cells(heat, cells, cmap, norm)
    _grid_lines(heat, n_rows, n_cols)
    heat.set_yticks(range(n_rows), row_labels, fontsize=y_font)
    heat.set_xticks(range(n_cols), columns, fontsize=x_font)
    heat.tick_params(axis="x", labelrotation=60, length=2)
    heat.tick_params(axis="y", length=2)
    for label in heat.get_xticklabels():
        label.set_horizontalalignment("right")
        label.set_rotation_mode("anchor")
    heat.set_xlim(-0.5, n_cols - 0.5)
    heat.set_ylim(n_rows - 0.5, -0.5)

    # Where the numbered layers end and the other groups begin, rows and columns alike.
    split_row = sum(_is_numbered(layer) for layer in layers)
    numbered_kinds = {k for layer in layers if _is_numbered(layer) for k in groups[layer]}
    split_col = sum(k in numbered_kinds for k in columns)
    for ax in (heat, bar):
        if 0 < split_row < n_rows:
            ax.axhline(split_row - 0.5, color="#333333", linewidth=0.8)
    if 0 < split_col < n_cols:
        heat.axvline(split_col - 0.5, color="#333333", linewidth=0.8)

    _bars(bar, bars, norm, cmap)

    _legend(fig, [k for k in _STYLES if k in used])
    return fig, tuple(layers), drawn


def _cells(ax: Axes, cells: list[list[tuple[Cell, float]]], cmap: Colormap, norm: LogNorm) -> int:
    """Solid fills as one image, hatched cells as patches on top; the modified tensors drawn."""
    import numpy as np
    from matplotlib.collections import PatchCollection
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Rectangle

    rgba = np.ones((len(cells), len(cells[0]), 4))
    hatched: dict[str, list[Rectangle]] = {}
    drawn = 0
    for i, row in enumerate(cells):
        for j, (cell, value) in enumerate(row):
            if cell in ("value", "inf", "nan", "no_norm"):
                drawn += 1
            if cell == "value":
                rgba[i, j] = cmap(norm(value))
            elif cell != "absent":
                _, face, hatch, _ = _STYLES[cell]
                rgba[i, j] = to_rgba(face)
                if hatch:
                    hatched.setdefault(cell, []).append(Rectangle((j - 0.5, i - 0.5), 1, 1))
    ax.imshow(rgba, aspect="auto", interpolation="nearest")
    for kind, rects in hatched.items():
        _, _, hatch, ink = _STYLES[kind]
        ax.add_collection(
            PatchCollection(rects, facecolor="none", edgecolor=ink, linewidth=0, hatch=hatch)
        )
    return drawn


def _legend(fig: Figure, kinds: list[str]) -> None:
    """A key to the cells that are not on the colour scale, under the panels."""
    from matplotlib.patches import Patch

    if not kinds:
        return
    handles = []
    for k in kinds:
        text, face, hatch, ink = _STYLES[k]
        handles.append(Patch(facecolor=face, edgecolor=ink, hatch=hatch, label=text))
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(2, len(handles)),
        fontsize=7,
        frameon=False,
    )


def _bars(ax: Axes, bars: list[float | None], norm: LogNorm, cmap: Colormap) -> None:
    """One bar per layer from the left edge of the colour scale, coloured like the heatmap."""
    lo, hi = float(norm.vmin or 1e-3), float(norm.vmax or 1.0)
    left, right = lo / 2, hi * 2  # room for bars at both ends of the scale
    ax.set_xscale("log")
    ax.set_xlim(left, right)
    if all(v is None for v in bars):  # only added, removed or reshaped tensors
        ax.set_axis_off()
        return
    for i, v in enumerate(bars):
        if v is None:
            continue
        if math.isnan(v):
            ax.barh(i, right - left, left=left, height=0.7, color=_NAN)
        elif math.isinf(v):
            ax.barh(i, right - left, left=left, height=0.7, color=_INF)
        else:
            ax.barh(i, v - left, left=left, height=0.7, color=cmap(norm(v)))
    ax.tick_params(axis="y", left=False, labelleft=False)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("layer: √(Σ‖B - A‖² / Σ‖A‖²)", fontsize=7)
    ax.grid(axis="x", which="major", color="#e6e6e6", linewidth=0.5)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _grid_lines(ax: Axes, n_rows: int, n_cols: int) -> None:
    """Thin white lines between cells, so neighbours with one colour stay countable."""
    ax.set_xticks([j - 0.5 for j in range(1, n_cols)], minor=True)
    ax.set_yticks([i - 0.5 for i in range(1, n_rows)], minor=True)
    ax.grid(which="minor", color="white", linewidth=0.4 if n_rows <= 60 else 0.2)
    ax.tick_params(which="minor", length=0)


def _write_png(fig: Figure, target: Path) -> None:
    """Render into a temporary file beside ``target``, then rename it into place."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as f:
            fig.savefig(f, format="png", dpi=_DPI)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
