"""The Python API of a repository: init/open, commit, log, show, restore, load,
dedup, revisions and refs. Everything runs against real files and SQLite."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy as stnp
from safetensors import safe_open

from wvc.errors import (
    AmbiguousRevisionError,
    InputError,
    NotARepositoryError,
    PathNotFoundError,
    RefError,
    RepositoryExistsError,
    RevisionNotFoundError,
    TargetNotEmptyError,
    UnsupportedFormatVersionError,
)
from wvc.repository import Repository

# --- helpers -----------------------------------------------------------------------


def model(rng: np.random.Generator, scale: int = 1) -> dict[str, np.ndarray]:
    """A few tensors of mixed dtypes; random (incompressible) contents."""
    return {
        "embed.weight": rng.standard_normal((64 * scale, 32), dtype=np.float32),
        "layer.0.w": rng.standard_normal((32, 32)).astype(ml_dtypes.bfloat16),
        "layer.0.b": rng.standard_normal(32).astype(np.float16),
        "step": np.array(7, dtype=np.int64),
        "mask": rng.integers(0, 2, size=(5, 3)).astype(np.bool_),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }


def assert_arrays_equal(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(actual) == sorted(expected)
    for name, exp in expected.items():
        got = actual[name]
        assert got.dtype == exp.dtype, name
        assert got.shape == exp.shape, name
        assert got.tobytes() == np.ascontiguousarray(exp).tobytes(), name


def safetensors_data_start(path: Path) -> int:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    return 8 + n


# --- init and open -----------------------------------------------------------------


def test_init_creates_repository_and_refuses_twice(tmp_path: Path) -> None:
    (tmp_path / "existing.txt").write_text("keep me")
    r = Repository.init(tmp_path)
    r.close()
    assert (tmp_path / ".wvc" / "format").is_file()
    assert (tmp_path / ".wvc" / "wvc.db").is_file()
    assert (tmp_path / "existing.txt").read_text() == "keep me"
    with pytest.raises(RepositoryExistsError) as ei:
        Repository.init(tmp_path)
    assert str(tmp_path / ".wvc") in str(ei.value)
    # The repository still opens and is still empty.
    with Repository.open(tmp_path) as r2:
        assert r2.head().branch == "main"
        assert r2.head().target is None


def test_open_from_subdirectory(tmp_path: Path) -> None:
    Repository.init(tmp_path).close()
    sub = tmp_path / "a" / "b" / "c"
    sub.mkdir(parents=True)
    with Repository.open(sub) as r:
        assert r.root == tmp_path.absolute()
    with pytest.raises(NotARepositoryError):
        Repository.open(sub, search_parents=False)


def test_open_outside_any_repository(tmp_path: Path) -> None:
    with pytest.raises(NotARepositoryError) as ei:
        Repository.open(tmp_path)
    assert isinstance(ei.value, FileNotFoundError)
    assert ei.value.exit_code == 3


@pytest.mark.parametrize(
    "content, found",
    [
        (json.dumps({"format": "wvc", "version": 99}), "99"),
        (json.dumps({"format": "other", "version": 1}), "1"),
        ("this is not json", "None"),
    ],
)
def test_open_unsupported_format(tmp_path: Path, content: str, found: str) -> None:
    Repository.init(tmp_path).close()
    fmt = tmp_path / ".wvc" / "format"
    fmt.write_text(content + "\n")
    with pytest.raises(UnsupportedFormatVersionError) as ei:
        Repository.open(tmp_path)
    msg = str(ei.value)
    assert "\n" not in msg
    assert str(fmt) in msg
    assert found in msg
    assert "supports 1" in msg


def test_open_refuses_future_format_version_with_clear_message(tmp_path: Path) -> None:
    Repository.init(tmp_path).close()
    (tmp_path / ".wvc" / "format").write_text('{"format": "wvc", "version": 99}\n')
    with pytest.raises(UnsupportedFormatVersionError) as ei:
        Repository.open(tmp_path / "nonexistent-sub" / "dir")
    assert ei.value.found == 99
    assert "version 99 is not supported" in str(ei.value)
    assert "upgrade wvc" in str(ei.value)


# --- commit ------------------------------------------------------------------------


def test_commit_directory_stores_relative_nested_paths(
    repo: Repository, tmp_path: Path, rng: np.random.Generator, write_ckpt
) -> None:
    ck = write_ckpt(
        tmp_path / "ckpt",
        {
            "model.safetensors": model(rng),
            "config.json": '{"hidden": 32}\n',
            "sub/deeper/extra.bin": rng.bytes(1000),
            "sub/empty.txt": b"",
        },
    )
    res = repo.commit(ck, "first")
    assert res.files == 4
    assert res.tensors == len(model(rng))
    assert res.parents == ()
    assert res.branch == "main"
    expected_size = sum(p.stat().st_size for p in ck.rglob("*") if p.is_file())
    assert res.logical_size == expected_size
    shown = repo.show(res.id)
    assert [f.path for f in shown.files] == [
        "config.json",
        "model.safetensors",
        "sub/deeper/extra.bin",
        "sub/empty.txt",
    ]
    fmts = {f.path: f.format for f in shown.files}
    assert fmts["model.safetensors"] == "safetensors"
    assert fmts["config.json"] == "opaque"


def test_commit_skips_a_nested_repository_dir(tmp_path: Path, write_ckpt, same_tree) -> None:
    """Committing the repository root itself must not store .wvc."""
    root = tmp_path / "proj"
    write_ckpt(root, {"a.bin": b"abc", "d/b.bin": b"defg"})
    with Repository.init(root) as r:
        res = r.commit(root, "self")
        assert [f.path for f in r.show(res.id).files] == ["a.bin", "d/b.bin"]
        r.restore(res.id, tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out")) == ["a.bin", "d"]


def test_commit_several_files_stored_by_name(
    repo: Repository, tmp_path: Path, rng: np.random.Generator, write_ckpt, same_tree
) -> None:
    write_ckpt(tmp_path / "a", {"model.safetensors": model(rng)})
    write_ckpt(tmp_path / "b" / "c", {"config.json": "{}"})
    write_ckpt(tmp_path / "d", {"x.bin": b"x" * 10, "y/z.bin": b"zz"})
    res = repo.commit(
        [
            tmp_path / "a" / "model.safetensors",
            tmp_path / "b" / "c" / "config.json",
            tmp_path / "d",
        ],
        "files",
    )
    paths = [f.path for f in repo.show(res.id).files]
    assert paths == ["config.json", "d/x.bin", "d/y/z.bin", "model.safetensors"]
    out = tmp_path / "out"
    repo.restore("HEAD", out)
    assert (out / "model.safetensors").read_bytes() == (
        tmp_path / "a" / "model.safetensors"
    ).read_bytes()
    assert (out / "config.json").read_text() == "{}"
    assert (out / "d" / "y" / "z.bin").read_bytes() == b"zz"


def test_commit_refuses_duplicate_stored_names(
    repo: Repository, tmp_path: Path, write_ckpt
) -> None:
    write_ckpt(tmp_path / "a", {"model.bin": b"one"})
    write_ckpt(tmp_path / "b", {"model.bin": b"two"})
    with pytest.raises(InputError) as ei:
        repo.commit([tmp_path / "a" / "model.bin", tmp_path / "b" / "model.bin"])
    assert "model.bin" in str(ei.value)
    assert repo.head().target is None
    assert repo.stats().objects == 0


def test_commit_missing_path_and_empty_dir(repo: Repository, tmp_path: Path) -> None:
    with pytest.raises(PathNotFoundError):
        repo.commit(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError):
        repo.commit(tmp_path / "empty")
    with pytest.raises(InputError):
        repo.commit([])
    assert repo.head().target is None


# --- log and show --------------------------------------------------------------------


def test_log_order_parents_and_meta(repo: Repository, tmp_path: Path, write_ckpt) -> None:
    metas = [
        {"loss": 2.5, "step": 100, "note": "warmup", "final": False, "lr": None},
        {"loss": 1.25, "step": 200, "final": False},
        {"loss": 0.5, "step": 300, "final": True},
    ]
    ids = []
    for i, meta in enumerate(metas):
        write_ckpt(tmp_path / f"c{i}", {"w.bin": f"weights {i}".encode()})
        ids.append(repo.commit(tmp_path / f"c{i}", f"commit {i}", meta).id)
    entries = repo.log()
    assert [e.id for e in entries] == ids[::-1]
    assert [e.message for e in entries] == ["commit 2", "commit 1", "commit 0"]
    assert [e.meta for e in entries] == metas[::-1]
    assert type(entries[0].meta["step"]) is int
    assert type(entries[0].meta["loss"]) is float
    assert entries[0].meta["final"] is True
    assert entries[-1].meta["lr"] is None
    assert entries[0].parents == (ids[1],)
    assert entries[1].parents == (ids[0],)
    assert entries[2].parents == ()
    assert entries[0].refs == ("main",)
    assert all(e.time > 0 and e.author for e in entries)
    assert entries[0].time >= entries[1].time >= entries[2].time
    assert [e.id for e in repo.log(limit=2)] == ids[:0:-1]
    assert [e.id for e in repo.log("HEAD~1")] == ids[1::-1]
    assert [e.id for e in repo.log(ids[0])] == [ids[0]]
    # Decorations: branch names, and tags as "tag: NAME".
    repo.tag("v0", ids[0])
    repo.branch("side", ids[0])
    decorated = {e.id: set(e.refs) for e in repo.log()}
    assert decorated[ids[0]] == {"tag: v0", "side"}
    assert decorated[ids[1]] == set()
    assert decorated[ids[2]] == {"main"}


def test_commit_refuses_bad_meta(repo: Repository, tmp_path: Path, write_ckpt) -> None:
    write_ckpt(tmp_path / "c", {"w.bin": b"w"})
    with pytest.raises(InputError):
        repo.commit(tmp_path / "c", "m", {"loss": float("nan")})
    with pytest.raises(InputError):
        repo.commit(tmp_path / "c", "m", {"bad": [1, 2]})  # type: ignore[dict-item]
    with pytest.raises(InputError):
        repo.commit(tmp_path / "c", "m", {"": 1})
    assert repo.head().target is None


def test_log_on_empty_repository(repo: Repository) -> None:
    with pytest.raises(RevisionNotFoundError):
        repo.log()
    with pytest.raises(RevisionNotFoundError):
        repo.show()


def test_show_files_tensors_and_sizes(
    repo: Repository, tmp_path: Path, rng: np.random.Generator, write_ckpt
) -> None:
    tensors = model(rng)
    ck = write_ckpt(tmp_path / "ck", {"model.safetensors": tensors, "readme.txt": "hello\n"})
    res = repo.commit(ck, "m", {"k": 1})
    shown = repo.show()
    assert shown.commit.id == res.id
    assert shown.commit.meta == {"k": 1}
    assert shown.commit.message == "m"
    by_path = {f.path: f for f in shown.files}
    st = by_path["model.safetensors"]
    txt = by_path["readme.txt"]
    assert st.size == (ck / "model.safetensors").stat().st_size
    assert txt.size == 6
    assert txt.tensors == ()
    assert shown.logical_size == st.size + txt.size == res.logical_size
    assert [t.name for t in st.tensors] == list(tensors)  # file order
    start = safetensors_data_start(ck / "model.safetensors")
    offset = start
    for t in st.tensors:
        arr = tensors[t.name]
        assert tuple(t.shape) == arr.shape
        assert t.size == arr.nbytes
        assert t.offset == offset
        offset += arr.nbytes
    assert offset == st.size
    dtypes = {t.name: t.dtype for t in st.tensors}
    assert dtypes == {
        "embed.weight": "F32",
        "layer.0.w": "BF16",
        "layer.0.b": "F16",
        "step": "I64",
        "mask": "BOOL",
        "empty": "F32",
    }
    # Random data does not compress: stored bytes are close to the logical bytes.
    assert st.stored_size > 0
    assert shown.stored_size >= st.stored_size
    assert shown.stored_size <= shown.logical_size + 4096


# --- restore -----------------------------------------------------------------------


def test_restore_byte_identical_and_subsets(
    repo: Repository, tmp_path: Path, rng: np.random.Generator, write_ckpt, same_tree
) -> None:
    ck = write_ckpt(
        tmp_path / "ck",
        {
            "model.safetensors": model(rng),
            "config.json": "{}",
            "sub/a.bin": rng.bytes(5000),
            "sub/deep/b.bin": rng.bytes(3),
            "subx.bin": b"not under sub/",
            "zero.bin": b"",
        },
    )
    res = repo.commit(ck, "c")
    out = tmp_path / "out"
    r = repo.restore("HEAD", out)
    assert r.commit == res.id
    assert r.files == 6
    assert r.size == res.logical_size
    same_tree(ck, out)

    sub = tmp_path / "sub-only"
    r2 = repo.restore(res.id[:8], sub, paths=["sub"])
    assert r2.files == 2
    assert sorted(p.relative_to(sub).as_posix() for p in sub.rglob("*") if p.is_file()) == [
        "sub/a.bin",
        "sub/deep/b.bin",
    ]
    assert (sub / "sub" / "a.bin").read_bytes() == (ck / "sub" / "a.bin").read_bytes()

    one = tmp_path / "one"
    one.mkdir()  # an existing empty directory is fine
    repo.restore("main", one, paths=["config.json", "sub/deep/b.bin"])
    assert sorted(p.relative_to(one).as_posix() for p in one.rglob("*") if p.is_file()) == [
        "config.json",
        "sub/deep/b.bin",
    ]


def test_restore_into_non_empty_dir_refused(repo: Repository, tmp_path: Path, write_ckpt) -> None:
    ck = write_ckpt(tmp_path / "ck", {"a.bin": b"aaa", "b/c.bin": b"ccc"})
    repo.commit(ck)
    target = tmp_path / "target"
    target.mkdir()
    (target / "mine.txt").write_text("precious")
    with pytest.raises(TargetNotEmptyError) as ei:
        repo.restore("HEAD", target)
    assert isinstance(ei.value, FileExistsError)
    assert os.listdir(target) == ["mine.txt"]
    assert (target / "mine.txt").read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == ["ck", "repo", "target"]
    # A file in the way is refused too.
    (tmp_path / "afile").write_text("x")
    with pytest.raises(TargetNotEmptyError):
        repo.restore("HEAD", tmp_path / "afile")
    assert (tmp_path / "afile").read_text() == "x"


def test_restore_unknown_path(repo: Repository, tmp_path: Path, write_ckpt) -> None:
    ck = write_ckpt(tmp_path / "ck", {"a.bin": b"aaa", "sub/c.bin": b"ccc"})
    repo.commit(ck)
    target = tmp_path / "target"
    with pytest.raises(PathNotFoundError) as ei:
        repo.restore("HEAD", target, paths=["a.bin", "nope.bin"])
    assert "nope.bin" in str(ei.value)
    with pytest.raises(PathNotFoundError):
        repo.restore("HEAD", target, paths=["su"])  # a prefix of a dir name is not a path
    assert not target.exists()
    with pytest.raises(RevisionNotFoundError):
        repo.restore("nosuchrev", target)
    assert not target.exists()


# --- load --------------------------------------------------------------------------


def test_load_all_and_per_file(
    repo: Repository, tmp_path: Path, rng: np.random.Generator, write_ckpt
) -> None:
    a = model(rng)
    b = {"head.weight": rng.standard_normal((8, 8)).astype(ml_dtypes.bfloat16)}
    ck = write_ckpt(tmp_path / "ck", {"a.safetensors": a, "sub/b.safetensors": b, "n.txt": "x"})
    repo.commit(ck)
    assert_arrays_equal(repo.load("HEAD", file="a.safetensors"), a)
    assert_arrays_equal(repo.load("HEAD", file="sub/b.safetensors"), b)
    assert repo.load("HEAD", file="n.txt") == {}
    assert_arrays_equal(repo.load(), {**a, **b})
    loaded = repo.load(file="sub/b.safetensors")["head.weight"]
    assert loaded.dtype == np.dtype(ml_dtypes.bfloat16)
    assert np.array_equal(loaded.view(np.uint16), b["head.weight"].view(np.uint16))
    with pytest.raises(PathNotFoundError):
        repo.load("HEAD", file="missing.safetensors")


def test_load_name_clash_needs_file(repo: Repository, tmp_path: Path, write_ckpt) -> None:
    w1 = {"w": np.arange(4, dtype=np.float32)}
    w2 = {"w": np.arange(6, dtype=np.int32)}
    ck = write_ckpt(tmp_path / "ck", {"a.safetensors": w1, "b.safetensors": w2})
    repo.commit(ck)
    with pytest.raises(InputError) as ei:
        repo.load()
    assert "'w'" in str(ei.value)
    assert_arrays_equal(repo.load(file="a.safetensors"), w1)
    assert_arrays_equal(repo.load(file="b.safetensors"), w2)


def test_load_older_revision(repo: Repository, tmp_path: Path, write_ckpt) -> None:
    v1 = {"w": np.arange(10, dtype=np.float32)}
    v2 = {"w": np.arange(10, dtype=np.float32) * 2}
    repo.commit(write_ckpt(tmp_path / "1", {"m.safetensors": v1}))
    repo.commit(write_ckpt(tmp_path / "2", {"m.safetensors": v2}))
    assert_arrays_equal(repo.load("HEAD~1"), v1)
    assert_arrays_equal(repo.load("HEAD"), v2)


# --- commit_tensors ----------------------------------------------------------------


def official_tensors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    # Only dtypes the official safetensors numpy backend can read back.
    return {
        "a.weight": rng.standard_normal((256, 256), dtype=np.float32),
        "a.bias": rng.standard_normal(256, dtype=np.float32).astype(np.float16),
        "b.weight": rng.standard_normal((128, 100)),
        "ids": rng.integers(-(2**40), 2**40, size=3000, dtype=np.int64),
        "u": rng.integers(0, 255, size=777, dtype=np.uint8),
        "i16": rng.integers(-3000, 3000, size=(3, 5, 7), dtype=np.int16),
        "flags": rng.integers(0, 2, size=99).astype(bool),
    }


def test_commit_tensors_restores_valid_safetensors(
    repo: Repository, tmp_path: Path, rng: np.random.Generator
) -> None:
    tensors = official_tensors(rng)
    res = repo.commit_tensors(
        tensors, "weights/model.safetensors", "from memory", {"epoch": 1}, metadata={"format": "np"}
    )
    assert res.files == 1
    assert res.tensors == len(tensors)
    out = tmp_path / "out"
    repo.restore("HEAD", out)
    path = out / "weights" / "model.safetensors"
    assert path.stat().st_size == res.logical_size
    back = stnp.load_file(str(path))
    assert_arrays_equal(back, tensors)
    with safe_open(str(path), framework="np") as f:
        assert f.metadata() == {"format": "np"}
    assert_arrays_equal(repo.load(file="weights/model.safetensors"), tensors)
    # Non-contiguous and big-endian inputs are stored as their (little-endian) values.
    odd = {
        "t": np.arange(12, dtype=np.float32).reshape(3, 4).T,
        "be": np.arange(5, dtype=">i4"),
    }
    repo.commit_tensors(odd, "odd.safetensors")
    out2 = tmp_path / "out2"
    repo.restore("HEAD", out2)
    back2 = stnp.load_file(str(out2 / "odd.safetensors"))
    assert np.array_equal(back2["t"], odd["t"])
    assert np.array_equal(back2["be"], odd["be"])
    assert back2["be"].dtype == np.dtype("<i4")


def test_commit_tensors_keeps_0d_shape(repo: Repository, tmp_path: Path) -> None:
    """A 0-d array is a tensor of shape [] in safetensors, not [1]."""
    tensors = {"scalar": np.array(3.5, dtype=np.float64), "v": np.arange(3, dtype=np.int32)}
    repo.commit_tensors(tensors, "s.safetensors")
    assert [t.shape for t in repo.show().files[0].tensors] == [(), (3,)]
    repo.restore("HEAD", tmp_path / "out")
    back = stnp.load_file(str(tmp_path / "out" / "s.safetensors"))
    assert back["scalar"].shape == ()
    assert_arrays_equal(back, tensors)
    assert_arrays_equal(repo.load(), tensors)


def test_commit_tensors_refuses_bad_input(repo: Repository) -> None:
    with pytest.raises(InputError):
        repo.commit_tensors({})
    with pytest.raises(InputError):
        repo.commit_tensors({"__metadata__": np.zeros(2, np.float32)})
    with pytest.raises(InputError):
        repo.commit_tensors({"s": np.array(["text"])})
    with pytest.raises(InputError):
        repo.commit_tensors({"x": np.zeros(2, np.float32)}, path="../escape.safetensors")
    assert repo.head().target is None


def test_commit_tensors_dedups_with_official_file(
    repo: Repository, tmp_path: Path, rng: np.random.Generator
) -> None:
    tensors = official_tensors(rng)
    tensor_bytes = sum(a.nbytes for a in tensors.values())
    assert tensor_bytes > 350_000
    first = repo.commit_tensors(tensors, "model.safetensors", "memory")
    assert first.new_stored_size > tensor_bytes * 0.8  # random data: really stored
    ck = tmp_path / "ck"
    ck.mkdir()
    # The official writer orders tensors differently and adds its own header.
    stnp.save_file(tensors, str(ck / "model.safetensors"), metadata={"by": "safetensors"})
    second = repo.commit(ck, "official file")
    # Only the new header chunk, the file manifest, the tree and the commit are new.
    assert second.new_stored_size < 8192, second
    assert second.new_objects <= 4
    out = tmp_path / "out"
    repo.restore("HEAD", out)
    assert (out / "model.safetensors").read_bytes() == (ck / "model.safetensors").read_bytes()
    assert_arrays_equal(repo.load("HEAD"), tensors)
    assert_arrays_equal(repo.load("HEAD~1"), tensors)


# --- dedup -------------------------------------------------------------------------


def test_recommit_unchanged_stores_no_chunks(
    repo: Repository, tmp_path: Path, rng: np.random.Generator, write_ckpt
) -> None:
    ck = write_ckpt(tmp_path / "ck", {"model.safetensors": model(rng, scale=64), "cfg.json": "{}"})
    first = repo.commit(ck, "one")
    before = repo.stats()
    second = repo.commit(ck, "two")
    after = repo.stats()
    assert second.logical_size == first.logical_size
    assert second.new_objects == 1  # only the commit object itself
    assert second.new_stored_size < 1024
    assert after.unique_size == before.unique_size
    assert after.chunk_stored_size == before.chunk_stored_size
    assert after.objects == before.objects + 1
    assert len(after.commits) == 2
    assert after.logical_size == 2 * first.logical_size
    assert after.dedup_ratio == pytest.approx(2 * first.logical_size / before.unique_size)


def test_moved_tensor_dedups(
    repo: Repository, tmp_path: Path, rng: np.random.Generator, write_ckpt
) -> None:
    big = rng.standard_normal((512, 1024), dtype=np.float32)  # 2 MiB
    small = rng.standard_normal(100, dtype=np.float32)
    repo.commit(write_ckpt(tmp_path / "1", {"a.safetensors": {"small": small, "big": big}}), "1")
    # Same file, the tensor now sits at another offset (new tensor in front, renamed).
    other = rng.standard_normal(333, dtype=np.float32)
    r2 = repo.commit(
        write_ckpt(tmp_path / "2", {"a.safetensors": {"other": other, "moved": big}}), "2"
    )
    assert r2.new_stored_size < big.nbytes / 20, r2
    # Another file, another directory, with other neighbours.
    r3 = repo.commit(
        write_ckpt(
            tmp_path / "3",
            {"x/b.safetensors": {"pre": rng.standard_normal(7).astype(np.float32), "big": big}},
        ),
        "3",
    )
    assert r3.new_stored_size < big.nbytes / 20, r3
    assert np.array_equal(repo.load("HEAD", file="x/b.safetensors")["big"], big)
    assert np.array_equal(repo.load("HEAD~1")["moved"], big)
    assert repo.stats().unique_size < 1.1 * big.nbytes


def test_grown_tensor_keeps_leading_chunks(
    repo: Repository, tmp_path: Path, rng: np.random.Generator, write_ckpt
) -> None:
    """A tensor whose tail grew (vocabulary resize) keeps its leading full chunks."""
    from wvc.ingest import DEFAULT_CHUNK_SIZE

    hidden = 1024  # 4 KiB per f32 row: 1024 rows per 4 MiB chunk
    emb = rng.standard_normal((2100, hidden), dtype=np.float32)  # 2 full chunks + a tail
    repo.commit(write_ckpt(tmp_path / "1", {"m.safetensors": {"embed": emb}}))
    unique_before = repo.stats().unique_size
    grown = np.concatenate([emb, rng.standard_normal((200, hidden), dtype=np.float32)])
    r2 = repo.commit(write_ckpt(tmp_path / "2", {"m.safetensors": {"embed": grown}}))
    tail = grown.nbytes - 2 * DEFAULT_CHUNK_SIZE
    # New raw chunk bytes: the new tail chunk and the new header, nothing else.
    assert tail <= repo.stats().unique_size - unique_before < tail + 4096
    assert r2.new_stored_size < 1.1 * tail, r2
    assert np.array_equal(repo.load()["embed"], grown)
    assert np.array_equal(repo.load("HEAD~1")["embed"], emb)


def test_changed_tensor_stores_only_its_chunks(
    repo: Repository, tmp_path: Path, rng: np.random.Generator, write_ckpt
) -> None:
    tensors = {
        f"layer.{i}": rng.standard_normal((256, 256), dtype=np.float32) for i in range(4)
    }  # 256 KiB each
    repo.commit(write_ckpt(tmp_path / "1", {"m.safetensors": tensors}))
    changed = dict(tensors)
    changed["layer.2"] = changed["layer.2"].copy()
    changed["layer.2"][10, 10] += 1.0
    r2 = repo.commit(write_ckpt(tmp_path / "2", {"m.safetensors": changed}), delta=False)
    one = tensors["layer.0"].nbytes
    assert 0.5 * one < r2.new_stored_size < 1.5 * one, r2
    # With delta encoding (the default) one changed element costs a few hundred bytes.
    again = dict(changed)
    again["layer.2"] = changed["layer.2"].copy()
    again["layer.2"][20, 20] += 1.0
    r3 = repo.commit(write_ckpt(tmp_path / "3", {"m.safetensors": again}))
    assert r3.new_stored_size < 0.02 * one, r3
    assert repo.load(r3.id)["layer.2"].tobytes() == again["layer.2"].tobytes()


# --- revisions ---------------------------------------------------------------------


def make_chain(repo: Repository, n: int) -> list[str]:
    ids = []
    for i in range(n):
        ids.append(repo.commit_tensors({"x": np.array([i], np.int64)}, message=f"c{i}").id)
    return ids


def test_resolve_names_prefixes_and_suffixes(repo: Repository) -> None:
    ids = make_chain(repo, 4)
    head = ids[-1]
    assert repo.resolve("HEAD") == head
    assert repo.resolve("main") == head
    assert repo.resolve(head) == head
    assert repo.resolve(head.upper()) == head
    assert repo.resolve(f"  {head}  ") == head
    for n in (4, 7, 12, 40):
        assert repo.resolve(ids[1][:n]) == ids[1]
    with pytest.raises(RevisionNotFoundError):
        repo.resolve(ids[1][:3])  # too short to be a prefix
    with pytest.raises(RevisionNotFoundError):
        repo.resolve("zzzzzz")
    with pytest.raises(RevisionNotFoundError):
        repo.resolve("0" * 64 if not any(i.startswith("0000") for i in ids) else "f" * 64)
    assert repo.resolve("HEAD~0") == head
    assert repo.resolve("HEAD~") == ids[2]
    assert repo.resolve("HEAD~1") == ids[2]
    assert repo.resolve("HEAD~3") == ids[0]
    assert repo.resolve("HEAD^") == ids[2]
    assert repo.resolve("HEAD^1") == ids[2]
    assert repo.resolve("HEAD^^") == ids[1]
    assert repo.resolve("HEAD~1^") == ids[1]
    assert repo.resolve("main~2") == ids[1]
    assert repo.resolve(f"{ids[2][:6]}~2") == ids[0]
    repo.tag("v1", ids[1])
    assert repo.resolve("v1") == ids[1]
    assert repo.resolve("v1^") == ids[0]


def test_resolve_errors_on_root_and_bad_syntax(repo: Repository) -> None:
    ids = make_chain(repo, 2)
    root = ids[0]
    for rev in (f"{root}^", f"{root}~1", "HEAD~2", "HEAD^^", "HEAD~5", "HEAD^2", f"{root}^2"):
        with pytest.raises(RevisionNotFoundError) as ei:
            repo.resolve(rev)
        assert "parent" in str(ei.value), rev
        assert "\n" not in str(ei.value)
    for rev in ("HEAD~x", "~1", "^", "HEAD~1~-1", ""):
        with pytest.raises(RevisionNotFoundError):
            repo.resolve(rev)


def test_resolve_branch_wins_over_prefix(repo: Repository) -> None:
    ids = make_chain(repo, 2)
    name = ids[0][:8]
    repo.branch(name, ids[1])
    assert repo.resolve(name) == ids[1]
    assert repo.resolve(ids[0][:9]) == ids[0]


def test_ambiguous_prefix(repo: Repository) -> None:
    """Brute-force commits until two ids share a 4-hex prefix (~320 expected, ~1 s)."""
    seen: dict[str, str] = {}
    pair = None
    for i in range(5000):
        cid = repo.commit_tensors({"x": np.zeros(1, np.int8)}, message=f"m{i}").id
        if cid[:4] in seen:
            pair = (seen[cid[:4]], cid)
            break
        seen[cid[:4]] = cid
    assert pair is not None
    a, b = pair
    common = next(a[:i] for i in range(64) if a[i] != b[i])
    assert len(common) >= 4
    with pytest.raises(AmbiguousRevisionError) as ei:
        repo.resolve(common)
    assert set(ei.value.candidates) == {a, b}
    assert isinstance(ei.value, RevisionNotFoundError)
    assert "ambiguous" in str(ei.value)
    assert a[:12] in str(ei.value) and b[:12] in str(ei.value)
    # One more digit tells them apart.
    assert repo.resolve(a[: len(common) + 1]) == a
    assert repo.resolve(b[: len(common) + 1]) == b


# --- branches, tags, switch --------------------------------------------------------


def test_branch_switch_and_commit_extends_branch(repo: Repository) -> None:
    ids = make_chain(repo, 3)
    assert repo.head().branch == "main"
    exp = repo.branch("exp", "HEAD~1")
    assert exp.target == ids[1]
    assert [(b.name, b.target) for b in repo.branches()] == [("exp", ids[1]), ("main", ids[2])]
    state = repo.switch("exp")
    assert (state.branch, state.target) == ("exp", ids[1])
    res = repo.commit_tensors({"x": np.array([42], np.int64)}, message="on exp")
    assert res.branch == "exp"
    assert res.parents == (ids[1],)
    assert repo.resolve("exp") == res.id
    assert repo.resolve("main") == ids[2]  # untouched
    assert repo.resolve("HEAD") == res.id
    assert [e.id for e in repo.log()] == [res.id, ids[1], ids[0]]
    assert [e.id for e in repo.log("main")] == ids[::-1]
    # switch -c creates at HEAD and moves to it
    st = repo.switch("exp2", create=True)
    assert (st.branch, st.target) == ("exp2", res.id)
    with pytest.raises(RefError):
        repo.switch("exp2", create=True)
    repo.switch("main")
    r2 = repo.commit_tensors({"x": np.array([43], np.int64)}, message="on main")
    assert r2.parents == (ids[2],)
    assert repo.resolve("exp") == res.id


def test_branch_exists_and_force(repo: Repository) -> None:
    ids = make_chain(repo, 2)
    repo.branch("b", ids[0])
    with pytest.raises(RefError):
        repo.branch("b", ids[1])
    assert repo.resolve("b") == ids[0]
    repo.branch("b", ids[1], force=True)
    assert repo.resolve("b") == ids[1]
    with pytest.raises(RevisionNotFoundError):
        repo.branch("c", "nosuch")
    assert [b.name for b in repo.branches()] == ["b", "main"]


def test_detached_head(repo: Repository) -> None:
    ids = make_chain(repo, 3)
    state = repo.switch(ids[0])
    assert state.branch is None
    assert state.target == ids[0]
    res = repo.commit_tensors({"x": np.array([9], np.int64)}, message="detached")
    assert res.branch is None
    assert res.parents == (ids[0],)
    assert repo.head().branch is None
    assert repo.head().target == res.id
    assert repo.resolve("main") == ids[2]  # no branch moved
    assert {b.name: b.target for b in repo.branches()} == {"main": ids[2]}
    # A tag also detaches.
    repo.tag("t", ids[1])
    st = repo.switch("t")
    assert (st.branch, st.target) == (None, ids[1])
    # HEAD~1 style targets detach too.
    st = repo.switch("main~2")
    assert (st.branch, st.target) == (None, ids[0])
    with pytest.raises(RevisionNotFoundError):
        repo.switch("no-such-branch")
    assert repo.head().target == ids[0]


def test_tags(repo: Repository) -> None:
    ids = make_chain(repo, 2)
    t = repo.tag("v1.0")
    assert t.target == ids[1]
    repo.tag("release/old", "HEAD~1")
    assert [(x.name, x.target) for x in repo.tags()] == [
        ("release/old", ids[0]),
        ("v1.0", ids[1]),
    ]
    with pytest.raises(RefError):
        repo.tag("v1.0", ids[0])
    repo.tag("v1.0", ids[0], force=True)
    assert repo.resolve("v1.0") == ids[0]
    # A tag does not move when HEAD advances.
    repo.commit_tensors({"x": np.array([5], np.int64)})
    assert repo.resolve("release/old") == ids[0]
    removed = repo.delete_tag("v1.0")
    assert removed.target == ids[0]
    with pytest.raises(RevisionNotFoundError):
        repo.resolve("v1.0")
    with pytest.raises(RefError):
        repo.delete_tag("v1.0")
    # Tags and branches live in different namespaces; the branch wins on lookup.
    repo.tag("same", ids[0])
    repo.branch("same", ids[1])
    assert repo.resolve("same") == ids[1]


BAD_NAMES = [
    "",
    "-x",
    ".hidden",
    "/abs",
    "a..b",
    "a b",
    "tab\tname",
    "a~1",
    "a^",
    "a:b",
    "a?",
    "a*",
    "a[b",
    "back\\slash",
    "x.lock",
    "ends.",
    "ends/",
    "a//b",
    "a/.b",
    "a@{b",
    "HEAD",
    "del\x7f",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_ref_names_refused(repo: Repository, name: str) -> None:
    make_chain(repo, 1)
    with pytest.raises(RefError):
        repo.branch(name)
    with pytest.raises(RefError):
        repo.tag(name)
    with pytest.raises(RefError):
        repo.switch(name, create=True)
    assert [b.name for b in repo.branches()] == ["main"]
    assert repo.tags() == []
    assert repo.head().branch == "main"


def test_valid_ref_names_accepted(repo: Repository) -> None:
    make_chain(repo, 1)
    for name in ("feature/x-1", "v1.2.3", "UPPER_case", "a.b/c_d", "日本"):
        repo.branch(name)
        repo.tag(name)
        assert repo.resolve(name) == repo.resolve("HEAD")


def test_delete_branch(repo: Repository) -> None:
    ids = make_chain(repo, 2)
    with pytest.raises(RefError) as ei:
        repo.delete_branch("main")
    assert "main" in str(ei.value)
    assert repo.resolve("main") == ids[1]
    repo.branch("old", ids[0])
    gone = repo.delete_branch("old")
    assert gone.target == ids[0]
    assert [b.name for b in repo.branches()] == ["main"]
    with pytest.raises(RefError):
        repo.delete_branch("old")
    # After switching away, the former branch can be deleted; commits stay reachable by id.
    repo.switch("side", create=True)
    repo.delete_branch("main")
    assert [b.name for b in repo.branches()] == ["side"]
    assert repo.resolve(ids[1]) == ids[1]
    assert repo.fsck().ok


def test_switch_create_on_unborn_branch_refused(repo: Repository) -> None:
    with pytest.raises(RefError):
        repo.switch("x", create=True)
    assert repo.branches() == []


def test_switch_to_new_branch_then_first_commit(repo: Repository) -> None:
    """A repository whose first commit lands on main keeps main as HEAD's branch."""
    res = repo.commit_tensors({"x": np.ones(3, np.float32)})
    assert res.branch == "main"
    assert repo.head() == type(repo.head())("main", res.id)
    assert repo.fsck().ok


