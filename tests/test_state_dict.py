"""Committing tensors from memory: repo.commit_state_dict with numpy arrays and torch
tensors (every dtype wvc maps, exact bits), lazy load_state_dict, background commits
and commits onto another branch."""

from __future__ import annotations

import itertools
import json
import math
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import safetensors.torch as sttorch
import torch
from safetensors import safe_open

from wvc.errors import (
    CorruptObjectError,
    InputError,
    IntegrityError,
    MissingObjectError,
    RefError,
    WvcError,
)
from wvc.objects import object_key
from wvc.ops.background import CommitHandle
from wvc.ops.commit import CommitResult
from wvc.repository import Repository

TORCH_DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.uint16,
    torch.uint32,
    torch.uint64,
    torch.bool,
    torch.complex64,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.float8_e8m0fnu,
]

# The numpy dtype load_state_dict(framework="numpy") must give for each torch dtype.
NUMPY_FOR_TORCH: dict[torch.dtype, Any] = {
    torch.float32: np.float32,
    torch.float64: np.float64,
    torch.float16: np.float16,
    torch.bfloat16: ml_dtypes.bfloat16,
    torch.int8: np.int8,
    torch.int16: np.int16,
    torch.int32: np.int32,
    torch.int64: np.int64,
    torch.uint8: np.uint8,
    torch.uint16: np.uint16,
    torch.uint32: np.uint32,
    torch.uint64: np.uint64,
    torch.bool: np.bool_,
    torch.complex64: np.complex64,
    torch.float8_e4m3fn: ml_dtypes.float8_e4m3fn,
    torch.float8_e5m2: ml_dtypes.float8_e5m2,
    torch.float8_e8m0fnu: ml_dtypes.float8_e8m0fnu,
}

SAFETENSORS_NAME: dict[torch.dtype, str] = {
    torch.float32: "F32",
    torch.float64: "F64",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int8: "I8",
    torch.int16: "I16",
    torch.int32: "I32",
    torch.int64: "I64",
    torch.uint8: "U8",
    torch.uint16: "U16",
    torch.uint32: "U32",
    torch.uint64: "U64",
    torch.bool: "BOOL",
    torch.complex64: "C64",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
    torch.float8_e8m0fnu: "F8_E8M0",
}


# --- helpers -----------------------------------------------------------------------


def itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def random_tensor(rng: np.random.Generator, dtype: torch.dtype, shape: tuple[int, ...]) -> Any:
    """A tensor of ``dtype`` whose bytes are random (NaN payloads and all); bools are 0/1."""
    n = math.prod(shape) * itemsize(dtype)
    if n == 0:
        return torch.empty(shape, dtype=dtype)
    if dtype == torch.bool:
        raw = rng.integers(0, 2, size=n, dtype=np.uint8)
    else:
        raw = rng.integers(0, 256, size=n, dtype=np.uint8)
    return torch.from_numpy(raw).view(dtype).reshape(shape).clone()


