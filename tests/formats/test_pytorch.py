"""wvc.formats.pytorch: torch.save zip checkpoints, checked against real torch.

Every checkpoint here is written by ``torch.save`` (or is a real one with its
``data.pkl`` rewritten); what wvc sees in it is compared with what
``torch.load(weights_only=True)`` returns, bit for bit, and every commit is
restored byte-identically. Hostile pickles must be refused (stored opaque,
with a warning naming the problem) without running anything.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import signal
import struct
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from layout_checks import check_exact_cover
from safetensors.torch import save_file as save_safetensors

from wvc import Repository
from wvc.dtypes import DType
from wvc.errors import MalformedFileError
from wvc.formats import FileLayout, detect
from wvc.formats.pytorch import PyTorchFormat
from wvc.interop.torch import from_torch, torch_dtype_to_wvc
from wvc.ops.commit import CommitResult

FMT = PyTorchFormat()


# --- helpers -------------------------------------------------------------------


def parse_bytes(buf: bytes, path: str = "ckpt.pt") -> FileLayout:
    return FMT.parse(path, lambda off, n: buf[off : off + n], len(buf))


def torch_bytes(obj: Any, **kwargs: Any) -> bytes:
    out = io.BytesIO()
    torch.save(obj, out, **kwargs)
    return out.getvalue()


def flatten(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors of a loaded checkpoint named by their key paths joined with '.'."""
    if isinstance(obj, torch.Tensor):
        return {prefix or "tensor": obj}
    if isinstance(obj, Mapping):
        items: list[tuple[Any, Any]] = list(obj.items())
    elif isinstance(obj, (list, tuple)):
        items = list(enumerate(obj))
    else:
        return {}
    out: dict[str, torch.Tensor] = {}
    for k, v in items:
        if isinstance(k, bool) or not isinstance(k, (str, int)):
            continue
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def raw_bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8).tobytes()


def assert_same_tensors(loaded: Mapping[str, np.ndarray], expected: Mapping[str, Any]) -> None:
    assert set(loaded) == set(expected)
    for name, t in expected.items():
        want = from_torch(t, copy=True)
        got = loaded[name]
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape, name
        assert raw_bits(got) == raw_bits(want), name


def check_layout(layout: FileLayout, buf: bytes, tensors: Mapping[str, torch.Tensor]) -> None:
    """Each storage is one segment: TENSOR when a tensor covers it whole, else STORAGE;
    every other tensor of it is a view with torch's shape, stride and offset."""
    check_exact_cover(layout, buf)
    seg_of = {s.tensor.name: i for i, s in enumerate(layout.segments) if s.tensor is not None}
    views = {v.name: v for v in layout.views}
    assert not set(seg_of) & set(views)
    assert set(seg_of) | set(views) == set(tensors)
    assert len(views) == len(layout.views)
    groups: dict[int, list[str]] = collections.defaultdict(list)
    for name, t in tensors.items():
        if t.untyped_storage().nbytes():
            groups[t.untyped_storage().data_ptr()].append(name)
    for names in groups.values():
        storage = tensors[names[0]].untyped_storage()
        nbytes = storage.nbytes()
        indexes = {seg_of[n] if n in seg_of else views[n].segment for n in names}
        assert len(indexes) == 1, names
        seg = layout.segments[indexes.pop()]
        assert seg.size == nbytes
        assert buf[seg.offset : seg.offset + seg.size] == bytes(storage)
        whole = [
            n
            for n in names
            if tensors[n].storage_offset() == 0
            and tensors[n].is_contiguous()
            and tensors[n].numel() * tensors[n].element_size() == nbytes
        ]
        dtype = torch_dtype_to_wvc(tensors[names[0]].dtype)
        if whole:
            assert seg.tensor is not None and seg.tensor.name in whole
            assert seg.tensor.shape == tuple(tensors[seg.tensor.name].shape)
            assert seg.tensor.dtype is dtype
        else:
            assert seg.tensor is None
            assert seg.storage is dtype
        for n in names:
            if n in views:
                v, t = views[n], tensors[n]
                assert (v.shape, v.stride, v.offset) == (
                    tuple(t.shape),
                    t.stride(),
                    t.storage_offset(),
                )


def commit_roundtrip(
    repo: Repository, tmp_path: Path, obj: Any, name: str = "ckpt.pt", **save_kwargs: Any
) -> tuple[CommitResult, dict[str, np.ndarray], bytes]:
    """torch.save ``obj``, commit it, restore it byte-identically, load its tensors."""
    src = tmp_path / f"src-{len(list(tmp_path.iterdir()))}"
    src.mkdir()
    path = src / name
    torch.save(obj, path, **save_kwargs)
    buf = path.read_bytes()
    result = repo.commit(path, f"commit {name}")
    out = tmp_path / f"out-{result.id[:12]}"
    repo.restore(result.id, out)
    assert (out / name).read_bytes() == buf
    loaded = repo.load(result.id, file=name)
    return result, loaded, buf


