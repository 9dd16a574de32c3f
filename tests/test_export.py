"""export: a commit's tensors written as safetensors (sharded or not) or npz, from every
tensor-aware format wvc reads: PyTorch, safetensors, npz, GGUF float tensors and sharded
safetensors checkpoints. API (repo.export) and CLI (wvc export)."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import gguf
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy as stnp
import safetensors.torch as sttorch
import torch

from wvc.cli import parse_size
from wvc.errors import InputError, PathNotFoundError, TargetNotEmptyError
from wvc.ops.export import ExportResult
from wvc.repository import Repository

RunWvc = Callable[..., subprocess.CompletedProcess[str]]

# --- helpers -----------------------------------------------------------------------


def tbytes(t: Any) -> bytes:
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def assert_same_tensor(got: Any, expected: Any, name: str = "") -> None:
    assert got.dtype == expected.dtype, name
    assert tuple(got.shape) == tuple(expected.shape), name
    assert tbytes(got) == tbytes(expected), name


def assert_same_array(got: np.ndarray, expected: np.ndarray, name: str = "") -> None:
    assert got.dtype == expected.dtype, name
    assert got.shape == expected.shape, name
    assert got.tobytes() == np.ascontiguousarray(expected).tobytes(), name


def listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def safetensors_header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header: dict[str, Any] = json.loads(f.read(n))
    return header


def tensor_bytes_in(path: Path) -> int:
    header = safetensors_header(path)
    return sum(
        v["data_offsets"][1] - v["data_offsets"][0]
        for k, v in header.items()
        if k != "__metadata__"
    )


def one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wvc: error: "), proc.stderr
    return lines[0]


def no_staging_left(parent: Path) -> None:
    assert not [p.name for p in parent.iterdir() if "wvc-staging" in p.name]


def torch_checkpoint(path: Path) -> dict[str, Any]:
    """A torch.save state dict with tied weights, a transposed view, a slice, bf16, a scalar."""
    torch.manual_seed(0)
    emb = torch.randn(8, 4)
    storage = torch.randn(20)
    sd = {
        "embed.weight": emb,
        "lm_head.weight": emb,  # tied: the same tensor
        "proj.weight_t": torch.randn(6, 4).t(),  # transposed view of its own storage
        "slice": storage[3:13],  # offset view
        "slice2": storage[5:9].view(2, 2),  # a second view of the same storage
        "bf16": torch.randn(3, 5).to(torch.bfloat16),
        "steps": torch.tensor(17, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    loaded: dict[str, Any] = torch.load(path, weights_only=True)
    return loaded


def write_gguf(
    path: Path, tensors: dict[str, np.ndarray], q8: dict[str, np.ndarray] | None = None
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32("test.value", 3)
    for name, a in tensors.items():
        w.add_tensor(name, a)
    for name, a in (q8 or {}).items():
        q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def sharded_checkpoint(root: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    shard1 = {
        "model.embed": rng.standard_normal((16, 8)).astype(np.float32),
        "model.layers.0.w": rng.standard_normal((8, 8)).astype(np.float16),
    }
    shard2 = {
        "model.layers.1.w": rng.standard_normal((8, 8)).astype(np.float16),
        "model.norm": rng.standard_normal(8).astype(np.float32),
        "lm_head": rng.standard_normal((16, 8)).astype(np.float32),
    }
    root.mkdir(parents=True, exist_ok=True)
    stnp.save_file(shard1, str(root / "model-00001-of-00002.safetensors"))
    stnp.save_file(shard2, str(root / "model-00002-of-00002.safetensors"))
    weight_map = {k: "model-00001-of-00002.safetensors" for k in shard1}
    weight_map |= {k: "model-00002-of-00002.safetensors" for k in shard2}
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    (root / "config.json").write_text('{"hidden_size": 8}\n')
    (root / "tokenizer.json").write_text('{"vocab": {}}\n')
    return {**shard1, **shard2}


# --- sources ------------------------------------------------------------------------


def test_export_torch_checkpoint_with_tied_and_transposed(repo: Repository, tmp_path: Path) -> None:
    expected = torch_checkpoint(tmp_path / "src" / "pytorch_model.bin")
    repo.commit(tmp_path / "src" / "pytorch_model.bin", "torch")
    res = repo.export("HEAD", tmp_path / "out")
    assert isinstance(res, ExportResult)
    assert res.files == ("model.safetensors",)
    assert res.tensors == len(expected)
    assert res.format == "safetensors"
    assert res.commit == repo.resolve("HEAD")
    out = tmp_path / "out" / "model.safetensors"
    assert listing(tmp_path / "out") == ["model.safetensors"]
    assert res.size == out.stat().st_size
    loaded = sttorch.load_file(out)
    assert sorted(loaded) == sorted(expected)
    for name, t in expected.items():
        assert_same_tensor(loaded[name], t, name)
    header = safetensors_header(out)
    assert header["__metadata__"] == {"format": "pt"}
    # safetensors data must be back to back: offsets cover the data exactly once.
    spans = sorted(tuple(v["data_offsets"]) for k, v in header.items() if k != "__metadata__")
    pos = 0
    for start, stop in spans:
        assert start == pos
        pos = stop
    assert 8 + len(json.dumps(header).encode()) <= out.stat().st_size


def test_export_safetensors_file(
    repo: Repository, tmp_path: Path, rng: np.random.Generator, write_ckpt: Any
) -> None:
    arrays = {
        "a": rng.standard_normal((5, 7)).astype(np.float32),
        "b": rng.integers(-100, 100, size=(3,)).astype(np.int16),
        "c": np.array(2.5, dtype=np.float64),
        "d": np.zeros((0, 3), dtype=np.float32),
        "e": rng.integers(0, 2, size=4).astype(bool),
    }
    write_ckpt(tmp_path / "src", {"model.safetensors": arrays})
    repo.commit(tmp_path / "src")
    repo.export("HEAD", tmp_path / "out")
    loaded = stnp.load_file(str(tmp_path / "out" / "model.safetensors"))
    assert sorted(loaded) == sorted(arrays)
    for name, a in arrays.items():
        assert_same_array(loaded[name], a, name)


def test_export_bf16_and_float8_safetensors(repo: Repository, tmp_path: Path) -> None:
    sd = {
        "bf": torch.randn(4, 3).to(torch.bfloat16),
        "e4m3": torch.randn(6).to(torch.float8_e4m3fn),
        "e8m0": torch.ones(2).to(torch.float8_e8m0fnu),
    }
    repo.commit_state_dict(sd)
    repo.export("HEAD", tmp_path / "out")
    loaded = sttorch.load_file(tmp_path / "out" / "model.safetensors")
    for name, t in sd.items():
        assert_same_tensor(loaded[name], t, name)


def test_export_npz(repo: Repository, tmp_path: Path, rng: np.random.Generator) -> None:
    arrays = {
        "w": rng.standard_normal((4, 4)).astype(np.float32),
        "ids": np.arange(10, dtype=np.int64),
        "half": rng.standard_normal(3).astype(np.float16),
        "flag": np.array(True),
    }
    src = tmp_path / "src"
    src.mkdir()
    np.savez(src / "weights.npz", **arrays)
    repo.commit(src / "weights.npz")
    expected = dict(np.load(src / "weights.npz"))
    repo.export("HEAD", tmp_path / "out")
    loaded = stnp.load_file(str(tmp_path / "out" / "model.safetensors"))
    assert sorted(loaded) == sorted(expected)
    for name, a in expected.items():
        assert_same_array(loaded[name], a, name)


def test_export_compressed_npz_has_no_tensors(repo: Repository, tmp_path: Path) -> None:
    np.savez_compressed(tmp_path / "c.npz", w=np.ones(100, np.float32))
    repo.commit(tmp_path / "c.npz")
    with pytest.raises(InputError, match="no tensors"):
        repo.export("HEAD", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_gguf_float_tensors(repo: Repository, tmp_path: Path) -> None:
    tensors = {
        "tok_embd.weight": np.arange(24, dtype=np.float32).reshape(6, 4),
        "blk.0.attn.weight": np.linspace(-1, 1, 16, dtype=np.float32)
        .reshape(2, 8)
        .astype(np.float16),
        "ids": np.arange(5, dtype=np.int32),
        "f64": np.array([1.5, -2.0, 3.25]),
        "i8": np.arange(-2, 2, dtype=np.int8),
    }
    write_gguf(tmp_path / "src" / "model.gguf", tensors)
    reader = gguf.GGUFReader(str(tmp_path / "src" / "model.gguf"))
    from_reader = {t.name: np.array(t.data) for t in reader.tensors}
    repo.commit(tmp_path / "src" / "model.gguf")
    repo.export("HEAD", tmp_path / "out")
    loaded = stnp.load_file(str(tmp_path / "out" / "model.safetensors"))
    assert sorted(loaded) == sorted(tensors)
    for name, a in tensors.items():
        assert_same_array(loaded[name], a, name)  # outermost dimension first, as numpy
        assert_same_array(loaded[name], from_reader[name], name)


def test_export_quantized_gguf_is_refused_naming_the_tensor(
    repo: Repository, tmp_path: Path, run_wvc: RunWvc
) -> None:
    write_gguf(
        tmp_path / "src" / "model.gguf",
        {"ok.weight": np.ones((2, 4), np.float32)},
        q8={"blk.0.ffn_q8.weight": np.random.default_rng(0).random((2, 64), dtype=np.float32)},
    )
    repo.commit(tmp_path / "src" / "model.gguf")
    with pytest.raises(InputError, match=r"blk\.0\.ffn_q8\.weight.*Q8_0"):
        repo.export("HEAD", tmp_path / "api-out")
    assert not (tmp_path / "api-out").exists()
    with pytest.raises(InputError, match=r"blk\.0\.ffn_q8\.weight.*Q8_0"):
        repo.export("HEAD", tmp_path / "api-out", format="npz")
    out = tmp_path / "cli-out"
    proc = run_wvc("export", "--to", out, cwd=repo.root)
    line = one_line_error(proc, 5)
    assert "blk.0.ffn_q8.weight" in line and "Q8_0" in line
    assert not out.exists()
    no_staging_left(tmp_path)
    # Only the float tensor, selected by file: still refused (the file has a Q8_0 tensor).
    with pytest.raises(InputError):
        repo.export("HEAD", tmp_path / "api-out", path="model.gguf")


def test_export_sharded_checkpoint(
    repo: Repository, tmp_path: Path, rng: np.random.Generator
) -> None:
    arrays = sharded_checkpoint(tmp_path / "src", rng)
    repo.commit(tmp_path / "src")
    res = repo.export("HEAD", tmp_path / "out")
    # One safetensors file; the source's index is not copied, the other files are.
    assert listing(tmp_path / "out") == ["config.json", "model.safetensors", "tokenizer.json"]
    assert sorted(res.files) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert res.tensors == len(arrays)
    assert res.size == sum((tmp_path / "out" / f).stat().st_size for f in res.files)
    for f in ("config.json", "tokenizer.json"):
        assert (tmp_path / "out" / f).read_bytes() == (tmp_path / "src" / f).read_bytes()
    loaded = stnp.load_file(str(tmp_path / "out" / "model.safetensors"))
    assert sorted(loaded) == sorted(arrays)
    for name, a in arrays.items():
        assert_same_array(loaded[name], a, name)
    # Selecting the index exports the tensors it names.
    repo.export("HEAD", tmp_path / "by-index", path="model.safetensors.index.json")
    assert listing(tmp_path / "by-index") == ["model.safetensors"]
    by_index = stnp.load_file(str(tmp_path / "by-index" / "model.safetensors"))
    assert sorted(by_index) == sorted(arrays)
    # Selecting one shard exports its tensors only.
    repo.export(
        "HEAD", tmp_path / "one", path="model-00002-of-00002.safetensors", tensors_only=True
    )
    one = stnp.load_file(str(tmp_path / "one" / "model.safetensors"))
    assert sorted(one) == ["lm_head", "model.layers.1.w", "model.norm"]


def test_export_selects_a_directory(
    repo: Repository, tmp_path: Path, rng: np.random.Generator
) -> None:
    a = sharded_checkpoint(tmp_path / "base", rng)
    (tmp_path / "other").mkdir()
    stnp.save_file({"x": np.ones(3, np.float32)}, str(tmp_path / "other" / "model.safetensors"))
    (tmp_path / "other" / "notes.txt").write_text("hi")
    repo.commit([tmp_path / "base", tmp_path / "other"])
    repo.export("HEAD", tmp_path / "out", path="base")
    assert listing(tmp_path / "out") == ["config.json", "model.safetensors", "tokenizer.json"]
    assert sorted(stnp.load_file(str(tmp_path / "out" / "model.safetensors"))) == sorted(a)
    repo.export("HEAD", tmp_path / "out2", path="other/")
    assert listing(tmp_path / "out2") == ["model.safetensors", "notes.txt"]
    with pytest.raises(PathNotFoundError):
        repo.export("HEAD", tmp_path / "out3", path="nope")
    assert not (tmp_path / "out3").exists()


def test_same_tensor_name_in_two_files_needs_a_selection(repo: Repository, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    stnp.save_file({"w": np.ones(2, np.float32)}, str(tmp_path / "src" / "a.safetensors"))
    stnp.save_file({"w": np.zeros(2, np.float32)}, str(tmp_path / "src" / "b.safetensors"))
    repo.commit(tmp_path / "src")
    with pytest.raises(InputError, match=r"'w'.*a\.safetensors.*b\.safetensors"):
        repo.export("HEAD", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    repo.export("HEAD", tmp_path / "out", path="b.safetensors")
    np.testing.assert_array_equal(
        stnp.load_file(str(tmp_path / "out" / "model.safetensors"))["w"], [0, 0]
    )


def test_tensor_named_like_the_metadata_key(repo: Repository, tmp_path: Path) -> None:
    """An npz (or .pt) may hold a tensor named ``__metadata__``, the key safetensors
    reserves for its string map. export must refuse it clearly, or write a readable file."""
    np.savez(tmp_path / "w.npz", __metadata__=np.arange(3, dtype=np.float32), b=np.ones(2))
    repo.commit(tmp_path / "w.npz")
    out = tmp_path / "out"
    try:
        repo.export("HEAD", out)
    except InputError as e:
        assert "__metadata__" in str(e)
        assert not out.exists()
        return
    loaded = stnp.load_file(str(out / "model.safetensors"))
    np.testing.assert_array_equal(loaded["b"], np.ones(2))


# --- sharding -----------------------------------------------------------------------


def _sharding_source(repo: Repository, rng: np.random.Generator) -> dict[str, np.ndarray]:
    arrays = {f"layer.{i:02d}": rng.standard_normal(25 + 10 * (i % 4)).astype(np.float32)
              for i in range(12)}  # fmt: skip
    arrays["huge"] = rng.standard_normal(1000).astype(np.float32)  # 4000 bytes > the limit
    arrays["tail"] = rng.standard_normal(7).astype(np.float32)
    repo.commit_state_dict(arrays)
    return arrays


def _check_shards(out: Path, arrays: dict[str, np.ndarray], limit: int) -> list[str]:
    files = listing(out)
    shards = [f for f in files if f.endswith(".safetensors")]
    n = len(shards)
    assert n > 1
    assert shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    assert "model.safetensors.index.json" in files
    index = json.loads((out / "model.safetensors.index.json").read_text())
    weight_map = index["weight_map"]
    assert sorted(weight_map) == sorted(arrays)
    assert set(weight_map.values()) == set(shards)
    assert index["metadata"]["total_size"] == sum(a.nbytes for a in arrays.values())
    seen: dict[str, np.ndarray] = {}
    for shard in shards:
        loaded = stnp.load_file(str(out / shard))
        assert loaded, shard
        for name in loaded:
            assert weight_map[name] == shard
        nbytes = tensor_bytes_in(out / shard)
        assert nbytes <= limit or len(loaded) == 1, (shard, nbytes, list(loaded))
        assert not set(loaded) & set(seen)
        seen |= loaded
    assert sorted(seen) == sorted(arrays)
    for name, a in arrays.items():
        assert_same_array(seen[name], a, name)
    return shards


def test_max_shard_size_splits_with_an_index(
    repo: Repository, tmp_path: Path, rng: np.random.Generator
) -> None:
    arrays = _sharding_source(repo, rng)
    res = repo.export("HEAD", tmp_path / "out", max_shard_size=400)
    shards = _check_shards(tmp_path / "out", arrays, 400)
    assert list(res.files) == [*shards, "model.safetensors.index.json"]
    assert res.size == sum(os.path.getsize(tmp_path / "out" / f) for f in res.files)
    # The huge tensor sits alone in its shard.
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    huge_shard = index["weight_map"]["huge"]
    assert [k for k, v in index["weight_map"].items() if v == huge_shard] == ["huge"]


def test_max_shard_size_larger_than_the_model_gives_one_file(
    repo: Repository, tmp_path: Path, rng: np.random.Generator
) -> None:
    arrays = _sharding_source(repo, rng)
    repo.export("HEAD", tmp_path / "out", max_shard_size=10**9)
    assert listing(tmp_path / "out") == ["model.safetensors"]
    assert sorted(stnp.load_file(str(tmp_path / "out" / "model.safetensors"))) == sorted(arrays)


def test_max_shard_size_on_the_cli(
    repo: Repository, tmp_path: Path, rng: np.random.Generator, run_wvc: RunWvc
) -> None:
    arrays = _sharding_source(repo, rng)
    out = tmp_path / "cli-out"
    proc = run_wvc("export", "--to", out, "--max-shard-size", "1KB", "--json", cwd=repo.root)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"commit", "to", "format", "files", "tensors", "size"}
    assert doc["format"] == "safetensors"
    assert doc["tensors"] == len(arrays)
    assert doc["commit"] == repo.resolve("HEAD")
    assert Path(doc["to"]).resolve() == out.resolve()
    assert sorted(doc["files"]) == listing(out)
    assert doc["size"] == sum((out / f).stat().st_size for f in doc["files"])
    _check_shards(out, arrays, 1000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5GB", 5 * 10**9),
        ("500MB", 500 * 10**6),
        ("2GiB", 2 * 2**30),
        ("1KiB", 1024),
        ("1.5KB", 1500),
        ("10kb", 10_000),
        (" 3 MiB ", 3 * 2**20),
        ("1024", 1024),
        ("7B", 7),
        ("1TB", 10**12),
    ],
)
def test_parse_size_accepts(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text", ["abc", "0", "0GB", "0.1B", "", "-1GB", "5XB", "1e9", "GB", "1.GB"]
)
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_size(text)


@pytest.mark.parametrize("size", ["abc", "0"])
def test_bad_max_shard_size_is_a_usage_error(
    repo: Repository, tmp_path: Path, run_wvc: RunWvc, size: str
) -> None:
    repo.commit_state_dict({"w": np.ones(4, np.float32)})
    out = tmp_path / "out"
    proc = run_wvc("export", "--to", out, "--max-shard-size", size, cwd=repo.root)
    assert proc.returncode == 2, proc.stderr
    assert "Invalid value" in proc.stderr and repr(size) in proc.stderr
    assert not out.exists()


def test_api_refuses_bad_shard_sizes_and_formats(repo: Repository, tmp_path: Path) -> None:
    repo.commit_state_dict({"w": np.ones(4, np.float32)})
    for kwargs in (
        {"max_shard_size": 0},
        {"max_shard_size": -5},
        {"max_shard_size": 100, "format": "npz"},
        {"format": "gguf"},
    ):
        with pytest.raises(InputError):
            repo.export("HEAD", tmp_path / "out", **kwargs)  # type: ignore[arg-type]
        assert not (tmp_path / "out").exists()


# --- npz output ---------------------------------------------------------------------


def test_npz_output_round_trips(repo: Repository, tmp_path: Path, rng: np.random.Generator) -> None:
    arrays = {
        "f32": rng.standard_normal((3, 4)).astype(np.float32),
        "f16": rng.standard_normal(5).astype(np.float16),
        "f64": rng.standard_normal(2),
        "i8": np.arange(-3, 3, dtype=np.int8),
        "u16": np.arange(4, dtype=np.uint16),
        "u64": np.array([2**64 - 1], dtype=np.uint64),
        "b": np.array([True, False]),
        "c64": np.array([1 + 2j], dtype=np.complex64),
        "scalar": np.array(7, dtype=np.int32),
        "empty": np.zeros((0, 2), dtype=np.float32),
        "nested/name.with.dots": np.ones(3, dtype=np.float32),
    }
    repo.commit_state_dict(arrays)
    res = repo.export("HEAD", tmp_path / "out", format="npz")
    assert res.files == ("model.npz",)
    assert res.format == "npz"
    assert res.size == (tmp_path / "out" / "model.npz").stat().st_size
    with np.load(tmp_path / "out" / "model.npz", allow_pickle=False) as z:
        assert sorted(z.files) == sorted(arrays)
        for name, a in arrays.items():
            assert_same_array(z[name], a, name)


def test_npz_output_from_torch_views(repo: Repository, tmp_path: Path) -> None:
    expected = torch_checkpoint(tmp_path / "src" / "m.pt")
    repo.commit(tmp_path / "src" / "m.pt")
    with pytest.raises(InputError, match=r"'bf16'.*BF16"):
        repo.export("HEAD", tmp_path / "out", format="npz")
    assert not (tmp_path / "out").exists()
    expected.pop("bf16")
    torch.save(expected, tmp_path / "src" / "m.pt")
    repo.commit(tmp_path / "src" / "m.pt")
    repo.export("HEAD", tmp_path / "out", format="npz")
    with np.load(tmp_path / "out" / "model.npz") as z:
        for name, t in expected.items():
            assert z[name].tobytes() == tbytes(t), name
            assert z[name].shape == tuple(t.shape), name


@pytest.mark.parametrize(
    ("dtype", "label"),
    [
        (ml_dtypes.bfloat16, "BF16"),
        (ml_dtypes.float8_e4m3fn, "F8_E4M3"),
        (ml_dtypes.float8_e5m2, "F8_E5M2"),
    ],
)
def test_npz_refuses_dtypes_npy_cannot_hold(
    repo: Repository, tmp_path: Path, run_wvc: RunWvc, dtype: Any, label: str
) -> None:
    repo.commit_state_dict({"ok": np.ones(2, np.float32), "odd.weight": np.ones(3).astype(dtype)})
    with pytest.raises(InputError, match=rf"'odd\.weight'.*{label}.*safetensors"):
        repo.export("HEAD", tmp_path / "out", format="npz")
    assert not (tmp_path / "out").exists()
    if label == "BF16":
        proc = run_wvc("export", "--format", "npz", "--to", tmp_path / "out", cwd=repo.root)
        line = one_line_error(proc, 5)
        assert "odd.weight" in line and "BF16" in line
        assert not (tmp_path / "out").exists()
    # safetensors takes it.
    repo.export("HEAD", tmp_path / "st")
    loaded = sttorch.load_file(tmp_path / "st" / "model.safetensors")
    assert tbytes(loaded["odd.weight"]) == np.ones(3).astype(dtype).tobytes()


# --- other files, targets, CLI ----------------------------------------------------------


def test_non_tensor_files_copied_unless_tensors_only(
    repo: Repository, tmp_path: Path, run_wvc: RunWvc
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    stnp.save_file({"w": np.arange(6, dtype=np.float32)}, str(src / "model.safetensors"))
    (src / "config.json").write_text('{"a": 1}\n')
    (src / "tok").mkdir()
    (src / "tok" / "vocab.txt").write_bytes(b"a\nb\n\x00\xff")
    repo.commit(src)
    res = repo.export("HEAD", tmp_path / "full")
    assert listing(tmp_path / "full") == ["config.json", "model.safetensors", "vocab.txt"]
    assert (tmp_path / "full" / "config.json").read_bytes() == (src / "config.json").read_bytes()
    assert (tmp_path / "full" / "vocab.txt").read_bytes() == (
        src / "tok" / "vocab.txt"
    ).read_bytes()
    assert res.tensors == 1
    res2 = repo.export("HEAD", tmp_path / "bare", tensors_only=True)
    assert listing(tmp_path / "bare") == ["model.safetensors"]
    assert res2.files == ("model.safetensors",)
    proc = run_wvc("export", "--tensors-only", "--to", tmp_path / "cli", cwd=repo.root)
    assert proc.returncode == 0, proc.stderr
    assert listing(tmp_path / "cli") == ["model.safetensors"]
    assert re.search(
        r"Exported 1 tensor\(s\) from [0-9a-f]{12} as safetensors: 1 file\(s\)", proc.stdout
    )
    repo.export("HEAD", tmp_path / "npz", format="npz")
    assert listing(tmp_path / "npz") == ["config.json", "model.npz", "vocab.txt"]


def test_other_file_named_like_the_output_is_refused(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "w.npy", np.ones(3, np.float32))
    # Compressed npz entries are opaque: a file without tensors, named like the output.
    np.savez_compressed(src / "model.npz", x=np.zeros(4))
    repo.commit(src)
    with pytest.raises(InputError, match="tensors-only"):
        repo.export("HEAD", tmp_path / "out", format="npz")
    assert not (tmp_path / "out").exists()
    no_staging_left(tmp_path)
    repo.export("HEAD", tmp_path / "out", format="npz", tensors_only=True)
    assert listing(tmp_path / "out") == ["model.npz"]
    with np.load(tmp_path / "out" / "model.npz") as z:
        assert z.files == ["w"]


def test_target_must_be_absent_or_empty(repo: Repository, tmp_path: Path, run_wvc: RunWvc) -> None:
    repo.commit_state_dict({"w": np.ones(3, np.float32)})
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(TargetNotEmptyError):
        repo.export("HEAD", target)
    assert listing(target) == ["keep.txt"]
    assert (target / "keep.txt").read_text() == "mine"
    proc = run_wvc("export", "--to", target, cwd=repo.root)
    assert "not empty" in one_line_error(proc, 5)
    assert listing(target) == ["keep.txt"]
    no_staging_left(tmp_path)
    # A file in the way is refused too.
    (tmp_path / "afile").write_text("x")
    with pytest.raises(TargetNotEmptyError):
        repo.export("HEAD", tmp_path / "afile")
    assert (tmp_path / "afile").read_text() == "x"
    # An existing empty directory is fine, and so are missing parents.
    (tmp_path / "empty").mkdir()
    repo.export("HEAD", tmp_path / "empty")
    assert listing(tmp_path / "empty") == ["model.safetensors"]
    repo.export("HEAD", tmp_path / "a" / "b" / "c")
    assert listing(tmp_path / "a" / "b" / "c") == ["model.safetensors"]


def test_export_of_an_older_revision_and_errors(repo: Repository, tmp_path: Path) -> None:
    with pytest.raises(Exception) as exc:  # no commits yet: some wvc error
        repo.export("HEAD", tmp_path / "none")
    assert exc.type.__module__ == "wvc.errors"
    repo.commit_state_dict({"w": np.zeros(2, np.float32)}, message="one")
    repo.commit_state_dict({"w": np.ones(2, np.float32)}, message="two")
    res = repo.export("HEAD~1", tmp_path / "old")
    assert res.commit == repo.log()[1].id
    np.testing.assert_array_equal(
        stnp.load_file(str(tmp_path / "old" / "model.safetensors"))["w"], [0, 0]
    )
    assert not (tmp_path / "none").exists()


def test_export_json_schema_and_human_output(
    repo: Repository, tmp_path: Path, run_wvc: RunWvc
) -> None:
    repo.commit_state_dict({"a": np.ones(3, np.float32), "b": np.zeros(2, np.int64)})
    proc = run_wvc("export", "HEAD", "--to", tmp_path / "j", "--json", cwd=repo.root)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc == {
        "commit": repo.resolve("HEAD"),
        "to": doc["to"],
        "format": "safetensors",
        "files": ["model.safetensors"],
        "tensors": 2,
        "size": (tmp_path / "j" / "model.safetensors").stat().st_size,
    }
    assert isinstance(doc["to"], str) and Path(doc["to"]).name == "j"
    proc = run_wvc("export", "--format", "npz", "--to", tmp_path / "n", "--json", cwd=repo.root)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["format"] == "npz" and doc["files"] == ["model.npz"] and doc["tensors"] == 2