def tbytes(t: Any) -> bytes:
    """The exact bytes of a tensor's elements in row-major order."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def assert_same_tensor(got: Any, expected: Any) -> None:
    assert isinstance(got, torch.Tensor)
    assert got.dtype == expected.dtype
    assert tuple(got.shape) == tuple(expected.shape)
    flat_got = got.contiguous().reshape(-1).view(torch.uint8)
    flat_exp = expected.detach().contiguous().reshape(-1).view(torch.uint8)
    assert torch.equal(flat_got, flat_exp)


def all_dtypes_state_dict(rng: np.random.Generator, scalars: bool = True) -> dict[str, Any]:
    sd: dict[str, Any] = {}
    for d in TORCH_DTYPES:
        name = str(d).removeprefix("torch.")
        sd[f"{name}.mat"] = random_tensor(rng, d, (3, 5))
        if scalars:
            sd[f"{name}.scalar"] = random_tensor(rng, d, ())
        sd[f"{name}.empty"] = random_tensor(rng, d, (0, 4))
        sd[f"{name}.transposed"] = random_tensor(rng, d, (4, 6)).t()
    return sd


def chunk_file(repo: Repository, object_id: str) -> Path:
    return repo.dir / "objects" / object_key(object_id)


def chunks_of(sd: Any, name: str) -> tuple[str, ...]:
    loc = sd.location(name)
    return loc.manifest.segments[loc.tensor.segment].chunks


def restore_file(repo: Repository, tmp_path: Path, rev: str = "HEAD") -> Path:
    out = tmp_path / f"restored-{rev.replace('~', '_')}"
    repo.restore(rev, out)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert len(files) == 1, files
    return files[0]


def read_raw_safetensors(path: Path) -> tuple[dict[str, Any], bytes]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


# --- torch: every dtype, exact bits ------------------------------------------------


def test_every_torch_dtype_round_trips_bit_exact(
    repo: Repository, rng: np.random.Generator
) -> None:
    sd = all_dtypes_state_dict(rng, scalars=False)  # 0-d tensors: the test below
    res = repo.commit_state_dict(sd, message="all dtypes")
    assert isinstance(res, CommitResult)
    assert res.tensors == len(sd)
    assert res.files == 1
    loaded = repo.load_state_dict(framework="torch")
    assert list(loaded) == list(sd)
    for name, t in sd.items():
        assert_same_tensor(loaded[name], t)


def test_zero_dim_torch_tensors_keep_their_shape(
    repo: Repository, rng: np.random.Generator
) -> None:
    sd = {str(d): random_tensor(rng, d, ()) for d in TORCH_DTYPES}
    repo.commit_state_dict(sd)
    # The stored file and the numpy view are right ...
    show = {t.name: t.shape for t in repo.show().files[0].tensors}
    assert all(shape == () for shape in show.values())
    assert all(a.shape == () for a in repo.load_state_dict().values())
    # ... and torch tensors must be 0-d too, not shape [1].
    loaded = repo.load_state_dict(framework="torch")
    for name, t in sd.items():
        assert_same_tensor(loaded[name], t)


def test_batchnorm_module_round_trips(repo: Repository) -> None:
    """BatchNorm's num_batches_tracked is a 0-d int64 buffer: the common real-world scalar."""
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6))
    model(torch.randn(8, 4))  # update running stats and num_batches_tracked
    repo.commit_state_dict(model.state_dict())
    other = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6))
    other.load_state_dict(repo.load_state_dict(framework="torch"))
    for (k, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items(), strict=True):
        assert a.shape == b.shape, k
        assert torch.equal(a, b), k