def rewrite_zip(
    buf: bytes,
    replace: Mapping[str, bytes | None] | None = None,
    compress: tuple[str, ...] = (),
) -> bytes:
    """A copy of a torch.save archive with entries replaced (None: removed) or compressed."""
    replace = dict(replace or {})
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buf)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            suffix = info.filename.split("/", 1)[1]
            data = replace.get(suffix, src.read(info))
            if data is None:
                continue
            method = zipfile.ZIP_DEFLATED if suffix in compress else zipfile.ZIP_STORED
            dst.writestr(info.filename, data, compress_type=method)
    return out.getvalue()


def entry_name(buf: bytes, suffix: str) -> str:
    with zipfile.ZipFile(io.BytesIO(buf)) as z:
        (name,) = [n for n in z.namelist() if n.split("/", 1)[1] == suffix]
    return name


# --- hand-built pickles ----------------------------------------------------------


def _str(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def call_pickle(module: str, name: str, *args: str) -> bytes:
    """A protocol-2 pickle of ``{"w": module.name(*args)}``."""
    call = b"c" + module.encode() + b"\n" + name.encode() + b"\n("
    call += b"".join(_str(a) for a in args) + b"tR"
    return b"\x80\x02}" + _str("w") + call + b"s."


class FakeStorage:
    def __init__(self, key: str, numel: int, stype: Any = None) -> None:
        self.key, self.numel = key, numel
        self.stype = torch.FloatStorage if stype is None else stype


class FakeTensor:
    """Pickles as torch does (_rebuild_tensor_v2 over a persistent storage id)."""

    def __init__(
        self, storage: FakeStorage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
    ) -> None:
        self.args = (storage, offset, size, stride)

    def __reduce__(self) -> tuple[Any, ...]:
        return (torch._utils._rebuild_tensor_v2, (*self.args, False, collections.OrderedDict()))


class FakeTensorV3(FakeTensor):
    """_rebuild_tensor_v3: an untyped storage and the tensor's dtype."""

    def __init__(self, storage: FakeStorage, size: tuple[int, ...], dtype: Any) -> None:
        super().__init__(storage, 0, size, (1,))
        self.dtype = dtype

    def __reduce__(self) -> tuple[Any, ...]:
        rebuild = torch._utils._rebuild_tensor_v3
        return (rebuild, (*self.args, False, collections.OrderedDict(), self.dtype))


class _TorchLikePickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, FakeStorage):
            return ("storage", obj.stype, obj.key, "cpu", obj.numel)
        return None


def fake_checkpoint(obj: Any, storages: Mapping[str, bytes]) -> bytes:
    """A torch.save-shaped archive with a pickle written by the test itself."""
    pkl = io.BytesIO()
    _TorchLikePickler(pkl, protocol=2).dump(obj)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("archive/data.pkl", pkl.getvalue())
        z.writestr("archive/byteorder", b"little")
        for key, data in storages.items():
            z.writestr(f"archive/data/{key}", data)
        z.writestr("archive/version", b"3\n")
    return out.getvalue()


def f32(*values: float) -> bytes:
    return np.array(values, dtype=np.float32).tobytes()


# --- models ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert_state() -> dict[str, torch.Tensor]:
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        vocab_size=99,
    )
    model = BertForMaskedLM(config)
    sd = model.state_dict()
    ptr = sd["bert.embeddings.word_embeddings.weight"].untyped_storage().data_ptr()
    assert sd["cls.predictions.decoder.weight"].untyped_storage().data_ptr() == ptr
    return sd


def dtype_zoo() -> dict[str, Any]:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3, 5, generator=g)
    b = torch.randn(4, 6, generator=g)
    c = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    return {
        "bf16": torch.randn(4, 3, generator=g).to(torch.bfloat16),
        "f16": torch.randn(7, generator=g).to(torch.float16),
        "f8": torch.randn(2, 8, generator=g).to(torch.float8_e4m3fn),
        "f8_e5m2": torch.randn(5, generator=g).to(torch.float8_e5m2),
        "u16": torch.tensor([0, 1, 65535, 300], dtype=torch.int32).to(torch.uint16),
        "i64": torch.tensor([-(2**62), -1, 0, 2**62 + 3], dtype=torch.int64),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([[True, False], [False, True]]),
        "f64": torch.randn(2, 2, generator=g, dtype=torch.float64),
        "c64": torch.randn(3, generator=g, dtype=torch.complex64),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
        "param": torch.nn.Parameter(torch.randn(2, 3, generator=g)),
        "a": a,
        "a_t": a.t(),  # shares a's storage, transposed
        "solo_t": b.t(),  # b itself is not saved: a transposed view of a whole storage
        "row": c[1],  # a slice with a storage offset, its base not saved
        "expanded": torch.arange(3.0).expand(2, 3),  # stride 0
        "nested": {"list": [torch.ones(2), {"deep": torch.full((2, 2), 7.0)}], "n": 1},
    }