def write_raw_safetensors(path: Path, entries: list[tuple[str, str, list[int], bytes]]) -> None:
    """A safetensors file written by hand (for dtypes numpy cannot hold)."""
    header: dict[str, object] = {}
    offset = 0
    for name, dtype, shape, data in entries:
        header[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(e[3] for e in entries))


def test_show_reports_every_dtype_name_as_written(repo: Repository, tmp_path: Path) -> None:
    """Each safetensors dtype keeps its own name, including the packed sub-byte ones."""
    entries = [
        ("f6a", "F6_E3M2", [4], b"\x01\x02\x03"),  # 4 x 6 bits = 3 bytes
        ("f6b", "F6_E2M3", [4], b"\x04\x05\x06"),
        ("f4", "F4", [2, 3], b"\x07\x08\x09"),
        ("e8m0", "F8_E8M0", [2], b"\x7f\x80"),
        ("c64", "C64", [1], b"\x00" * 8),
        ("e4m3", "F8_E4M3", [1], b"\x38"),
        ("e5m2", "F8_E5M2", [1], b"\x3c"),
    ]
    ck = tmp_path / "ck"
    ck.mkdir()
    write_raw_safetensors(ck / "m.safetensors", entries)
    repo.commit(ck)
    shown = {t.name: (t.dtype, t.shape, t.size) for t in repo.show().files[0].tensors}
    assert shown == {n: (d, tuple(s), len(b)) for n, d, s, b in entries}
    loaded = repo.load()
    for name, _dtype, _shape, data in entries:
        assert loaded[name].tobytes() == data, name
    assert loaded["f6a"].dtype == np.uint8  # packed sub-byte data comes back as raw bytes
    repo.restore("HEAD", tmp_path / "out")
    assert (tmp_path / "out" / "m.safetensors").read_bytes() == (ck / "m.safetensors").read_bytes()