@pytest.mark.parametrize("dtype", TORCH_DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def test_numpy_framework_gives_exact_dtypes(
    repo: Repository, rng: np.random.Generator, dtype: torch.dtype
) -> None:
    t = random_tensor(rng, dtype, (2, 3))
    repo.commit_state_dict({"w": t, "s": t[0, 1]})
    loaded = repo.load_state_dict(framework="numpy")
    arr = loaded["w"]
    assert isinstance(arr, np.ndarray)
    assert arr.dtype == np.dtype(NUMPY_FOR_TORCH[dtype])
    assert arr.shape == (2, 3)
    assert arr.tobytes() == tbytes(t)
    assert loaded["s"].shape == ()
    assert loaded["s"].tobytes() == tbytes(t[0, 1])
    # The default framework is numpy.
    assert repo.load_state_dict()["w"].dtype == arr.dtype


def test_bf16_and_float8_come_back_as_ml_dtypes_arrays(repo: Repository) -> None:
    values = torch.tensor([1.0, -2.5, 0.125, 448.0])
    sd = {
        "bf16": values.to(torch.bfloat16),
        "e4m3": values.to(torch.float8_e4m3fn),
        "e5m2": values.to(torch.float8_e5m2),
        "e8m0": torch.tensor([1.0, 2.0, 0.5, 1024.0]).to(torch.float8_e8m0fnu),
    }
    repo.commit_state_dict(sd)
    loaded = repo.load_state_dict()
    assert loaded["bf16"].dtype == ml_dtypes.bfloat16
    assert loaded["e4m3"].dtype == ml_dtypes.float8_e4m3fn
    assert loaded["e5m2"].dtype == ml_dtypes.float8_e5m2
    assert loaded["e8m0"].dtype == ml_dtypes.float8_e8m0fnu
    # Same values, not just same bits (the dtypes agree on their meaning).
    np.testing.assert_array_equal(loaded["bf16"].astype(np.float32), [1.0, -2.5, 0.125, 448.0])
    np.testing.assert_array_equal(loaded["e4m3"].astype(np.float32), [1.0, -2.5, 0.125, 448.0])
    np.testing.assert_array_equal(loaded["e8m0"].astype(np.float32), [1.0, 2.0, 0.5, 1024.0])


def test_requires_grad_parameters_and_views(repo: Repository, rng: np.random.Generator) -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 3)
    big = torch.randn(6, 8, requires_grad=True)
    sd: dict[str, Any] = {
        **lin.state_dict(keep_vars=True),  # Parameters, requires_grad=True
        "grad_tensor": torch.randn(4, requires_grad=True) * 2,  # non-leaf with a grad_fn
        "column": big[:, 3],  # strided view of a requires_grad tensor
        "offset_slice": big[2:4, 1:7],
        "expanded": torch.arange(3, dtype=torch.int32).expand(4, 3),  # stride 0
        "flipped": torch.arange(10, dtype=torch.int16).flip(0),
        "permuted": random_tensor(rng, torch.float16, (2, 3, 4)).permute(2, 0, 1),
    }
    assert isinstance(sd["weight"], torch.nn.Parameter)
    repo.commit_state_dict(sd)
    loaded = repo.load_state_dict(framework="torch")
    for name, t in sd.items():
        got = loaded[name]
        assert_same_tensor(got, t)
        assert not got.requires_grad
        assert got.is_contiguous()
    # The loaded mapping feeds a module's load_state_dict directly.
    fresh = torch.nn.Linear(5, 3)
    state = {k: loaded[k] for k in ("weight", "bias")}
    fresh.load_state_dict(state)
    assert torch.equal(fresh.weight, lin.weight)
    assert torch.equal(fresh.bias, lin.bias)


