"""Property tests: whatever is committed comes back bit for bit.

Hypothesis draws tensor sets over every dtype numpy can hold (ml_dtypes for
bfloat16 and the float8 types), shapes including 0-d and empty ones, and
opaque files of random sizes; each example gets its own repository in a
temporary directory (hypothesis and function-scoped fixtures do not mix).
"""

from __future__ import annotations

import filecmp
import os
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wvc.demo import write_safetensors
from wvc.dtypes import DType
from wvc.ingest import DEFAULT_CHUNK_SIZE
from wvc.repository import Repository

# Every dtype with a numpy type: BOOL, U8..I64, F16, BF16, F32, F64, C64, F8_*.
NUMPY_DTYPES = [d for d in DType if d.bits >= 8]
assert {"BOOL", "BF16", "F8_E4M3", "F8_E5M2", "U64", "I8"} <= {d.name for d in NUMPY_DTYPES}

MAX_ELEMENTS = 3000
SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

shapes = st.lists(st.integers(0, 9), min_size=0, max_size=4).filter(
    lambda s: int(np.prod(s)) <= MAX_ELEMENTS
) | st.sampled_from([[], [0], [1], [0, 5], [1, 1, 1], [MAX_ELEMENTS - 1], [17, 13]])

tensor_names = st.text(min_size=1, max_size=12).filter(lambda s: s != "__metadata__")


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = draw(st.sampled_from(NUMPY_DTYPES))
    shape = tuple(draw(shapes))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    if dtype is DType.BOOL:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    # Any bit pattern (NaNs, infinities, subnormals included) must survive.
    raw = rng.bytes(n * dtype.itemsize)
    return np.frombuffer(raw, dtype=dtype.numpy()).reshape(shape).copy()


tensor_sets = st.dictionaries(tensor_names, arrays(), min_size=1, max_size=6)

opaque_blobs = st.one_of(
    st.binary(max_size=64),
    st.integers(0, 200_000).map(lambda n: np.random.default_rng(n).bytes(n)),
    st.integers(0, 100_000).map(lambda n: bytes(n)),  # compressible zeros
)


@st.composite
def checkpoints(draw: st.DrawFn) -> dict[str, dict[str, np.ndarray] | bytes]:
    """Relative path -> tensors (a safetensors file) or bytes (an opaque file)."""
    n_files = draw(st.integers(1, 4))
    files: dict[str, dict[str, np.ndarray] | bytes] = {}
    for i in range(n_files):
        folder = draw(st.sampled_from(["", "sub/", "sub/deep/", "other/"]))
        if draw(st.booleans()):
            files[f"{folder}m{i}.safetensors"] = draw(tensor_sets)
        else:
            files[f"{folder}f{i}.bin"] = draw(opaque_blobs)
    return files


def write_files(root: Path, files: dict[str, dict[str, np.ndarray] | bytes]) -> None:
    for rel, spec in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(spec, bytes):
            path.write_bytes(spec)
        else:
            write_safetensors(path, spec)


