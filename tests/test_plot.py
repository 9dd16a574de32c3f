"""wvc.plot: layer grouping, the PNG it writes, and its failure modes."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wvc.errors import InputError, PathNotFoundError
from wvc.ops.diff import DiffResult, Status, TensorDiff, TensorStats
from wvc.plot import (
    MISSING_MATPLOTLIB,
    PlotResult,
    group_by_layer,
    layer_sort_key,
    plot_diff,
    split_layer,
)
from wvc.repository import Repository

mpl_image = pytest.importorskip("matplotlib.image")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KINDS = ("self_attn.q_proj.weight", "self_attn.v_proj.weight", "mlp.up_proj.weight")


# --- helpers ---------------------------------------------------------------------


def modified(name: str, relative: float, l2: float = 1.0) -> TensorDiff:
    stats = TensorStats(16, 16, 1.0, l2, relative, l2, 0.5)
    return TensorDiff(name, "modified", "F32", "F32", (4, 4), (4, 4), 64, 64, stats)


def other(name: str, status: Status) -> TensorDiff:
    a = None if status == "added" else (4, 4)
    b = None if status == "removed" else ((2, 8) if status == "reshaped" else (4, 4))
    return TensorDiff(
        name,
        status,
        "F32" if a else None,
        "F32" if b else None,
        a,
        b,
        64 if a else 0,
        64 if b else 0,
    )


def result(tensors: list[TensorDiff]) -> DiffResult:
    return DiffResult("a" * 64, "b" * 64, tuple(sorted(tensors, key=lambda t: t.name)))


def llama(n_layers: int) -> DiffResult:
    """A fine-tune of an n-layer llama-like model that left the first quarter alone."""
    out = [other("model.embed_tokens.weight", "unchanged"), modified("lm_head.weight", 1e-3)]
    for i in range(n_layers):
        for k in KINDS:
            name = f"model.layers.{i}.{k}"
            out.append(other(name, "unchanged") if i < n_layers // 4 else modified(name, 1e-4 * i))
    return result(out)


def assert_png(path: Path) -> tuple[int, int]:
    """A complete PNG of a sane size; its (height, width) in pixels."""
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = mpl_image.imread(path)
    height, width = img.shape[:2]
    assert 200 <= height <= 1 << 16
    assert 200 <= width <= 1 << 16
    assert img.shape[2] in (3, 4)
    return height, width


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# --- grouping ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "layer", "kind"),
    [
        ("model.layers.12.self_attn.q_proj.weight", "model.layers.12", "self_attn.q_proj.weight"),
        ("model.layers.0.input_layernorm.weight", "model.layers.0", "input_layernorm.weight"),
        ("transformer.h.3.attn.c_attn.bias", "transformer.h.3", "attn.c_attn.bias"),
        # only the first numeric component cuts: experts stay inside their layer
        ("model.layers.2.mlp.experts.7.w1.weight", "model.layers.2", "mlp.experts.7.w1.weight"),
        ("0.weight", "0", "weight"),  # nn.Sequential
        ("lm_head.weight", "lm_head", "weight"),
        ("model.embed_tokens.weight", "model.embed_tokens", "weight"),
        ("model.norm.weight", "model.norm", "weight"),
        ("h2.weight", "h2", "weight"),  # digits inside a component are not a layer number
        ("bias", "", "bias"),  # top level
        ("params.3", "params.3", ""),
    ],
)
def test_split_layer(name: str, layer: str, kind: str) -> None:
    assert split_layer(name) == (layer, kind)


def test_layers_in_natural_order_numbered_first() -> None:
    names = [
        "lm_head.weight",
        "model.embed_tokens.weight",
        "model.layers.10.mlp.up_proj.weight",
        "model.layers.2.mlp.up_proj.weight",
        "model.layers.2.self_attn.q_proj.weight",
        "model.layers.1.mlp.up_proj.weight",
        "model.norm.weight",
        "bias",
        "h10.weight",
        "h9.weight",
    ]
    groups = group_by_layer(other(n, "unchanged") for n in names)
    assert list(groups) == [
        "model.layers.1",
        "model.layers.2",
        "model.layers.10",
        "",
        "h9",
        "h10",
        "lm_head",
        "model.embed_tokens",
        "model.norm",
    ]
    assert list(groups["model.layers.2"]) == ["mlp.up_proj.weight", "self_attn.q_proj.weight"]
    assert groups["model.layers.2"]["mlp.up_proj.weight"].name == names[3]


def test_several_numbered_stacks_stay_apart() -> None:
    names = [f"{side}.block.{i}.w" for side in ("encoder", "decoder") for i in (11, 1, 2)]
    keys = sorted({split_layer(n)[0] for n in names}, key=layer_sort_key)
    assert keys == [
        "decoder.block.1",
        "decoder.block.2",
        "decoder.block.11",
        "encoder.block.1",
        "encoder.block.2",
        "encoder.block.11",
    ]


@given(st.lists(st.from_regex(r"[a-z0-9_]{1,4}(\.[a-z0-9_]{1,4}){0,4}", fullmatch=True)))
def test_grouping_covers_every_name_once(names: list[str]) -> None:
    names = sorted(set(names))
    groups = group_by_layer(other(n, "unchanged") for n in names)  # never a TypeError
    seen = [t.name for members in groups.values() for t in members.values()]
    assert sorted(seen) == names
    for layer, members in groups.items():
        for kind, t in members.items():
            assert ".".join(p for p in (layer, kind) if p) == t.name


# --- the picture -------------------------------------------------------------------


def test_plot_llama_diff(tmp_path: Path) -> None:
    out = tmp_path / "diff.png"
    res = plot_diff(llama(24), out)
    assert isinstance(res, PlotResult)
    assert res.path == out
    assert res.layers == (
        *(f"model.layers.{i}" for i in range(24)),
        "lm_head",
        "model.embed_tokens",
    )
    assert res.tensors == 18 * len(KINDS) + 1
    assert_png(out)
    assert leftovers(tmp_path) == []


def test_figure_grows_with_layers(tmp_path: Path) -> None:
    small, _ = assert_png(plot_diff(llama(8), tmp_path / "small.png").path)
    large, _ = assert_png(plot_diff(llama(100), tmp_path / "large.png").path)
    assert large > 2 * small


def test_every_kind_of_cell(tmp_path: Path) -> None:
    int_stats = TensorStats(4, 1, 0.25)  # an integer tensor: no relative change
    tensors = [
        modified("layers.0.a", 1e-3),
        modified("layers.0.b", math.inf),  # ||A|| = 0
        modified("layers.0.c", math.nan),
        modified("layers.1.a", 0.0, l2=0.0),  # only bits changed (-0.0)
        TensorDiff("layers.1.b", "modified", "I64", "I64", (4,), (4,), 32, 32, int_stats),
        other("layers.1.c", "unchanged"),
        other("layers.2.a", "added"),
        other("layers.2.b", "removed"),
        other("layers.2.c", "reshaped"),
        other("layers.3.a", "retyped"),
        modified("layers.4.a", math.inf),  # the whole layer's relative change is infinite
    ]
    res = plot_diff(result(tensors), tmp_path / "cells.png", title="every cell")
    assert res.layers == tuple(f"layers.{i}" for i in range(5))
    assert res.tensors == 6
    assert_png(res.path)
    rgb = mpl_image.imread(res.path)[..., :3]
    for colour in ((0xD6, 0x27, 0x28), (0xE3, 0x77, 0xC2)):  # infinite and NaN: own colours
        assert np.isclose(rgb, np.array(colour) / 255, atol=0.01).all(axis=-1).any(), colour


def test_only_structural_changes(tmp_path: Path) -> None:
    res = plot_diff(result([other("a.w", "added"), other("b.w", "removed")]), tmp_path / "s.png")
    assert res.layers == ("a", "b")
    assert res.tensors == 0
    assert_png(res.path)


@pytest.mark.parametrize(
    "tensors", [[], [other("model.layers.0.w", "unchanged"), other("lm_head.weight", "unchanged")]]
)
def test_nothing_modified_still_writes_a_picture(tmp_path: Path, tensors: list[TensorDiff]) -> None:
    res = plot_diff(result(tensors), tmp_path / "empty.png")
    assert (res.layers, res.tensors) == ((), 0)
    assert res.path.read_bytes()[:8] == PNG_MAGIC
    img = mpl_image.imread(res.path)
    assert img.shape[0] > 100 and img.shape[1] > 100


def test_plot_a_repository_diff(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "repo")
    rng = np.random.default_rng(0)
    a = {
        f"model.layers.{i}.{k}": rng.standard_normal((8, 8)).astype(np.float32)
        for i in range(3)
        for k in ("self_attn.q_proj.weight", "mlp.up_proj.weight")
    }
    a["lm_head.weight"] = rng.standard_normal((8, 8)).astype(np.float32)
    b = dict(a)
    b["model.layers.2.self_attn.q_proj.weight"] = a["model.layers.2.self_attn.q_proj.weight"] * 1.01
    b["model.layers.1.mlp.up_proj.weight"] = a["model.layers.1.mlp.up_proj.weight"] + 0.5
    b["model.layers.3.self_attn.q_proj.weight"] = np.zeros((8, 8), dtype=np.float32)
    repo.commit_state_dict(a, path="model.safetensors", message="a")
    repo.commit_state_dict(b, path="model.safetensors", message="b")
    diff = repo.diff("HEAD~1", "HEAD")

    res = plot_diff(diff, tmp_path / "repo.png")
    assert res.layers == (*(f"model.layers.{i}" for i in range(4)), "lm_head")
    assert res.tensors == 2
    assert_png(res.path)


def test_pyplot_and_backend_untouched(tmp_path: Path) -> None:
    import matplotlib

    def backend() -> object:  # the raw setting: reading it must not resolve (or switch) it
        return dict.__getitem__(matplotlib.rcParams, "backend")

    before = backend()
    had_pyplot = "matplotlib.pyplot" in sys.modules
    plot_diff(llama(4), tmp_path / "p.png")
    assert backend() == before
    assert ("matplotlib.pyplot" in sys.modules) == had_pyplot


# --- failures ----------------------------------------------------------------------


def test_missing_matplotlib_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes "import matplotlib" fail; submodules that an earlier
    # test imported would still be found by their full names, so they go too.
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(InputError) as err:
        plot_diff(llama(2), tmp_path / "x.png")
    assert (
        str(err.value) == MISSING_MATPLOTLIB == "--plot needs matplotlib: pip install 'wvc[plot]'"
    )
    assert list(tmp_path.iterdir()) == []


def test_failure_while_drawing_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    def half_then_fail(self: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        f.write(PNG_MAGIC + b"half a picture")
        raise RuntimeError("renderer exploded")

    monkeypatch.setattr(FigureCanvasAgg, "print_png", half_then_fail)
    out = tmp_path / "diff.png"
    with pytest.raises(RuntimeError, match="renderer exploded"):
        plot_diff(llama(4), out)
    assert list(tmp_path.iterdir()) == []

    out.write_bytes(b"the previous plot")  # an existing picture survives a failed redraw
    with pytest.raises(RuntimeError, match="renderer exploded"):
        plot_diff(llama(4), out)
    assert out.read_bytes() == b"the previous plot"
    assert leftovers(tmp_path) == []


def test_replaces_an_existing_plot(tmp_path: Path) -> None:
    out = tmp_path / "diff.png"
    out.write_bytes(b"old")
    plot_diff(llama(4), out)
    assert_png(out)


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(PathNotFoundError) as missing:
        plot_diff(llama(2), tmp_path / "no" / "such" / "dir.png")
    assert missing.value.path == str(tmp_path / "no" / "such")
    with pytest.raises(InputError, match="is a directory"):
        plot_diff(llama(2), tmp_path)
    assert list(tmp_path.iterdir()) == []