def test_torch_module_state_dict_round_trips_through_load_state_dict(repo: Repository) -> None:
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2)
    ).to(torch.bfloat16)
    repo.commit_state_dict(model.state_dict(), message="m")
    other = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2)
    ).to(torch.bfloat16)
    other.load_state_dict(repo.load_state_dict(framework="torch"))
    for (k, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_conjugate_view_is_stored_with_its_values(repo: Repository) -> None:
    """A complex conj() view is a lazy flag in torch; committing it must store the
    conjugated values (or refuse with a wvc error), never leak a torch RuntimeError."""
    base = torch.tensor([1 + 2j, -3 - 4j, 0.5j], dtype=torch.complex64)
    c = base.conj()
    try:
        repo.commit_state_dict({"c": c})
    except WvcError:
        return
    got = repo.load_state_dict(framework="torch")["c"]
    assert torch.equal(got, c.resolve_conj())


def test_committed_file_is_a_valid_safetensors_file(
    repo: Repository, rng: np.random.Generator, tmp_path: Path
) -> None:
    sd = all_dtypes_state_dict(rng)
    repo.commit_state_dict(sd, "weights/model.safetensors", metadata={"format": "pt", "k": "v"})
    path = restore_file(repo, tmp_path)
    assert path.relative_to(tmp_path / "restored-HEAD").as_posix() == "weights/model.safetensors"
    loaded = sttorch.load_file(path)
    assert sorted(loaded) == sorted(sd)
    for name, t in sd.items():
        assert_same_tensor(loaded[name], t)
    with safe_open(path, framework="pt") as f:
        assert f.metadata() == {"format": "pt", "k": "v"}
    header, data = read_raw_safetensors(path)
    assert header["__metadata__"] == {"format": "pt", "k": "v"}
    end = 0
    for name, t in sd.items():
        entry = header[name]
        assert entry["dtype"] == SAFETENSORS_NAME[t.dtype]
        assert entry["shape"] == list(t.shape)
        start, stop = entry["data_offsets"]
        assert data[start:stop] == tbytes(t)
        end = max(end, stop)
    assert end == len(data)
    # The header is padded to 8 bytes, as the reference writer does.
    assert (len(path.read_bytes()) - len(data)) % 8 == 0


def test_numpy_state_dict_round_trips(
    repo: Repository, rng: np.random.Generator, tmp_path: Path
) -> None:
    base = rng.standard_normal((6, 5)).astype(np.float32)
    sd: dict[str, Any] = {
        "f32": base,
        "transposed": base.T,
        "reversed": base[::-1, ::2],
        "fortran": np.asfortranarray(rng.standard_normal((3, 4))),
        "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
        "scalar": np.array(3.5, dtype=np.float64),
        "generic": np.float16(1.5),
        "empty": np.zeros((2, 0, 3), dtype=np.int8),
        "bf16": rng.standard_normal(7).astype(ml_dtypes.bfloat16),
        "f8": rng.standard_normal(9).astype(ml_dtypes.float8_e5m2),
        "bool": rng.integers(0, 2, 11).astype(bool),
        "u64": np.array([0, 2**64 - 1, 12345], dtype=np.uint64),
        "c64": (rng.standard_normal(3) + 1j * rng.standard_normal(3)).astype(np.complex64),
    }
    repo.commit_state_dict(sd)
    loaded = repo.load_state_dict()
    assert list(loaded) == list(sd)
    for name, a in sd.items():
        got = loaded[name]
        exp = np.asarray(a)
        assert got.shape == exp.shape, name
        assert got.flags.c_contiguous, name
        if exp.dtype.byteorder == ">":
            assert got.dtype == exp.dtype.newbyteorder("<"), name
            np.testing.assert_array_equal(got, exp)
        else:
            assert got.dtype == exp.dtype, name
            assert got.tobytes() == np.ascontiguousarray(exp).tobytes(), name
    # Torch view of numpy-committed tensors keeps the bits too.
    as_torch = repo.load_state_dict(framework="torch")
    assert as_torch["bf16"].dtype == torch.bfloat16
    assert as_torch["bf16"].view(torch.int16).numpy().tobytes() == sd["bf16"].tobytes()
    # repo.load agrees with the lazy mapping.
    eager = repo.load()
    assert sorted(eager) == sorted(sd)
    path = restore_file(repo, tmp_path)
    plain = {k: v for k, v in sd.items() if k not in ("bf16", "f8")}
    with safe_open(path, framework="np") as f:
        assert sorted(f.keys()) == sorted(sd)
        for name, a in plain.items():
            np.testing.assert_array_equal(f.get_tensor(name), np.asarray(a))


def test_commit_tensors_is_commit_state_dict(repo: Repository) -> None:
    res = repo.commit_tensors({"w": np.ones(3, np.float32)}, "m.safetensors", "msg", {"a": 1})
    assert isinstance(res, CommitResult)
    entry = repo.log()[0]
    assert entry.message == "msg" and entry.meta == {"a": 1}
    assert repo.show().files[0].path == "m.safetensors"


# --- refused inputs -----------------------------------------------------------------


@pytest.mark.parametrize("bad", [3, 2.5, [1.0, 2.0], "text", None, {"x": np.ones(2)}])
def test_non_tensor_values_are_refused_naming_the_key(repo: Repository, bad: Any) -> None:
    sd = {"ok": np.ones(2, np.float32), "learning_rate": bad}
    with pytest.raises(InputError, match="learning_rate"):
        repo.commit_state_dict(sd)
    with pytest.raises(InputError, match="learning_rate"):
        repo.commit_state_dict(sd, background=True)
    with pytest.raises(InputError, match="learning_rate"):
        repo.commit_state_dict({"ok": torch.ones(2), "learning_rate": bad})
    assert repo.head().target is None


@pytest.mark.parametrize("name", ["", "__metadata__", 7])
def test_invalid_tensor_names_are_refused(repo: Repository, name: Any) -> None:
    with pytest.raises(InputError):
        repo.commit_state_dict({name: np.ones(2)})
    assert repo.head().target is None


def test_other_refusals(repo: Repository) -> None:
    with pytest.raises(InputError, match="nothing to commit"):
        repo.commit_state_dict({})
    with pytest.raises(InputError):
        repo.commit_state_dict([np.ones(2)])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="obj"):
        repo.commit_state_dict({"obj": np.array([object()], dtype=object)})
    with pytest.raises(InputError, match="'sparse'"):
        repo.commit_state_dict({"sparse": torch.eye(3).to_sparse()})
    with pytest.raises(InputError):
        repo.commit_state_dict({"w": np.ones(2)}, metadata={"k": 1})  # type: ignore[dict-item]
    with pytest.raises(InputError):
        repo.commit_state_dict({"w": np.ones(2)}, meta={"x": float("inf")})
    with pytest.raises(InputError):
        repo.commit_state_dict({"w": np.ones(2)}, path="../escape.safetensors")
    assert repo.head().target is None
    repo.commit_state_dict({"w": np.ones(2)})
    with pytest.raises(InputError, match="framework"):
        repo.load_state_dict(framework="jax")


