"""wvc diff: per-tensor statuses, numeric stats, delta rank, disk sides and the CLI."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from safetensors.numpy import save_file

from wvc.objects import object_key
from wvc.ops.diff import RANK_SKETCH, DiffResult, TensorDiff
from wvc.ops.restore import snapshot
from wvc.ops.tensors import tensor_map
from wvc.repository import Repository

FLOAT_DTYPES = [np.float32, np.float16, ml_dtypes.bfloat16, np.float64]


# --- helpers ---------------------------------------------------------------------


def two_commits(repo: Repository, a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    repo.commit_state_dict(a, message="a")
    repo.commit_state_dict(b, message="b")


def by_name(res: DiffResult) -> dict[str, TensorDiff]:
    return {t.name: t for t in res.tensors}


def reference_stats(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """The stats of a modified float tensor, computed directly in numpy float64."""
    ua = np.ascontiguousarray(a).reshape(-1).view(np.uint8).reshape(a.size, -1)
    ub = np.ascontiguousarray(b).reshape(-1).view(np.uint8).reshape(b.size, -1)
    changed = int(np.count_nonzero((ua != ub).any(axis=1)))
    fa = a.astype(np.float64).reshape(-1)
    fb = b.astype(np.float64).reshape(-1)
    d = fb - fa
    l2 = float(np.sqrt(np.sum(d * d)))
    na = float(np.sqrt(np.sum(fa * fa)))
    nb = float(np.sqrt(np.sum(fb * fb)))
    relative = l2 / na if na > 0 else (0.0 if l2 == 0 else math.inf)
    if na > 0 and nb > 0:
        cosine = float(np.sum(fa * fb)) / (na * nb)
    else:
        cosine = 1.0 if na == nb == 0 else 0.0
    return {
        "numel": a.size,
        "changed": changed,
        "changed_fraction": changed / a.size if a.size else 0.0,
        "l2": l2,
        "relative": relative,
        "max_abs": float(np.max(np.abs(d))) if d.size else 0.0,
        "cosine": cosine,
    }


def assert_stats_match(t: TensorDiff, a: np.ndarray, b: np.ndarray) -> None:
    assert t.stats is not None
    ref = reference_stats(a, b)
    s = t.stats
    assert s.numel == ref["numel"]
    assert s.changed == ref["changed"]
    for key in ("changed_fraction", "l2", "relative", "max_abs", "cosine"):
        got, want = getattr(s, key), ref[key]
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (t.name, key, got, want)


def chunk_ids(repo: Repository, rev: str, name: str) -> tuple[str, ...]:
    _cid, tree = snapshot(repo, rev)
    loc = tensor_map(repo, tree, None)[name]
    return loc.manifest.segments[loc.tensor.segment].chunks


# --- statuses --------------------------------------------------------------------


def test_all_statuses(repo: Repository, rng: np.random.Generator) -> None:
    same = rng.standard_normal((8, 4), dtype=np.float32)
    mod_a = rng.standard_normal((5, 6), dtype=np.float32)
    mod_b = mod_a.copy()
    mod_b[2, 3] += 1.0
    two_commits(
        repo,
        {
            "same": same,
            "mod": mod_a,
            "gone": np.arange(5, dtype=np.int32),
            "shape": np.zeros((2, 3), np.float32),
            "type": np.zeros(6, np.float32),
        },
        {
            "same": same,
            "mod": mod_b,
            "new": np.ones(3, np.float16),
            "shape": np.zeros((3, 2), np.float32),
            "type": np.zeros(6, np.float64),
        },
    )
    res = repo.diff("HEAD~1", "HEAD")
    t = by_name(res)
    assert [x.name for x in res.tensors] == sorted(t)
    assert {n: x.status for n, x in t.items()} == {
        "same": "unchanged",
        "mod": "modified",
        "gone": "removed",
        "new": "added",
        "shape": "reshaped",
        "type": "retyped",
    }
    assert res.counts == {
        "added": 1,
        "removed": 1,
        "modified": 1,
        "reshaped": 1,
        "retyped": 1,
        "unchanged": 1,
    }
    assert res.differs
    assert t["new"].dtype_a is None and t["new"].dtype_b == "F16" and t["new"].shape_b == (3,)
    assert t["gone"].dtype_b is None and t["gone"].size_a == 20 and t["gone"].size_b == 0
    assert t["shape"].shape_a == (2, 3) and t["shape"].shape_b == (3, 2)
    assert (t["type"].dtype_a, t["type"].dtype_b) == ("F32", "F64")
    assert t["same"].stats is None
    assert t["mod"].stats is not None and t["mod"].stats.changed == 1
    # bytes_changed: the larger side of every non-unchanged tensor.
    assert res.bytes_changed == 30 * 4 + 6 + 20 + 24 + 48
    assert repo.diff("HEAD~1", "HEAD~1").differs is False


def test_unchanged_is_decided_without_reading_data(repo: Repository) -> None:
    keep = np.arange(1000, dtype=np.float32) * 3.5 + 0.25  # bytes unique to this tensor
    w = np.linspace(-1, 1, 500, dtype=np.float32)
    two_commits(repo, {"keep": keep, "w": w}, {"keep": keep, "w": w * 2})
    ids = chunk_ids(repo, "HEAD", "keep")
    assert ids == chunk_ids(repo, "HEAD~1", "keep")
    assert not set(ids) & set(chunk_ids(repo, "HEAD", "w"))
    for cid in ids:
        f = repo.dir / "objects" / object_key(cid)
        assert f.is_file()
        f.unlink()
    res = repo.diff("HEAD~1", "HEAD")
    t = by_name(res)
    assert t["keep"].status == "unchanged"
    assert t["keep"].stats is None
    assert t["w"].status == "modified"
    assert_stats_match(t["w"], w, w * 2)


# --- numeric stats -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_float_stats_match_numpy(repo: Repository, rng: np.random.Generator, dtype: Any) -> None:
    a = rng.standard_normal((37, 29)).astype(dtype)
    b = a.copy()
    idx = rng.choice(a.size, size=200, replace=False)
    flat = b.reshape(-1)
    flat[idx] = (flat[idx].astype(np.float64) + rng.standard_normal(200) * 0.1).astype(dtype)
    zero_a = np.zeros(10, dtype)
    zero_b = np.zeros(10, dtype)
    zero_b[3] = 1
    negzero = np.zeros(4, dtype)
    negzero_b = negzero.copy()
    negzero_b[1] = -negzero_b[1]  # -0.0: bits change, values do not
    two_commits(
        repo,
        {"w": a, "z": zero_a, "nz": negzero, "s": np.array(2.0, dtype)},
        {"w": b, "z": zero_b, "nz": negzero_b, "s": np.array(-3.0, dtype)},
    )
    t = by_name(repo.diff("HEAD~1", "HEAD"))
    for name, (x, y) in {
        "w": (a, b),
        "z": (zero_a, zero_b),
        "nz": (negzero, negzero_b),
        "s": (np.array(2.0, dtype), np.array(-3.0, dtype)),
    }.items():
        assert t[name].status == "modified", name
        assert_stats_match(t[name], x, y)
    assert t["z"].stats.relative == math.inf
    assert t["z"].stats.cosine == 0.0
    assert t["nz"].stats.changed == 1 and t["nz"].stats.l2 == 0.0
    assert t["nz"].stats.cosine == 1.0 and t["nz"].stats.relative == 0.0
    assert t["s"].stats.cosine == pytest.approx(-1.0)
    assert (
        t["w"].dtype_b
        == {
            np.dtype(np.float32): "F32",
            np.dtype(np.float16): "F16",
            np.dtype(ml_dtypes.bfloat16): "BF16",
            np.dtype(np.float64): "F64",
        }[np.dtype(dtype)]
    )


@st.composite
def float_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    dtype = np.dtype(draw(st.sampled_from(FLOAT_DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9))
    elems = st.floats(-1e3, 1e3, width=32).map(float)
    base = draw(hnp.arrays(np.float64, shape, elements=elems))
    a = base.astype(dtype)
    b = a.copy()
    if a.size and draw(st.booleans()):
        flat = b.reshape(-1)
        idx = draw(st.lists(st.integers(0, a.size - 1), min_size=1, max_size=a.size))
        vals = draw(st.lists(elems, min_size=len(idx), max_size=len(idx)))
        for i, v in zip(idx, vals, strict=True):
            flat[i] = np.asarray(v).astype(dtype)
    return a, b


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(float_pairs())
def test_stats_property(pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = pair
    with tempfile.TemporaryDirectory() as d, Repository.init(Path(d)) as repo:
        two_commits(repo, {"x": a}, {"x": b})
        res = repo.diff("HEAD~1", "HEAD")
    (t,) = res.tensors
    assert t.shape_a == t.shape_b == a.shape
    same_bits = a.tobytes() == b.tobytes()
    if same_bits:
        assert t.status == "unchanged" and t.stats is None
        assert not res.differs
    else:
        assert t.status == "modified"
        assert_stats_match(t, a, b)
    if a.size == 0:
        assert t.status == "unchanged"


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.bool_])
def test_integer_stats(repo: Repository, rng: np.random.Generator, dtype: Any) -> None:
    a = rng.integers(0, 2, size=(20, 10)).astype(dtype)
    b = a.copy()
    idx = rng.choice(a.size, size=17, replace=False)
    flat = b.reshape(-1)
    flat[idx] = ~flat[idx] if dtype is np.bool_ else flat[idx] + 1
    two_commits(repo, {"i": a}, {"i": b})
    (t,) = repo.diff("HEAD~1", "HEAD").tensors
    assert t.status == "modified"
    s = t.stats
    assert s is not None
    assert (s.numel, s.changed) == (200, 17)
    assert s.changed_fraction == pytest.approx(17 / 200)
    assert s.l2 is None and s.relative is None and s.max_abs is None and s.cosine is None
    assert s.rank90 is None and s.rank99 is None


# --- delta rank -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "r"),
    [((100, 60), 1), ((100, 60), 3), ((100, 60), 8)]
    + [((300, 200), r) for r in (1, 3, 8)]
    + [((600, 400), 3)],
)
def test_rank_of_exact_low_rank_delta(
    repo: Repository, rng: np.random.Generator, shape: tuple[int, int], r: int
) -> None:
    m, n = shape
    u, _ = np.linalg.qr(rng.standard_normal((m, r)))
    v, _ = np.linalg.qr(rng.standard_normal((n, r)))
    delta = u @ v.T  # equal singular values: each direction holds 1/r of the energy
    a = (rng.standard_normal(shape) * 0.01).astype(np.float32)
    b = (a + delta).astype(np.float32)
    two_commits(repo, {"w": a, "v": np.ones(4, np.float32)}, {"w": b, "v": np.ones(4) * 2.0})
    t = by_name(repo.diff("HEAD~1", "HEAD", rank=True))
    s = t["w"].stats
    assert s is not None
    assert s.rank99 == r
    assert s.rank90 == r  # ceil(0.9 r) == r for r in (1, 3, 8)
    assert s.rank_bound == min(m, n, RANK_SKETCH)
    assert_stats_match(t["w"], a, b)
    # Without rank=True (and for 1-D tensors) no rank is estimated.
    assert repo.diff("HEAD~1", "HEAD").tensors[1].stats.rank99 is None
    assert t["v"].status == "retyped"


def test_rank_zero_for_negzero_only_delta(repo: Repository) -> None:
    a = np.zeros((10, 10), np.float32)
    b = a.copy()
    b[0, 0] = -0.0
    two_commits(repo, {"w": a}, {"w": b})
    (t,) = repo.diff("HEAD~1", "HEAD", rank=True).tensors
    assert t.status == "modified"
    assert (t.stats.rank90, t.stats.rank99) == (0, 0)


# --- large tensors -------------------------------------------------------------------


def test_tensor_spanning_several_chunks(repo: Repository, rng: np.random.Generator) -> None:
    n = 1_500_000  # 6 MB of float32: two 4 MiB chunks
    a = rng.standard_normal(n, dtype=np.float32)
    b = a.copy()
    edges = [0, 1_048_575, 1_048_576, 1_048_577, n - 1]  # around the chunk boundary
    b[edges] += 5.0
    b[::1000] *= 1.5
    c = rng.standard_normal(700_000)  # float64, 5.6 MB: two chunks, blocks of 1 Mi elements
    d = c.copy()
    d[524_287:524_290] = 0.0
    two_commits(repo, {"big": a, "big64": c}, {"big": b, "big64": d})
    assert len(chunk_ids(repo, "HEAD", "big")) == 2
    t = by_name(repo.diff("HEAD~1", "HEAD"))
    assert_stats_match(t["big"], a, b)
    assert_stats_match(t["big64"], c, d)
    assert t["big"].stats.changed == len(set(range(0, n, 1000)) | set(edges))


# --- a checkpoint on disk -------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["torch", "safetensors"])
def test_disk_side_cross_format(
    repo: Repository, tmp_path: Path, rng: np.random.Generator, fmt: str
) -> None:
    sd = {
        "w": rng.standard_normal((64, 48), dtype=np.float32),
        "h": rng.standard_normal(100).astype(np.float16),
        "i": np.arange(30, dtype=np.int64),
        "big": rng.standard_normal(1_200_000, dtype=np.float32),
    }
    repo.commit_state_dict(sd, message="stored")

    def write(d: Path, state: dict[str, np.ndarray]) -> None:
        d.mkdir()
        if fmt == "torch":
            torch.save({k: torch.from_numpy(v.copy()) for k, v in state.items()}, d / "model.pt")
        else:
            save_file(state, str(d / "model.safetensors"))

    same = tmp_path / "same"
    write(same, sd)
    res = repo.diff("HEAD", str(same))
    assert res.b == str(same)
    assert {t.name: t.status for t in res.tensors} == dict.fromkeys(sd, "unchanged")
    assert not res.differs

    changed = dict(sd)
    changed["w"] = sd["w"].copy()
    changed["w"][5, 7] = 42.0
    changed["big"] = sd["big"].copy()
    changed["big"][-1] = 0.5
    other = tmp_path / "other"
    write(other, changed)
    t = by_name(repo.diff("HEAD", str(other)))
    assert {n: x.status for n, x in t.items()} == {
        "w": "modified",
        "h": "unchanged",
        "i": "unchanged",
        "big": "modified",
    }
    assert_stats_match(t["w"], sd["w"], changed["w"])
    assert_stats_match(t["big"], sd["big"], changed["big"])
    # Disk on the left works too.
    t2 = by_name(repo.diff(str(other), "HEAD"))
    assert t2["w"].status == "modified" and t2["h"].status == "unchanged"
    assert_stats_match(t2["w"], changed["w"], sd["w"])


# --- filters ---------------------------------------------------------------------------


def test_tensors_glob(repo: Repository) -> None:
    a = {f"layer.{i}.{k}": np.full(4, i, np.float32) for i in range(3) for k in ("w", "b")}
    b = {k: v + 1 for k, v in a.items()}
    two_commits(repo, a, b)
    res = repo.diff("HEAD~1", "HEAD", tensors="layer.*.w")
    assert [t.name for t in res.tensors] == ["layer.0.w", "layer.1.w", "layer.2.w"]
    assert res.counts["modified"] == 3 and sum(res.counts.values()) == 3
    assert res.bytes_changed == 3 * 16
    assert repo.diff("HEAD~1", "HEAD", tensors="nothing*").tensors == ()


def test_path_option(repo: Repository, tmp_path: Path, write_ckpt) -> None:
    x = np.arange(6, dtype=np.float32)
    ck1 = write_ckpt(tmp_path / "ck1", {"a.safetensors": {"x": x}, "b.safetensors": {"y": x}})
    ck2 = write_ckpt(tmp_path / "ck2", {"a.safetensors": {"x": x}, "b.safetensors": {"y": x + 1}})
    repo.commit(ck1, "one")
    repo.commit(ck2, "two")
    assert {t.name: t.status for t in repo.diff("HEAD~1", "HEAD").tensors} == {
        "x": "unchanged",
        "y": "modified",
    }
    only_a = repo.diff("HEAD~1", "HEAD", path="a.safetensors")
    assert [(t.name, t.status) for t in only_a.tensors] == [("x", "unchanged")]
    only_b = repo.diff("HEAD~1", "HEAD", path="b.safetensors")
    assert [(t.name, t.status) for t in only_b.tensors] == [("y", "modified")]
    # path= also applies to a checkpoint directory on disk.
    disk = repo.diff("HEAD~1", str(ck2), path="b.safetensors")
    assert [(t.name, t.status) for t in disk.tensors] == [("y", "modified")]


# --- CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli_repo(repo: Repository) -> Repository:
    """HEAD~1 -> HEAD: 'small' modified a little, 'large' a lot, 'same' unchanged, 'new' added."""
    base = np.linspace(1, 2, 100, dtype=np.float32)
    two_commits(
        repo,
        {"small": base, "large": base, "same": base * 3},
        {"small": base * 1.001, "large": base * 3, "same": base * 3, "new": np.ones(2, np.int8)},
    )
    return repo


def test_cli_table(cli_repo: Repository, run_wvc) -> None:
    p = run_wvc("diff", "HEAD~1", "HEAD", cwd=cli_repo.root)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("2 modified, 1 added, 0 removed, 0 reshaped/retyped, 1 unchanged;")
    assert "in changed tensors" in lines[0]
    assert lines[1].split()[:2] == ["status", "tensor"]
    rows = {ln.split()[1]: ln.split() for ln in lines[2:]}
    assert set(rows) == {"large", "new", "small"}  # unchanged hidden without --all
    assert rows["large"][:5] == ["modified", "large", "F32", "100", "100.0%"]
    assert rows["new"][0] == "added"

    p = run_wvc("diff", "HEAD~1", "--all", cwd=cli_repo.root)
    assert any(ln.split()[:2] == ["unchanged", "same"] for ln in p.stdout.splitlines())


def test_cli_stat(cli_repo: Repository, run_wvc) -> None:
    p = run_wvc("diff", "HEAD~1", "HEAD", "--stat", cwd=cli_repo.root)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.splitlines()) == 1
    assert p.stdout.startswith("2 modified, 1 added")


def test_cli_json(cli_repo: Repository, run_wvc) -> None:
    p = run_wvc("diff", "HEAD~1", "HEAD", "--json", cwd=cli_repo.root)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["a"] == cli_repo.resolve("HEAD~1") and doc["b"] == cli_repo.resolve("HEAD")
    assert set(doc["summary"]) == {
        "added",
        "removed",
        "modified",
        "reshaped",
        "retyped",
        "unchanged",
        "bytes_changed",
    }
    assert doc["summary"]["modified"] == 2 and doc["summary"]["bytes_changed"] == 802
    entries = {e["name"]: e for e in doc["tensors"]}
    assert set(entries) == {"large", "new", "same", "small"}
    for e in doc["tensors"]:
        assert set(e) == {"name", "status", "dtype", "shape", "size", "stats"}
    assert entries["new"] == {
        "name": "new",
        "status": "added",
        "dtype": [None, "I8"],
        "shape": [None, [2]],
        "size": [0, 2],
        "stats": None,
    }
    st_ = entries["large"]["stats"]
    assert set(st_) == {
        "numel",
        "changed",
        "changed_fraction",
        "l2",
        "relative",
        "max_abs",
        "cosine",
        "rank90",
        "rank99",
    }
    assert st_["numel"] == 100 and st_["changed"] == 100
    assert st_["relative"] == pytest.approx(2.0, rel=1e-6)
    assert entries["same"]["status"] == "unchanged" and entries["same"]["stats"] is None


def test_cli_json_infinity_is_a_string(repo: Repository, run_wvc) -> None:
    two_commits(repo, {"z": np.zeros(3, np.float32)}, {"z": np.ones(3, np.float32)})
    p = run_wvc("diff", "HEAD~1", "--json", cwd=repo.root)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["tensors"][0]["stats"]["relative"] == "inf"


def test_cli_exit_code(cli_repo: Repository, run_wvc) -> None:
    p = run_wvc("diff", "HEAD~1", "HEAD", "--exit-code", "--stat", cwd=cli_repo.root)
    assert p.returncode == 1
    p = run_wvc("diff", "HEAD", "HEAD", "--exit-code", cwd=cli_repo.root)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("0 modified, 0 added")
    p = run_wvc("diff", "HEAD~1", "HEAD", "--exit-code", "--tensors", "same", cwd=cli_repo.root)
    assert p.returncode == 0, p.stderr


def test_cli_sort_relative(cli_repo: Repository, run_wvc) -> None:
    p = run_wvc("diff", "HEAD~1", "HEAD", "--sort", "relative", cwd=cli_repo.root)
    assert p.returncode == 0, p.stderr
    names = [ln.split()[1] for ln in p.stdout.splitlines()[2:]]
    assert names == ["large", "small", "new"]  # no stats last
    res = cli_repo.diff("HEAD~1", "HEAD")
    rel = {t.name: t.stats.relative for t in res.tensors if t.stats}
    assert rel["large"] > rel["small"] > 0


def test_cli_bad_revision(cli_repo: Repository, run_wvc) -> None:
    p = run_wvc("diff", "no-such-rev", "HEAD", cwd=cli_repo.root)
    assert p.returncode == 4
    assert p.stdout == ""
    err = p.stderr.strip().splitlines()
    assert len(err) == 1, p.stderr
    assert "no-such-rev" in err[0]
    assert "Traceback" not in p.stderr