def test_unusual_file_names_roundtrip(
    repo: Repository, tmp_path: Path, write_ckpt, same_tree
) -> None:
    ck = write_ckpt(
        tmp_path / "ck",
        {
            "with space.bin": b"1",
            "ünïcödé/模型.safetensors": {"w": np.arange(3, dtype=np.float32)},
            "-leading-dash": b"2",
            "#hash%percent&amp": b"3",
            "a/b/c/d/e/f/deep.txt": b"4",
            ".hidden": b"5",
        },
    )
    res = repo.commit(ck)
    assert res.files == 6
    repo.restore("HEAD", tmp_path / "out")
    same_tree(ck, tmp_path / "out")
    assert np.array_equal(repo.load(file="ünïcödé/模型.safetensors")["w"], np.arange(3.0))


def test_symlinked_directory_refused(repo: Repository, tmp_path: Path, write_ckpt) -> None:
    write_ckpt(tmp_path / "real", {"x.bin": b"x"})
    ck = write_ckpt(tmp_path / "ck", {"a.bin": b"a"})
    (ck / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    with pytest.raises(InputError) as ei:
        repo.commit(ck)
    assert "link" in str(ei.value)
    assert repo.head().target is None


def test_identical_chunks_in_flight_are_stored_and_counted_once(repo: Repository) -> None:
    """Many copies of one tensor in one commit: one chunk object, counted once."""
    rng = np.random.default_rng(7)
    a = (rng.standard_normal(2 * 1024 * 1024, dtype=np.float32) * 0.02).astype(ml_dtypes.bfloat16)
    res = repo.commit_tensors({f"layers.{i}.w": a for i in range(32)})
    on_disk = list(repo.objects.iter_ids())
    stored = sum(repo.objects.read_header(oid)[1] for oid in on_disk)
    assert res.new_objects == len(on_disk)
    assert res.new_stored_size == stored
    st = repo.stats()
    assert st.stored_size == stored