# --- laziness -----------------------------------------------------------------------


def _two_tensor_commit(repo: Repository, rng: np.random.Generator) -> dict[str, np.ndarray]:
    sd = {
        "a": rng.standard_normal(3000).astype(np.float32),
        "b": rng.standard_normal(2000).astype(np.float32),
    }
    repo.commit_state_dict(sd)
    return sd


def test_lazy_mapping_reads_nothing_for_len_and_keys(
    repo: Repository, rng: np.random.Generator
) -> None:
    sd = _two_tensor_commit(repo, rng)
    b_chunks = chunks_of(repo.load_state_dict(), "b")
    assert b_chunks and not set(b_chunks) & set(chunks_of(repo.load_state_dict(), "a"))
    chunk_file(repo, b_chunks[0]).unlink()

    lazy = repo.load_state_dict()  # built after the chunk is gone
    assert len(lazy) == 2
    assert list(lazy.keys()) == ["a", "b"]
    assert list(lazy) == ["a", "b"]
    assert "LazyStateDict(2 tensors" in repr(lazy)
    np.testing.assert_array_equal(lazy["a"], sd["a"])
    with pytest.raises(MissingObjectError) as exc:
        lazy["b"]
    assert isinstance(exc.value, WvcError)
    assert exc.value.object_id == b_chunks[0]
    with pytest.raises(KeyError):
        lazy["c"]
    # torch gives the same answers.
    lazy_t = repo.load_state_dict(framework="torch")
    assert list(lazy_t) == ["a", "b"]
    assert torch.equal(lazy_t["a"], torch.from_numpy(sd["a"]))
    with pytest.raises(IntegrityError):
        lazy_t["b"]


def test_membership_test_needs_no_tensor_read(repo: Repository, rng: np.random.Generator) -> None:
    """``name in state_dict`` is how loaders check for a key; on a lazy mapping it must
    answer from the index, not read (and verify) the whole tensor."""
    _two_tensor_commit(repo, rng)
    lazy = repo.load_state_dict()
    chunk_file(repo, chunks_of(lazy, "b")[0]).unlink()
    assert "zzz" not in lazy
    assert "b" in lazy
    assert "b" in lazy.keys()  # noqa: SIM118 (KeysView membership)


def test_corrupt_chunk_raises_corrupt_object_error(
    repo: Repository, rng: np.random.Generator
) -> None:
    sd = _two_tensor_commit(repo, rng)
    lazy = repo.load_state_dict()
    path = chunk_file(repo, chunks_of(lazy, "b")[0])
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(blob))
    np.testing.assert_array_equal(lazy["a"], sd["a"])
    with pytest.raises(CorruptObjectError):
        lazy["b"]


def test_each_access_reads_afresh(repo: Repository, rng: np.random.Generator) -> None:
    sd = _two_tensor_commit(repo, rng)
    lazy = repo.load_state_dict()
    first = lazy["a"]
    first[:] = 0  # the returned array is the caller's own
    np.testing.assert_array_equal(lazy["a"], sd["a"])
    assert lazy["a"] is not lazy["a"]


def test_load_state_dict_of_older_revision_and_file(repo: Repository) -> None:
    repo.commit_state_dict({"w": np.zeros(2, np.float32)}, "a.safetensors")
    repo.commit_state_dict({"w": np.ones(2, np.float32)}, "a.safetensors")
    np.testing.assert_array_equal(repo.load_state_dict("HEAD~1")["w"], [0, 0])
    np.testing.assert_array_equal(repo.load_state_dict("HEAD", "a.safetensors")["w"], [1, 1])