# --- round trips -------------------------------------------------------------------


def test_bert_state_dict(
    repo: Repository, tmp_path: Path, bert_state: dict[str, torch.Tensor]
) -> None:
    result, loaded, buf = commit_roundtrip(repo, tmp_path, bert_state, "pytorch_model.bin")
    assert result.warnings == ()
    expected = flatten(torch.load(io.BytesIO(buf), weights_only=True))
    assert set(expected) == set(bert_state)
    assert_same_tensors(loaded, expected)
    assert result.tensors == len(bert_state)

    layout = parse_bytes(buf, "pytorch_model.bin")
    assert layout.format == "pytorch"
    check_layout(layout, buf, expected)
    # Tied weights: the decoder reads the word embeddings' segment through a view.
    views = {v.name: v for v in layout.views}
    assert set(views) == {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    emb = layout.segments[views["cls.predictions.decoder.weight"].segment]
    assert emb.tensor is not None and emb.tensor.name == "bert.embeddings.word_embeddings.weight"
    # Every other tensor is a whole TENSOR segment.
    assert sum(s.tensor is not None for s in layout.segments) == len(bert_state) - 2

    files = {f.path: f for f in repo.show(result.id).files}
    rows = {t.name: t for t in files["pytorch_model.bin"].tensors}
    assert set(rows) == set(bert_state)
    tied = rows["cls.predictions.decoder.weight"]
    assert tied.offset == rows["bert.embeddings.word_embeddings.weight"].offset
    assert files["pytorch_model.bin"].format == "pytorch"


def test_dtypes_views_and_parameters(repo: Repository, tmp_path: Path) -> None:
    zoo = dtype_zoo()
    result, loaded, buf = commit_roundtrip(repo, tmp_path, zoo, "zoo.pt")
    assert result.warnings == ()
    expected = flatten(torch.load(io.BytesIO(buf), weights_only=True))
    assert "nested.list.1.deep" in expected and "nested.list.0" in expected
    assert_same_tensors(loaded, expected)
    layout = parse_bytes(buf)
    check_layout(layout, buf, expected)
    dtypes = {s.tensor.name: s.tensor.dtype for s in layout.segments if s.tensor is not None}
    assert dtypes["bf16"] is DType.BF16
    assert dtypes["f8"] is DType.F8_E4M3
    assert dtypes["u16"] is DType.U16
    assert dtypes["bool"] is DType.BOOL
    assert dtypes["param"] is DType.F32
    views = {v.name: v for v in layout.views}
    assert set(views) == {"a_t", "solo_t", "row", "expanded"}
    assert views["expanded"].stride == (0, 1)
    assert views["a_t"].stride == (1, 5)
    assert views["row"].offset == 4
    # Views without a whole tensor read from STORAGE segments.
    assert layout.segments[views["solo_t"].segment].tensor is None
    assert layout.segments[views["row"].segment].storage is DType.F32
    # The loaded view is the values, not the storage.
    np.testing.assert_array_equal(loaded["row"], np.array([4, 5, 6, 7], dtype=np.float32))
    np.testing.assert_array_equal(loaded["a_t"], loaded["a"].T)


def test_nested_training_checkpoint(
    repo: Repository, tmp_path: Path, bert_state: dict[str, torch.Tensor]
) -> None:
    lin = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(lin.parameters(), lr=1e-3)
    lin(torch.ones(2, 4)).sum().backward()
    opt.step()
    ckpt = {"model": bert_state, "optimizer": opt.state_dict(), "epoch": 3, "note": "x"}
    result, loaded, buf = commit_roundtrip(repo, tmp_path, ckpt, "trainer.ckpt")
    assert result.warnings == ()
    expected = flatten(torch.load(io.BytesIO(buf), weights_only=True))
    assert "model.bert.embeddings.word_embeddings.weight" in expected
    assert "optimizer.state.0.exp_avg" in expected
    assert "optimizer.state.1.step" in expected
    assert_same_tensors(loaded, expected)
    check_layout(parse_bytes(buf), buf, expected)


def test_the_same_tensor_object_twice(repo: Repository, tmp_path: Path) -> None:
    t = torch.arange(6, dtype=torch.int32)
    _result, loaded, buf = commit_roundtrip(repo, tmp_path, {"x": t, "y": t, "z": [t]}, "s.pt")
    expected = flatten(torch.load(io.BytesIO(buf), weights_only=True))
    assert set(expected) == {"x", "y", "z.0"}
    assert_same_tensors(loaded, expected)
    layout = parse_bytes(buf)
    check_layout(layout, buf, expected)
    assert len(layout.views) == 2


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickle_protocols(repo: Repository, tmp_path: Path, protocol: int) -> None:
    zoo = dtype_zoo()
    _, loaded, buf = commit_roundtrip(repo, tmp_path, zoo, "p.pt", pickle_protocol=protocol)
    # torch's weights-only loader reads protocol 2 only; this file is our own.
    expected = flatten(torch.load(io.BytesIO(buf), weights_only=False))
    assert_same_tensors(loaded, expected)
    check_layout(parse_bytes(buf), buf, expected)


def test_numpy_scalars_and_plain_values_are_allowed(repo: Repository, tmp_path: Path) -> None:
    obj = {
        "w": torch.ones(2),
        "best": np.float64(0.25),
        "step": np.int64(7),
        "dtype": np.dtype("float32"),
        "blob": b"\x00\xffbytes",
        "none": None,
        "cfg": {"lr": 1e-3, "betas": (0.9, 0.99), "name": "adam"},
    }
    result, loaded, _buf = commit_roundtrip(repo, tmp_path, obj, "extra.pt")
    assert result.warnings == ()
    assert set(loaded) == {"w"}


@pytest.mark.parametrize("protocol", [2, 4])
def test_sets_are_allowed(repo: Repository, tmp_path: Path, protocol: int) -> None:
    # builtins.set and builtins.frozenset are on the allowed list; protocol 2 (torch.save's
    # default) spells them __builtin__.set / __builtin__.frozenset.
    obj = {"w": torch.ones(2), "tags": {"a", "b"}, "frozen": frozenset([1])}
    buf = torch_bytes(obj, pickle_protocol=protocol)
    layout = parse_bytes(buf)
    assert layout.warnings == ()
    assert [s.tensor.name for s in layout.segments if s.tensor is not None] == ["w"]


def test_a_bare_tensor_and_a_list(repo: Repository, tmp_path: Path) -> None:
    _, loaded, _ = commit_roundtrip(repo, tmp_path, torch.ones(3, 2), "t.pth")
    assert set(loaded) == {"tensor"}
    assert_same_tensors(loaded, {"tensor": torch.ones(3, 2)})
    _, loaded, _buf = commit_roundtrip(repo, tmp_path, [torch.zeros(2), torch.ones(1)], "l.pt")
    assert_same_tensors(loaded, {"0": torch.zeros(2), "1": torch.ones(1)})


def test_parse_is_independent_of_the_reader_path(bert_state: dict[str, torch.Tensor]) -> None:
    buf = torch_bytes(bert_state)
    assert parse_bytes(buf, "a.bin") == parse_bytes(buf, "b.bin")
    assert detect("x/pytorch_model.bin").name == "pytorch"
    assert detect("x.ckpt").name == detect("x.pth").name == detect("x.pt").name == "pytorch"


# --- refused pickles: opaque, with a warning, nothing run -------------------------


class _SystemCall:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


def assert_refused_opaque(
    repo: Repository, tmp_path: Path, buf: bytes, *fragments: str, name: str = "evil.pt"
) -> CommitResult:
    layout = parse_bytes(buf, name)
    assert layout.format == "pytorch"
    assert [(s.offset, s.size, s.tensor, s.storage) for s in layout.segments] == [
        (0, len(buf), None, None)
    ]
    assert layout.views == ()
    (warning,) = layout.warnings
    for fragment in fragments:
        assert fragment in warning, (fragment, warning)
    src = tmp_path / f"in-{len(list(tmp_path.iterdir()))}"
    src.mkdir()
    (src / name).write_bytes(buf)
    result = repo.commit(src / name, "hostile")
    assert len(result.warnings) == 1 and all(f in result.warnings[0] for f in fragments)
    assert result.tensors == 0
    out = tmp_path / f"out-{result.id[:12]}"
    repo.restore(result.id, out)
    assert (out / name).read_bytes() == buf
    assert repo.load(result.id, file=name) == {}
    (info,) = [f for f in repo.show(result.id).files if f.path == name]
    assert info.tensors == ()
    return result


def test_os_system_in_a_real_checkpoint(repo: Repository, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    obj = {"w": torch.ones(3), "evil": _SystemCall(f"touch {marker}")}
    buf = torch_bytes(obj)
    refused = f"refused global {os.system.__module__}.system"
    assert_refused_opaque(repo, tmp_path, buf, refused)
    # Also with data.pkl rewritten inside a checkpoint that was clean.
    clean = torch_bytes({"w": torch.ones(3)})
    evil_pkl = pickle.dumps({"w": _SystemCall(f"touch {marker}")}, protocol=2)
    assert_refused_opaque(repo, tmp_path, rewrite_zip(clean, {"data.pkl": evil_pkl}), refused)
    assert not marker.exists()
    # The payload is live: unpickling it for real does create the marker.
    pickle.loads(evil_pkl)
    assert marker.exists()


@pytest.mark.parametrize(
    ("module", "name", "args"),
    [
        ("builtins", "eval", ("__import__('pathlib').Path('{marker}').touch()",)),
        ("builtins", "exec", ("open('{marker}', 'w').close()",)),
        ("builtins", "getattr", ("{marker}", "touch")),
        ("builtins", "__import__", ("os",)),
        ("subprocess", "check_call", ("touch", "{marker}")),
        ("subprocess", "Popen", ("touch {marker}",)),
        ("os", "system", ("touch {marker}",)),
        ("posix", "system", ("touch {marker}",)),
        ("pathlib", "Path", ("{marker}",)),
        ("torch", "load", ("{marker}",)),
        ("torch.serialization", "load", ("{marker}",)),
        ("numpy.core.multiarray", "_reconstruct", ()),
        ("collections", "OrderedDict.fromkeys", ()),
        ("torch._utils", "_rebuild_tensor_v2.__globals__", ()),
    ],
)
def test_refused_globals(
    repo: Repository, tmp_path: Path, module: str, name: str, args: tuple[str, ...]
) -> None:
    marker = tmp_path / "pwned"
    pkl = call_pickle(module, name, *(a.format(marker=marker) for a in args))
    buf = rewrite_zip(torch_bytes({"w": torch.ones(2)}), {"data.pkl": pkl})
    assert_refused_opaque(repo, tmp_path, buf, f"refused global {module}.{name}")
    assert not marker.exists()


def test_stack_global_protocol_4_is_refused(repo: Repository, tmp_path: Path) -> None:
    # STACK_GLOBAL (protocol 4) goes through find_class as well.
    marker = tmp_path / "pwned"
    pkl = pickle.dumps({"w": _SystemCall(f"touch {marker}")}, protocol=4)
    assert b"\x93" in pkl  # STACK_GLOBAL
    buf = rewrite_zip(torch_bytes({"w": torch.ones(2)}), {"data.pkl": pkl})
    assert_refused_opaque(repo, tmp_path, buf, "refused global")
    assert not marker.exists()


def test_storage_without_a_data_entry(repo: Repository, tmp_path: Path) -> None:
    buf = torch_bytes({"w": torch.ones(3), "v": torch.zeros(2)})
    assert_refused_opaque(repo, tmp_path, rewrite_zip(buf, {"data/1": None}), "'1'", "no data/1")


def test_compressed_storage(repo: Repository, tmp_path: Path) -> None:
    buf = torch_bytes({"w": torch.zeros(100)})
    bad = rewrite_zip(buf, compress=("data/0",))
    # torch itself reads it, but its bytes are not one range of the file.
    assert torch.equal(torch.load(io.BytesIO(bad), weights_only=True)["w"], torch.zeros(100))
    assert_refused_opaque(repo, tmp_path, bad, "storage '0' is compressed")


@pytest.mark.parametrize("delta", [-4, 4, -1])
def test_storage_entry_of_the_wrong_size(repo: Repository, tmp_path: Path, delta: int) -> None:
    buf = torch_bytes({"w": torch.ones(4)})
    with zipfile.ZipFile(io.BytesIO(buf)) as z:
        data = z.read(entry_name(buf, "data/0"))
    data = data[:delta] if delta < 0 else data + bytes(delta)
    bad = rewrite_zip(buf, {"data/0": data})
    assert_refused_opaque(repo, tmp_path, bad, "storage '0'", "expected 16")


def test_compressed_pickle_is_still_read(repo: Repository, tmp_path: Path) -> None:
    # A deflated data.pkl is fine: only storages must be stored.
    buf = rewrite_zip(torch_bytes({"w": torch.ones(4)}), compress=("data.pkl",))
    _layout = parse_bytes(buf)
    assert _layout.warnings == ()
    assert [s.tensor.name for s in _layout.segments if s.tensor is not None] == ["w"]


def test_fake_checkpoint_helper_matches_torch() -> None:
    st = FakeStorage("0", 4)
    buf = fake_checkpoint({"w": FakeTensor(st, 1, (2,), (2,))}, {"0": f32(1, 2, 3, 4)})
    loaded = torch.load(io.BytesIO(buf), weights_only=True)
    assert torch.equal(loaded["w"], torch.tensor([2.0, 4.0]))
    layout = parse_bytes(buf)
    assert layout.warnings == ()
    (view,) = layout.views
    assert (view.name, view.shape, view.stride, view.offset) == ("w", (2,), (2,), 1)


@pytest.mark.parametrize(
    ("offset", "size", "stride", "fragment"),
    [
        (0, (5,), (1,), "run past the end"),
        (4, (1,), (1,), "run past the end"),
        (1, (2, 2), (2, 1), "run past the end"),
        (0, (2, 3), (3, 1), "run past the end"),
        (9, (0,), (1,), "offset is past the end"),
    ],
)
def test_view_out_of_bounds(
    repo: Repository,
    tmp_path: Path,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    fragment: str,
) -> None:
    st = FakeStorage("0", 4)
    buf = fake_checkpoint({"w": FakeTensor(st, offset, size, stride)}, {"0": f32(1, 2, 3, 4)})
    assert_refused_opaque(repo, tmp_path, buf, "'w'", fragment)


@pytest.mark.parametrize(
    ("obj", "storages", "fragment"),
    [
        ({"w": FakeTensor(FakeStorage("0", 2), -1, (1,), (1,))}, {"0": f32(1, 2)}, "offset"),
        ({"w": FakeTensor(FakeStorage("0", 2), 0, (-2,), (1,))}, {"0": f32(1, 2)}, "size"),
        ({"w": FakeTensor(FakeStorage("0", 2), 0, (2,), (1, 1))}, {"0": f32(1, 2)}, "differ"),
        ({"w": FakeTensor(FakeStorage("0", -1), 0, (1,), (1,))}, {"0": f32(1)}, "invalid size"),
        (
            {
                "a": FakeTensor(FakeStorage("0", 2), 0, (2,), (1,)),
                "b": FakeTensor(FakeStorage("0", 3), 0, (2,), (1,)),
            },
            {"0": f32(1, 2)},
            "described two ways",
        ),
        (
            {
                "a": FakeTensor(FakeStorage("0", 2), 0, (2,), (1,)),
                "b": FakeTensor(FakeStorage("0", 2, torch.IntStorage), 0, (2,), (1,)),
            },
            {"0": f32(1, 2)},
            "described two ways",
        ),
        (
            {
                "a.b": FakeTensor(FakeStorage("0", 2), 0, (2,), (1,)),
                "a": {"b": FakeTensor(FakeStorage("1", 2), 0, (2,), (1,))},
            },
            {"0": f32(1, 2), "1": f32(3, 4)},
            "two tensors would be named 'a.b'",
        ),
        (
            {
                "f": FakeTensorV3(FakeStorage("0", 8, torch.UntypedStorage), (2,), torch.float32),
                "i": FakeTensorV3(FakeStorage("0", 8, torch.UntypedStorage), (2,), torch.int32),
            },
            {"0": f32(1, 2)},
            "viewed as 2 dtypes",
        ),
        (
            {"f": FakeTensorV3(FakeStorage("0", 6, torch.UntypedStorage), (1,), torch.float32)},
            {"0": f32(1, 2)[:6]},
            "storage '0'",
        ),
    ],
    ids=[
        "neg-offset",
        "neg-size",
        "stride-len",
        "neg-numel",
        "numel-2-ways",
        "dtype-2-ways",
        "name-clash",
        "untyped-2-dtypes",
        "untyped-partial-element",
    ],
)
def test_inconsistent_pickles(
    repo: Repository, tmp_path: Path, obj: Any, storages: dict[str, bytes], fragment: str
) -> None:
    assert_refused_opaque(repo, tmp_path, fake_checkpoint(obj, storages), fragment)


@pytest.mark.parametrize(
    ("pkl", "fragment"),
    [
        (b"\x80\x02}q\x00", "unreadable pickle"),
        (b"not a pickle at all", "unreadable pickle"),
        (b"\x80\x02(X\x01\x00\x00\x00kq\x00Q.", "unknown persistent id"),
        (b"", "unreadable pickle"),
    ],
)
def test_broken_pickles(repo: Repository, tmp_path: Path, pkl: bytes, fragment: str) -> None:
    buf = rewrite_zip(torch_bytes({"w": torch.ones(2)}), {"data.pkl": pkl})
    assert_refused_opaque(repo, tmp_path, buf, fragment)


def test_deeply_nested_pickle(repo: Repository, tmp_path: Path) -> None:
    obj: Any = {"w": FakeTensor(FakeStorage("0", 1), 0, (1,), (1,))}
    for _ in range(100):
        obj = [obj]
    buf = fake_checkpoint(obj, {"0": f32(1)})
    assert_refused_opaque(repo, tmp_path, buf, "nests too deeply")


class _Timeout(Exception):
    pass


def _alarm(_signum: int, _frame: Any) -> None:
    raise _Timeout


def test_shared_subobjects_do_not_explode() -> None:
    # A tiny pickle of a DAG: each level is a list holding the previous level twice,
    # so there are 2**40 paths through 40 objects. Reading it must stay bounded
    # (parsed or refused within seconds), not walk every path.
    level: Any = []
    for _ in range(40):
        level = [level, level]
    buf = fake_checkpoint(
        {"w": FakeTensor(FakeStorage("0", 1), 0, (1,), (1,)), "x": level}, {"0": f32(1)}
    )
    assert len(buf) < 2000
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(10)
    try:
        layout = parse_bytes(buf)
    except _Timeout:
        pytest.fail("parsing a 2 KB checkpoint did not finish within 10 s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    check_exact_cover(layout, buf)


def test_big_endian_byteorder_is_refused(repo: Repository, tmp_path: Path) -> None:
    buf = rewrite_zip(torch_bytes({"w": torch.ones(2)}), {"byteorder": b"big"})
    assert_refused_opaque(repo, tmp_path, buf, "big-endian")


def test_two_pickles_is_refused(repo: Repository, tmp_path: Path) -> None:
    buf = torch_bytes({"w": torch.ones(2)})
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buf)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        dst.writestr("other/data.pkl", src.read(entry_name(buf, "data.pkl")))
    assert_refused_opaque(repo, tmp_path, out.getvalue(), "no single data.pkl")


def test_zip_without_a_pickle_is_refused(repo: Repository, tmp_path: Path) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("readme.txt", b"just a zip")
    assert_refused_opaque(repo, tmp_path, out.getvalue(), "not a torch.save checkpoint")


# --- files that are not zip checkpoints -------------------------------------------


def test_legacy_format_is_opaque_with_a_warning(repo: Repository, tmp_path: Path) -> None:
    obj = {"w": torch.arange(10, dtype=torch.float32), "b": torch.ones(2, dtype=torch.int64)}
    buf = torch_bytes(obj, _use_new_zipfile_serialization=False)
    assert buf[:1] == b"\x80"
    layout = parse_bytes(buf, "old.bin")
    assert layout.format == "pytorch"
    assert [(s.offset, s.size) for s in layout.segments] == [(0, len(buf))]
    (warning,) = layout.warnings
    assert "legacy (non-zip) torch.save format" in warning and "old.bin" in warning
    result, loaded, restored = commit_roundtrip(
        repo, tmp_path, obj, "old.bin", _use_new_zipfile_serialization=False
    )
    assert restored == buf
    assert len(result.warnings) == 1 and "legacy" in result.warnings[0]
    assert loaded == {}


@pytest.mark.parametrize("name", ["x.bin", "weights.pt", "y.ckpt"])
def test_random_bytes_are_opaque_without_warning(
    repo: Repository, tmp_path: Path, rng: np.random.Generator, name: str
) -> None:
    data = rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()
    data = b"\x00" + data[1:]  # never a pickle protocol header
    layout = parse_bytes(data, name)
    assert layout.warnings == ()
    assert layout.format == "opaque"
    (tmp_path / name).write_bytes(data)
    result = repo.commit(tmp_path / name, "random")
    assert result.warnings == ()
    (info,) = repo.show(result.id).files
    assert info.format == "opaque"
    repo.restore(result.id, tmp_path / "out")
    assert (tmp_path / "out" / name).read_bytes() == data


@pytest.mark.parametrize("size", [0, 1, 2, 21])
def test_tiny_files_are_opaque(size: int) -> None:
    layout = parse_bytes(b"\x80\x02\x00"[:size] + bytes(max(0, size - 3)), "t.pt")
    assert layout.size == size


def test_truncated_zip_is_refused_and_nothing_is_committed(
    repo: Repository, tmp_path: Path
) -> None:
    (tmp_path / "ok.pt").write_bytes(torch_bytes({"w": torch.ones(8)}))
    repo.commit(tmp_path / "ok.pt", "first")
    before = [e.id for e in repo.log()]
    buf = torch_bytes({"w": torch.ones(1000)})
    for cut in [len(buf) // 2, len(buf) - 1, len(buf) - 22, 30]:
        path = tmp_path / "bad" / "model.pt"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(buf[:cut])
        with pytest.raises(MalformedFileError) as info:
            repo.commit(path, "truncated")
        assert info.value.format_name == "pytorch"
        assert "not a valid zip archive" in str(info.value)
        assert [e.id for e in repo.log()] == before


def test_every_truncation_is_refused_or_opaque() -> None:
    buf = torch_bytes({"w": torch.ones(3), "i": torch.arange(2)})
    for cut in range(len(buf)):
        try:
            layout = parse_bytes(buf[:cut])
        except MalformedFileError:
            continue
        # Prefixes too short to be a zip are not pytorch files at all.
        assert cut < 22 and layout.format == "opaque", cut


def test_bad_utf8_entry_name_is_malformed() -> None:
    buf = bytearray(torch_bytes({"w": torch.ones(2)}))
    # Flag the first central-directory entry as UTF-8 and break its name.
    cd = buf.find(b"PK\x01\x02")
    flags = struct.unpack_from("<H", buf, cd + 8)[0]
    struct.pack_into("<H", buf, cd + 8, flags | 0x800)
    buf[cd + 46] = 0xFF
    with pytest.raises(MalformedFileError, match="not a valid zip archive"):
        parse_bytes(bytes(buf))


# --- dedup across formats ---------------------------------------------------------


def big_state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(128, 128), (64, 256), (16384,), (32, 32, 16), (128, 129)]
    return {f"layer{i}.weight": torch.randn(s, generator=g) for i, s in enumerate(shapes)}


def tensor_bytes(sd: Mapping[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in sd.values())


def test_torch_and_safetensors_share_tensor_chunks(repo: Repository, tmp_path: Path) -> None:
    sd = big_state(3)
    assert all(t.numel() * t.element_size() >= 64 << 10 for t in sd.values())
    total = tensor_bytes(sd)
    d = tmp_path / "ckpt"
    d.mkdir()
    torch.save(sd, d / "model.pt")
    save_safetensors(sd, str(d / "model.safetensors"))

    first = repo.commit(d / "model.pt", "torch")
    assert first.new_stored_size > total // 2  # random floats barely compress
    second = repo.commit(d / "model.safetensors", "safetensors")
    assert second.warnings == ()
    assert second.tensors == len(sd)
    assert second.new_stored_size < total // 50, (second.new_stored_size, total)
    a = repo.load(first.id, file="model.pt")
    b = repo.load(second.id, file="model.safetensors")
    assert set(a) == set(b) == set(sd)
    for name in sd:
        assert raw_bits(a[name]) == raw_bits(b[name]) == raw_bits(from_torch(sd[name]))


def test_both_formats_in_one_commit(tmp_path: Path) -> None:
    sd = big_state(4)
    total = tensor_bytes(sd)
    d = tmp_path / "ckpt"
    d.mkdir()
    torch.save(sd, d / "model.pt")
    save_safetensors(sd, str(d / "model.safetensors"))
    with Repository.init(tmp_path / "r1") as one, Repository.init(tmp_path / "r2") as both:
        only_torch = one.commit(d / "model.pt", "torch only")
        result = both.commit(d, "both")
        assert result.files == 2 and result.tensors == 2 * len(sd)
        assert result.logical_size > 2 * total
        assert result.new_stored_size < only_torch.new_stored_size + total // 50
        loaded = both.load(result.id, file="model.pt")
        assert set(loaded) == set(sd)
        out = tmp_path / "out"
        both.restore(result.id, out)
        for name in ("model.pt", "model.safetensors"):
            assert (out / name).read_bytes() == (d / name).read_bytes()


def test_one_tensor_changed_stores_about_one_tensor(repo: Repository, tmp_path: Path) -> None:
    sd = big_state(5)
    (tmp_path / "a").mkdir()
    torch.save(sd, tmp_path / "a" / "model.pt")
    repo.commit(tmp_path / "a" / "model.pt", "v1")
    sd2 = dict(sd)
    changed = "layer1.weight"
    sd2[changed] = sd[changed] + 1
    (tmp_path / "b").mkdir()
    torch.save(sd2, tmp_path / "b" / "model.pt")
    second = repo.commit(tmp_path / "b" / "model.pt", "v2")
    one = sd[changed].numel() * 4
    assert one * 0.5 < second.new_stored_size < one * 1.2, (second.new_stored_size, one)


# --- lazy torch access -------------------------------------------------------------


def iter_names(layout: FileLayout) -> Iterator[str]:
    for t in layout.tensor_names():
        yield t.name


def test_tensor_names_of_layout(bert_state: dict[str, torch.Tensor]) -> None:
    layout = parse_bytes(torch_bytes(bert_state))
    assert sorted(iter_names(layout)) == sorted(bert_state)