def assert_bits_equal(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(actual) == sorted(expected)
    for name, exp in expected.items():
        got = actual[name]
        assert got.dtype == exp.dtype, (name, got.dtype, exp.dtype)
        assert got.shape == exp.shape, (name, got.shape, exp.shape)
        assert np.array_equal(
            np.ascontiguousarray(got).reshape(-1).view(np.uint8),
            np.ascontiguousarray(exp).reshape(-1).view(np.uint8),
        ), name


def assert_dirs_identical(expected: Path, actual: Path) -> None:
    def listing(root: Path) -> list[str]:
        return sorted(
            Path(d, n).relative_to(root).as_posix() for d, _, ns in os.walk(root) for n in ns
        )

    assert listing(expected) == listing(actual)
    for rel in listing(expected):
        assert filecmp.cmp(expected / rel, actual / rel, shallow=False), rel


@SETTINGS
@given(files=checkpoints())
def test_commit_directory_roundtrip(files: dict[str, dict[str, np.ndarray] | bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        ck = base / "ck"
        write_files(ck, files)
        with Repository.init(base / "repo") as repo:
            res = repo.commit(ck, "prop")
            assert res.files == len(files)
        # A fresh handle reads only what is on disk.
        with Repository.open(base / "repo") as repo:
            out = base / "out"
            repo.restore(res.id, out)
            assert_dirs_identical(ck, out)
            for rel, spec in files.items():
                loaded = repo.load("HEAD", file=rel)
                if isinstance(spec, bytes):
                    assert loaded == {}
                else:
                    assert_bits_equal(loaded, spec)
            assert repo.fsck().ok


@SETTINGS
@given(tensors=tensor_sets)
def test_commit_tensors_roundtrip(tensors: dict[str, np.ndarray]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        with Repository.init(base / "repo") as repo:
            res = repo.commit_tensors(tensors, "w/model.safetensors", metadata={"format": "pt"})
            assert res.tensors == len(tensors)
            assert_bits_equal(repo.load(res.id), tensors)
            repo.restore("HEAD", base / "out")
        # The restored file is exactly what a safetensors writer produces for these
        # tensors in this order with the same metadata.
        write_safetensors(base / "expected.safetensors", tensors)
        assert (base / "out" / "w" / "model.safetensors").read_bytes() == (
            base / "expected.safetensors"
        ).read_bytes()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(versions=st.lists(checkpoints(), min_size=2, max_size=3))
def test_history_roundtrip(versions: list[dict[str, dict[str, np.ndarray] | bytes]]) -> None:
    """Several commits sharing a repository (and chunks): each one restores exactly."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        ids = []
        with Repository.init(base / "repo") as repo:
            for i, files in enumerate(versions):
                write_files(base / f"ck{i}", files)
                ids.append(repo.commit(base / f"ck{i}", f"v{i}").id)
            for i, cid in enumerate(ids):
                repo.restore(cid, base / f"out{i}")
                assert_dirs_identical(base / f"ck{i}", base / f"out{i}")
            assert [e.id for e in repo.log()] == ids[::-1]
            assert repo.fsck().ok


def test_large_files_cross_chunk_boundaries(tmp_path: Path) -> None:
    """Files and tensors over two chunks long, at unaligned offsets, come back exactly,
    and a change inside one chunk only stores that chunk again."""
    assert DEFAULT_CHUNK_SIZE == 4 * 1024 * 1024
    rng = np.random.default_rng(1234)
    opaque_size = 2 * DEFAULT_CHUNK_SIZE + DEFAULT_CHUNK_SIZE // 4 + 12345  # > 8 MiB
    opaque = bytearray(rng.bytes(opaque_size))
    big = rng.standard_normal(2 * DEFAULT_CHUNK_SIZE // 4 + 3, dtype=np.float32)  # 8 MiB + 12 B
    tensors = {
        "tiny": np.arange(5, dtype=np.uint8),  # pushes "big" to an unaligned offset
        "big": big,
        "after": rng.standard_normal((3, 7)).astype(np.float16),
    }
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "blob.bin").write_bytes(opaque)
    write_safetensors(ck / "model.safetensors", tensors)
    with Repository.init(tmp_path / "repo") as repo:
        first = repo.commit(ck, "big")
        assert first.logical_size > 16 * 1024 * 1024
        repo.restore("HEAD", tmp_path / "out")
        assert_dirs_identical(ck, tmp_path / "out")
        assert_bits_equal(repo.load("HEAD", file="model.safetensors"), tensors)

        # Change one byte in the second chunk of the opaque file, and one element in
        # the last (partial) chunk of the big tensor.
        opaque[DEFAULT_CHUNK_SIZE + 100] ^= 0xFF
        (ck / "blob.bin").write_bytes(opaque)
        changed = dict(tensors)
        changed["big"] = big.copy()
        changed["big"][-1] += 1.0
        write_safetensors(ck / "model.safetensors", changed)
        second = repo.commit(ck, "changed")
        # One full opaque chunk plus the 12-byte tail chunk of the tensor, and metadata.
        assert DEFAULT_CHUNK_SIZE < second.new_stored_size < DEFAULT_CHUNK_SIZE + 64 * 1024
        repo.restore("HEAD", tmp_path / "out2")
        assert_dirs_identical(ck, tmp_path / "out2")
        assert_bits_equal(repo.load("HEAD", file="model.safetensors"), changed)
        # The first version is intact too.
        assert_bits_equal(repo.load("HEAD~1", file="model.safetensors"), tensors)
        assert repo.fsck().ok