# --- background commits ---------------------------------------------------------------


def test_background_commit_snapshots_before_returning(repo: Repository) -> None:
    torch.manual_seed(2)
    lin = torch.nn.Linear(16, 8)
    extra = torch.randn(8, 4).t()  # non-contiguous
    buf = np.arange(10, dtype=np.float32)
    sd: dict[str, Any] = {**lin.state_dict(keep_vars=True), "extra": extra, "np": buf}
    before = {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v.copy())
              for k, v in sd.items()}  # fmt: skip
    handle = repo.commit_state_dict(sd, message="bg", meta={"step": 1}, background=True)
    assert isinstance(handle, CommitHandle)
    with torch.no_grad():  # training goes on, in place
        lin.weight.add_(1.0)
        lin.bias.zero_()
        extra.mul_(-3)
    buf[:] = -1
    res = handle.result(timeout=60)
    assert isinstance(res, CommitResult)
    assert handle.done()
    assert repo.log()[0].id == res.id
    assert repo.log()[0].meta == {"step": 1}
    loaded = repo.load_state_dict(framework="torch")
    for name in ("weight", "bias", "extra"):
        assert_same_tensor(loaded[name], before[name])
    assert_same_tensor(loaded["np"], torch.from_numpy(before["np"]))
    assert not torch.equal(loaded["weight"], lin.weight.detach())


def test_background_commits_land_in_order(repo: Repository) -> None:
    handles = [
        repo.commit_state_dict(
            {"w": torch.full((64,), float(i))}, message=f"step {i}", background=True
        )
        for i in range(5)
    ]
    results = [h.result(timeout=60) for h in handles]
    assert [e.message for e in repo.log()] == [f"step {i}" for i in reversed(range(5))]
    assert results[0].parents == ()
    for prev, cur in itertools.pairwise(results):
        assert cur.parents == (prev.id,)
    assert repo.head().target == results[-1].id
    assert repo.load_state_dict("HEAD~2")["w"][0] == 2.0


def test_background_error_surfaces_on_result(repo: Repository) -> None:
    handle = repo.commit_state_dict(
        {"w": np.ones(3)}, message="bad", meta={"loss": float("nan")}, background=True
    )
    with pytest.raises(InputError, match="loss") as exc:
        handle.result(timeout=60)
    assert isinstance(exc.value, WvcError)
    handle.wait()  # does not raise
    assert repo.head().target is None
    # The worker is still usable afterwards.
    ok = repo.commit_state_dict({"w": np.ones(3)}, message="good", background=True)
    assert ok.result(timeout=60).parents == ()
    assert [e.message for e in repo.log()] == ["good"]


@pytest.mark.parametrize("name", ["bad name", "a..b", "-x", "", "HEAD", "x~1", "a:b"])
def test_invalid_branch_raises_at_call_time(repo: Repository, name: str) -> None:
    with pytest.raises(RefError):
        repo.commit_state_dict({"w": np.ones(2)}, branch=name, background=True)
    with pytest.raises(RefError):
        repo.commit_state_dict({"w": np.ones(2)}, branch=name)
    assert repo.head().target is None
    assert repo.branches() == []


def test_close_waits_for_background_commit(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "r")
    handle = repo.commit_state_dict(
        {"w": np.arange(100_000, dtype=np.float32)}, message="late", background=True
    )
    repo.close()
    assert handle.done()
    with Repository.open(tmp_path / "r") as again:
        assert [e.message for e in again.log()] == ["late"]


def _run_script(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _log_messages(root: Path) -> list[str]:
    with Repository.open(root) as r:
        if r.head().target is None:
            return []
        return [e.message for e in r.log()]


def test_unretrieved_background_failure_is_printed_at_exit(tmp_path: Path) -> None:
    proc = _run_script(
        tmp_path,
        """
        import numpy as np
        from wvc.repository import Repository
        repo = Repository.init("r")
        h = repo.commit_state_dict(
            {"w": np.ones(3)}, "ckpt.safetensors", meta={"loss": float("nan")}, background=True
        )
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert "background commit" in proc.stderr
    assert "failed" in proc.stderr
    assert "ckpt.safetensors" in proc.stderr
    assert "loss" in proc.stderr


def test_retrieved_background_failure_is_not_printed_again(tmp_path: Path) -> None:
    proc = _run_script(
        tmp_path,
        """
        import numpy as np
        from wvc.repository import Repository
        from wvc.errors import InputError
        repo = Repository.init("r")
        h = repo.commit_state_dict({"w": np.ones(3)}, meta={"x": float("nan")}, background=True)
        try:
            h.result()
        except InputError:
            print("caught")
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "caught"
    assert "background commit" not in proc.stderr


def test_discarded_failed_background_handle_is_still_reported(tmp_path: Path) -> None:
    """A training loop rarely keeps every handle. A failed background commit followed by
    a good one, handles dropped, must still be reported at exit ("never silent")."""
    proc = _run_script(
        tmp_path,
        """
        import numpy as np
        from wvc.repository import Repository
        repo = Repository.init("r")
        repo.commit_state_dict(
            {"w": np.ones(3)}, message="bad", meta={"loss": float("nan")}, background=True
        )
        repo.commit_state_dict({"w": np.zeros(3)}, message="good", background=True)
        repo.close()
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert _log_messages(tmp_path / "r") == ["good"]
    assert "background commit" in proc.stderr and "failed" in proc.stderr, proc.stderr


def test_background_commit_in_flight_at_exit_lands(tmp_path: Path) -> None:
    """The last checkpoint of a script is typically a background commit still running
    when the script ends. The worker thread is not a daemon, so the interpreter waits for
    it; the commit must complete rather than fail during interpreter shutdown. (The
    commit op is slowed down here to stand in for a large model.)"""
    proc = _run_script(
        tmp_path,
        """
        import time
        import numpy as np
        import wvc.ops.commit as commit_op
        from wvc.repository import Repository

        original = commit_op.commit_state_dict
        def slow(*args, **kwargs):
            time.sleep(0.5)
            return original(*args, **kwargs)
        commit_op.commit_state_dict = slow

        repo = Repository.init("r")
        repo.commit_state_dict({"w": np.ones(3)}, message="final", background=True)
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert _log_messages(tmp_path / "r") == ["final"], proc.stderr
    assert "failed" not in proc.stderr, proc.stderr


# --- commits onto another branch --------------------------------------------------------


def test_branch_commit_does_not_move_head(repo: Repository) -> None:
    main = repo.commit_state_dict({"w": np.zeros(4, np.float32)}, message="main 1")
    res = repo.commit_state_dict({"w": np.ones(4, np.float32)}, message="exp 1", branch="exp")
    assert res.branch == "exp"
    assert res.parents == (main.id,)
    head = repo.head()
    assert head.branch == "main" and head.target == main.id
    assert {b.name: b.target for b in repo.branches()} == {"main": main.id, "exp": res.id}
    np.testing.assert_array_equal(repo.load_state_dict("exp")["w"], np.ones(4))
    np.testing.assert_array_equal(repo.load_state_dict()["w"], np.zeros(4))
    # A second commit extends the branch, not HEAD.
    res2 = repo.commit_state_dict(
        {"w": np.full(4, 2, np.float32)}, message="exp 2", branch="exp", background=True
    ).result(timeout=60)
    assert res2.parents == (res.id,)
    assert [e.message for e in repo.log("exp")] == ["exp 2", "exp 1", "main 1"]
    assert [e.message for e in repo.log()] == ["main 1"]
    # Committing to the current branch by name behaves like a plain commit.
    res3 = repo.commit_state_dict({"w": np.ones(1)}, message="main 2", branch="main")
    assert res3.parents == (main.id,)
    assert repo.head().target == res3.id


def test_branch_commit_in_empty_repository(repo: Repository) -> None:
    res = repo.commit_state_dict({"w": np.ones(2)}, message="first", branch="exp")
    assert res.parents == ()
    assert res.branch == "exp"
    head = repo.head()
    assert head.branch == "main" and head.target is None
    assert [b.name for b in repo.branches()] == ["exp"]
    assert [e.message for e in repo.log("exp")] == ["first"]
