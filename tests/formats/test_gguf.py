"""wvc.formats.gguf: wvc's own GGUF reader, checked against the gguf package.

Valid files are written with ``gguf.GGUFWriter`` and compared with
``gguf.GGUFReader``; malformed ones are built byte by byte with
``build_gguf`` below (or cut out of valid ones) and must be refused with
MalformedFileError, never another exception and never a huge allocation.
"""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as GGML
from gguf.quants import quantize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layout_checks import check_exact_cover as check_cover

from wvc import Repository
from wvc.dtypes import DType
from wvc.errors import MalformedFileError
from wvc.formats import FileLayout, detect
from wvc.formats.gguf import GgufFormat, summarize

FMT = GgufFormat()
PATH = "models/tiny.Q8_0.gguf"


def parse_bytes(buf: bytes, path: str = PATH) -> FileLayout:
    return FMT.parse(path, lambda off, n: buf[off : off + n], len(buf))


def describe_bytes(buf: bytes) -> dict[str, object]:
    return FMT.describe(PATH, lambda off, n: buf[off : off + n], len(buf))


def refuse(buf: bytes, *fragments: str) -> MalformedFileError:
    with pytest.raises(MalformedFileError) as info:
        parse_bytes(buf)
    message = str(info.value)
    assert message.startswith(f"{PATH}: malformed gguf file: "), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return info.value


def check_exact_cover(layout: FileLayout, buf: bytes) -> None:
    assert layout.format == "gguf"
    check_cover(layout, buf)


# --- writing real files ------------------------------------------------------------

TensorSpec = np.ndarray | tuple[np.ndarray, GGML]


def write_gguf(
    path: Path,
    tensors: Mapping[str, TensorSpec],
    kv: Sequence[tuple[str, Any]] = (),
    *,
    alignment: int | None = None,
    endianess: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE,
) -> bytes:
    w = gguf.GGUFWriter(str(path), "llama", endianess=endianess)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for key, value in kv:
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            (w.add_int64 if value < 0 else w.add_uint32)(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        else:
            w.add_array(key, value)
    for name, spec in tensors.items():
        if isinstance(spec, tuple):
            data, qtype = spec
            w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)
        else:
            w.add_tensor(name, spec)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


def q8(a: np.ndarray) -> tuple[np.ndarray, GGML]:
    return quantize(a.astype(np.float32), GGML.Q8_0), GGML.Q8_0


KV: list[tuple[str, Any]] = [
    ("general.name", "tiny model ü"),
    ("tiny.context_length", 128),
    ("tiny.rope.freq_base", 0.5),
    ("tiny.use_parallel_residual", True),
    ("tiny.flag_off", False),
    ("tiny.offset", -7),
    ("tiny.head_counts", [2, 2, 4]),
    ("tokenizer.ggml.tokens", [f"tok{i}" for i in range(40)]),
    ("tokenizer.ggml.scores", [float(i) / 4 for i in range(20)]),
    ("tiny.short_strings", ["a", "b"]),
    ("tiny.long_text", "x" * 300),
]


def tiny_tensors(rng: np.random.Generator) -> dict[str, TensorSpec]:
    return {
        "token_embd.weight": rng.standard_normal((8, 64)).astype(np.float32),
        "blk.0.attn_q.weight": q8(rng.standard_normal((4, 64))),
        "blk.0.ffn_up.weight": rng.standard_normal((3, 32)).astype(np.float16),
        "blk.0.attn_norm.weight": rng.standard_normal(64).astype(np.float32),  # 1-D
        "blk.0.conv.weight": rng.standard_normal((2, 3, 4)).astype(np.float32),  # 3-D
        "blk.0.bias": rng.standard_normal(5).astype(np.float32),  # unaligned size
        "empty.weight": np.zeros((0, 4), dtype=np.float32),
    }


WVC_DTYPE = {GGML.F32: DType.F32, GGML.F16: DType.F16, GGML.Q8_0: DType.Q8_0}


@pytest.mark.parametrize("alignment", [None, 64, 8])
def test_matches_gguf_reader(
    tmp_path: Path, rng: np.random.Generator, alignment: int | None
) -> None:
    tensors = tiny_tensors(rng)
    buf = write_gguf(tmp_path / "m.gguf", tensors, KV, alignment=alignment)
    layout = parse_bytes(buf)
    check_exact_cover(layout, buf)
    assert layout.warnings == ()
    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    segs = {s.tensor.name: s for s in layout.segments if s.tensor is not None}
    assert set(segs) == {t.name for t in reader.tensors} == set(tensors)
    for rt in reader.tensors:
        seg = segs[rt.name]
        assert seg.tensor is not None
        assert seg.tensor.dtype is WVC_DTYPE[rt.tensor_type]
        assert seg.tensor.shape == tuple(int(d) for d in reversed(rt.shape))
        assert seg.offset == rt.data_offset
        assert seg.size == rt.n_bytes
        assert buf[seg.offset : seg.offset + seg.size] == rt.data.tobytes()
        if alignment:
            assert seg.offset % alignment == 0
    # Shapes are outermost first, as numpy orders them.
    assert segs["blk.0.conv.weight"].tensor.shape == (2, 3, 4)  # type: ignore[union-attr]
    assert segs["blk.0.attn_norm.weight"].tensor.shape == (64,)  # type: ignore[union-attr]
    assert segs["blk.0.attn_q.weight"].tensor.shape == (4, 64)  # type: ignore[union-attr]
    # Opaque segments are the header and the padding between tensors only.
    first = min(s.offset for s in segs.values())
    assert layout.segments[0].tensor is None and layout.segments[0].size == first
    assert detect("a/b/model-Q4_K_M.gguf").name == "gguf"


def test_describe_matches_reader_fields(tmp_path: Path, rng: np.random.Generator) -> None:
    buf = write_gguf(tmp_path / "m.gguf", tiny_tensors(rng), KV)
    meta = describe_bytes(buf)
    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    assert meta["gguf.version"] == 3
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        assert key in meta
        assert meta[key] == summarize(field.contents()), key
    assert meta["general.architecture"] == "llama"
    assert meta["general.name"] == "tiny model ü"
    assert meta["tiny.context_length"] == 128
    assert meta["tiny.rope.freq_base"] == 0.5
    assert meta["tiny.use_parallel_residual"] is True
    assert meta["tiny.flag_off"] is False
    assert meta["tiny.offset"] == -7
    assert meta["tiny.head_counts"] == [2, 2, 4]
    assert meta["tiny.short_strings"] == ["a", "b"]
    assert meta["tokenizer.ggml.tokens"] == "[40 x str]"
    assert meta["tokenizer.ggml.scores"] == "[20 x float]"
    long_text = meta["tiny.long_text"]
    assert isinstance(long_text, str) and long_text.endswith("(300 chars)")
    assert describe_bytes(buf[:100]) == {}


def test_summarize() -> None:
    assert summarize(list(range(16))) == list(range(16))
    assert summarize(list(range(17))) == "[17 x int]"
    assert summarize([]) == []
    assert summarize([[1], [2]]) == "[2 x list]"
    assert summarize(["a", 1]) == ["a", 1]
    assert summarize("s" * 200) == "s" * 200


def test_commit_restore_load_show(
    repo: Repository, tmp_path: Path, rng: np.random.Generator
) -> None:
    tensors = tiny_tensors(rng)
    d = tmp_path / "ckpt"
    d.mkdir()
    buf = write_gguf(d / "tiny.gguf", tensors, KV)
    result = repo.commit(d, "gguf")
    assert result.warnings == ()
    assert result.tensors == len(tensors)
    repo.restore(result.id, tmp_path / "out")
    assert (tmp_path / "out" / "tiny.gguf").read_bytes() == buf
    loaded = repo.load(result.id, file="tiny.gguf")
    assert set(loaded) == set(tensors)
    for name, spec in tensors.items():
        got = loaded[name]
        if isinstance(spec, tuple):  # block-quantized: the raw bytes, 1-D uint8
            assert got.dtype == np.uint8 and got.ndim == 1
            assert got.tobytes() == spec[0].tobytes()
        else:
            assert got.dtype == spec.dtype and got.shape == spec.shape
            assert got.tobytes() == spec.tobytes()
    (info,) = repo.show(result.id).files
    assert info.format == "gguf"
    rows = {t.name: t for t in info.tensors}
    assert rows["blk.0.attn_q.weight"].dtype == "Q8_0"
    assert rows["blk.0.attn_q.weight"].shape == (4, 64)
    assert rows["blk.0.attn_q.weight"].size == 4 * 2 * 34
    assert info.metadata["general.name"] == "tiny model ü"
    assert info.metadata["tokenizer.ggml.tokens"] == "[40 x str]"
    assert info.metadata["tiny.head_counts"] == [2, 2, 4]
    assert info.metadata["gguf.version"] == 3


def test_one_tensor_changed_stores_about_that_tensor(
    repo: Repository, tmp_path: Path, rng: np.random.Generator
) -> None:
    tensors: dict[str, TensorSpec] = {
        f"blk.{i}.weight": rng.standard_normal((64, 256)).astype(np.float32) for i in range(4)
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_gguf(tmp_path / "a" / "m.gguf", tensors, KV)
    first = repo.commit(tmp_path / "a" / "m.gguf", "v1")
    changed = dict(tensors)
    changed["blk.2.weight"] = rng.standard_normal((64, 256)).astype(np.float32)
    write_gguf(tmp_path / "b" / "m.gguf", changed, KV)
    second = repo.commit(tmp_path / "b" / "m.gguf", "v2")
    one = 64 * 256 * 4
    assert first.new_stored_size > 3 * one
    assert one // 2 < second.new_stored_size < one + 8192, (second.new_stored_size, one)


def test_quantizations_share_their_float_tensors(
    repo: Repository, tmp_path: Path, rng: np.random.Generator
) -> None:
    weights = {f"blk.{i}.attn_q.weight": rng.standard_normal((128, 256)) for i in range(2)}
    norms = {
        "blk.0.attn_norm.weight": rng.standard_normal(16384).astype(np.float32),
        "output_norm.weight": rng.standard_normal(16384).astype(np.float32),
    }
    f16: dict[str, TensorSpec] = {k: v.astype(np.float16) for k, v in weights.items()}
    q8_0: dict[str, TensorSpec] = {k: q8(v) for k, v in weights.items()}
    (tmp_path / "f16").mkdir()
    (tmp_path / "q8").mkdir()
    write_gguf(tmp_path / "f16" / "model-F16.gguf", {**f16, **norms}, KV)
    write_gguf(tmp_path / "q8" / "model-Q8_0.gguf", {**q8_0, **norms}, KV)
    repo.commit(tmp_path / "f16" / "model-F16.gguf", "f16")
    second = repo.commit(tmp_path / "q8" / "model-Q8_0.gguf", "q8_0")
    q8_bytes = sum(s[0].nbytes for s in q8_0.values() if isinstance(s, tuple))
    norm_bytes = sum(n.nbytes for n in norms.values())
    # The norms (F32 in both files) are already stored: only the Q8_0 weights are new.
    assert second.new_stored_size < q8_bytes + norm_bytes // 4, (second.new_stored_size,)
    a = repo.load("HEAD~1", file="model-F16.gguf")
    b = repo.load("HEAD", file="model-Q8_0.gguf")
    for name, norm in norms.items():
        assert a[name].tobytes() == b[name].tobytes() == norm.tobytes()


def test_version_2_is_read(tmp_path: Path, rng: np.random.Generator) -> None:
    buf = bytearray(write_gguf(tmp_path / "m.gguf", tiny_tensors(rng), KV))
    struct.pack_into("<I", buf, 4, 2)
    layout = parse_bytes(bytes(buf))
    check_exact_cover(layout, bytes(buf))
    assert describe_bytes(bytes(buf))["gguf.version"] == 2


def test_big_endian_is_opaque_with_a_warning(
    repo: Repository, tmp_path: Path, rng: np.random.Generator
) -> None:
    tensors = {"w": rng.standard_normal((2, 32)).astype(np.float32)}
    buf = write_gguf(tmp_path / "be.gguf", tensors, endianess=gguf.GGUFEndian.BIG)
    # The magic is the same bytes in both byte orders; the version tells them apart
    # (gguf.GGUFReader and llama.cpp detect big-endian files that way).
    assert buf[:8] == b"GGUF\x00\x00\x00\x03"
    assert gguf.GGUFReader(str(tmp_path / "be.gguf")).endianess == gguf.GGUFEndian.BIG
    layout = parse_bytes(buf)
    assert [(s.offset, s.size, s.tensor) for s in layout.segments] == [(0, len(buf), None)]
    (warning,) = layout.warnings
    assert "big-endian" in warning
    result = repo.commit(tmp_path / "be.gguf", "be")
    assert len(result.warnings) == 1
    repo.restore(result.id, tmp_path / "out")
    assert (tmp_path / "out" / "be.gguf").read_bytes() == buf


def test_no_tensors(tmp_path: Path) -> None:
    buf = write_gguf(tmp_path / "kv-only.gguf", {}, KV)
    layout = parse_bytes(buf)
    check_exact_cover(layout, buf)
    assert all(s.tensor is None for s in layout.segments)


# --- hand-built files --------------------------------------------------------------


def gstr(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


def kv_u32(key: str, value: int) -> bytes:
    return gstr(key) + struct.pack("<II", 4, value)


def tinfo(name: str | bytes, dims: Sequence[int], ggml_type: int, offset: int) -> bytes:
    out = gstr(name) + struct.pack("<I", len(dims))
    out += b"".join(struct.pack("<Q", d) for d in dims)
    return out + struct.pack("<IQ", ggml_type, offset)


def build_gguf(
    kvs: Sequence[bytes] = (),
    infos: Sequence[bytes] = (),
    data: bytes = b"",
    *,
    version: int = 3,
    n_tensors: int | None = None,
    n_kv: int | None = None,
    alignment: int = 32,
) -> bytes:
    head = b"GGUF" + struct.pack(
        "<IQQ",
        version,
        len(infos) if n_tensors is None else n_tensors,
        len(kvs) if n_kv is None else n_kv,
    )
    head += b"".join(kvs) + b"".join(infos)
    head += bytes(-len(head) % alignment)
    return head + data


F32x8 = tinfo("w", [8], 0, 0)
GOOD = build_gguf([kv_u32("a", 1)], [F32x8, tinfo("v", [4, 2], 0, 32)], bytes(32 + 32))


def test_hand_built_file_is_read_by_both(tmp_path: Path) -> None:
    layout = parse_bytes(GOOD)
    check_exact_cover(layout, GOOD)
    assert [(s.tensor.name, s.tensor.shape) for s in layout.segments if s.tensor] == [
        ("w", (8,)),
        ("v", (2, 4)),
    ]
    (tmp_path / "good.gguf").write_bytes(GOOD)
    reader = gguf.GGUFReader(str(tmp_path / "good.gguf"))
    assert [t.name for t in reader.tensors] == ["w", "v"]


@pytest.mark.parametrize("magic", [b"GGUG", b"\0\0\0\0", b"ggml", b"GGJT"])
def test_bad_magic(magic: bytes) -> None:
    refuse(magic + GOOD[4:], "missing the GGUF magic")


@pytest.mark.parametrize("version", [0, 1, 4, 2**31])
def test_unsupported_version(version: int) -> None:
    refuse(build_gguf(version=version), f"unsupported GGUF version {version}")


@pytest.mark.parametrize("size", range(0, 24))
def test_too_short_for_a_header(size: int) -> None:
    refuse(GOOD[:size])


def test_every_truncation_is_refused(tmp_path: Path, rng: np.random.Generator) -> None:
    real = write_gguf(tmp_path / "m.gguf", tiny_tensors(rng), KV[:4])
    for buf in [GOOD, real]:
        layout = parse_bytes(buf)
        data_end = max(s.offset + s.size for s in layout.segments if s.tensor is not None)
        for cut in range(len(buf)):
            try:
                cut_layout = parse_bytes(buf[:cut])
            except MalformedFileError:
                continue
            # Only padding after the last tensor may go.
            assert cut >= data_end, cut
            check_exact_cover(cut_layout, buf[:cut])


def test_unaligned_tensor_offset() -> None:
    refuse(build_gguf([], [tinfo("w", [2], 0, 4)], bytes(64)), "offset 4 is not aligned to 32")
    custom = build_gguf(
        [kv_u32("general.alignment", 64)], [tinfo("w", [2], 0, 32)], bytes(128), alignment=64
    )
    refuse(custom, "offset 32 is not aligned to 64")


@pytest.mark.parametrize("value", [0, 3, 48, 2**31 + 1])
def test_bad_alignment(value: int) -> None:
    refuse(build_gguf([kv_u32("general.alignment", value)]), "is not a power of two")


def test_alignment_of_the_wrong_type() -> None:
    kv = gstr("general.alignment") + struct.pack("<If", 6, 32.0)
    refuse(build_gguf([kv]), "is not a power of two")


@pytest.mark.parametrize("ggml_type", [4, 5, 31, 36, 99, 2**32 - 1])
def test_unknown_ggml_type(ggml_type: int) -> None:
    refuse(build_gguf([], [tinfo("w", [32], ggml_type, 0)], bytes(256)), "unknown ggml type")


@pytest.mark.parametrize("n_dims", [0, 5, 2**32 - 1])
def test_bad_dimension_count(n_dims: int) -> None:
    info = gstr("w") + struct.pack("<I", n_dims) + bytes(8 * min(n_dims, 6)) + bytes(12)
    refuse(build_gguf([], [info], bytes(64)), f"{n_dims} dimensions")


def test_dimension_out_of_range() -> None:
    refuse(build_gguf([], [tinfo("w", [2**62, 1], 0, 0)], bytes(64)), "dimension out of range")
    refuse(build_gguf([], [tinfo("w", [2**61, 2**61], 0, 0)], bytes(64)), "past the end")


def test_tensor_past_the_end() -> None:
    refuse(build_gguf([], [tinfo("w", [9], 0, 0)], bytes(32)), "'w' runs past the end")
    refuse(build_gguf([], [tinfo("w", [8], 0, 32)], bytes(32)), "'w' runs past the end")
    refuse(build_gguf([], [tinfo("w", [1], 0, 2**63)], bytes(32)), "'w' runs past the end")


def test_data_start_past_the_end() -> None:
    buf = build_gguf([], [tinfo("w", [0], 0, 0)])
    assert len(buf) % 32 == 0
    refuse(buf[: len(buf) - 1], "past the end")


def test_quantized_row_not_whole_blocks() -> None:
    refuse(build_gguf([], [tinfo("q", [33, 2], 8, 0)], bytes(256)), "whole number of Q8_0 blocks")


def test_overlapping_tensors() -> None:
    infos = [tinfo("a", [16], 0, 0), tinfo("b", [8], 0, 32)]
    refuse(build_gguf([], infos, bytes(64)), "tensors overlap")
    # The same offset twice.
    infos = [tinfo("a", [8], 0, 0), tinfo("b", [8], 0, 0)]
    refuse(build_gguf([], infos, bytes(32)), "tensors overlap")


def test_zero_size_tensors_may_share_an_offset() -> None:
    infos = [tinfo("a", [0], 0, 0), tinfo("b", [0, 3], 0, 0), tinfo("c", [8], 0, 0)]
    buf = build_gguf([], infos, bytes(32))
    layout = parse_bytes(buf)
    check_exact_cover(layout, buf)
    assert {s.tensor.name for s in layout.segments if s.tensor} == {"a", "b", "c"}


def test_duplicates() -> None:
    refuse(build_gguf([kv_u32("k", 1), kv_u32("k", 2)]), "metadata key 'k' appears twice")
    infos = [tinfo("w", [8], 0, 0), tinfo("w", [8], 0, 32)]
    refuse(build_gguf([], infos, bytes(64)), "tensor 'w' appears twice")


@pytest.mark.parametrize(
    ("n_tensors", "n_kv"), [(2**64 - 1, 0), (0, 2**64 - 1), (2**40, 2**40), (1000, 0), (0, 1000)]
)
def test_absurd_counts(n_tensors: int, n_kv: int) -> None:
    refuse(build_gguf([kv_u32("a", 1)], [F32x8], bytes(32), n_tensors=n_tensors, n_kv=n_kv))


def _low_memory(buf: bytes) -> MalformedFileError:
    tracemalloc.start()
    try:
        err = refuse(buf)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
    return err


def test_absurd_lengths_allocate_nothing_big() -> None:
    huge = 2**62
    _low_memory(build_gguf([struct.pack("<Q", huge) + b"key"]))
    _low_memory(build_gguf([gstr("k") + struct.pack("<IQ", 8, huge)]))  # string value
    _low_memory(build_gguf([gstr("k") + struct.pack("<IIQ", 9, 0, huge)]))  # u8 array
    _low_memory(build_gguf([gstr("k") + struct.pack("<IIQ", 9, 10, huge // 8)]))  # u64 array
    _low_memory(build_gguf([gstr("k") + struct.pack("<IIQ", 9, 8, huge)]))  # string array
    _low_memory(build_gguf([gstr("k") + struct.pack("<IIQ", 9, 9, huge)]))  # array array
    _low_memory(build_gguf([], [gstr(b"x" * 4) + struct.pack("<I", 4)], n_tensors=2**40))
    err = _low_memory(build_gguf([struct.pack("<Q", 2**31) + b"k"]))
    assert "string of 2147483648 bytes" in str(err)


def test_bad_values() -> None:
    refuse(build_gguf([gstr("k") + struct.pack("<II", 13, 0)]), "unknown metadata value type 13")
    refuse(build_gguf([gstr("k") + struct.pack("<IIQ", 9, 13, 1) + bytes(8)]), "item type 13")
    refuse(build_gguf([gstr("k") + struct.pack("<IB", 7, 2)]), "bool value")
    refuse(build_gguf([gstr(b"\xff\xfe") + struct.pack("<II", 4, 1)]), "not UTF-8")
    refuse(build_gguf([gstr("k") + struct.pack("<I", 8) + gstr(b"\xc3")]), "not UTF-8")
    refuse(build_gguf([], [tinfo(b"\x80", [8], 0, 0)], bytes(32)), "not UTF-8")


def test_nested_arrays() -> None:
    value = struct.pack("<IQ", 4, 2) + struct.pack("<II", 7, 9)  # [7, 9] as u32
    for _ in range(7):
        value = struct.pack("<IQ", 9, 1) + value  # [[...]]
    buf = build_gguf([gstr("k") + struct.pack("<I", 9) + value])
    meta = describe_bytes(buf)
    assert meta["k"] == "[1 x list]"
    deeper = struct.pack("<IQ", 9, 1) + value
    refuse(build_gguf([gstr("k") + struct.pack("<I", 9) + deeper]), "nested too deeply")


def test_bool_arrays_and_every_scalar_type() -> None:
    codes = {
        0: "<B",
        1: "<b",
        2: "<H",
        3: "<h",
        4: "<I",
        5: "<i",
        6: "<f",
        10: "<Q",
        11: "<q",
        12: "<d",
    }
    kvs = [gstr(f"k{t}") + struct.pack("<I", t) + struct.pack(c, 1) for t, c in codes.items()]
    kvs.append(gstr("bools") + struct.pack("<IIQ", 9, 7, 3) + b"\x01\x00\x01")
    kvs.append(gstr("b") + struct.pack("<IB", 7, 1))
    meta = describe_bytes(build_gguf(kvs))
    assert all(meta[f"k{t}"] == 1 for t in codes)
    assert meta["bools"] == [True, False, True]
    assert meta["b"] is True
    refuse(build_gguf([gstr("bools") + struct.pack("<IIQ", 9, 7, 2) + b"\x01\x05"]), "bool")


def test_commit_of_a_malformed_file_is_refused(repo: Repository, tmp_path: Path) -> None:
    (tmp_path / "ok.gguf").write_bytes(GOOD)
    repo.commit(tmp_path / "ok.gguf", "ok")
    before = [e.id for e in repo.log()]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "ok.gguf").write_bytes(GOOD[:-1])
    with pytest.raises(MalformedFileError, match="malformed gguf file"):
        repo.commit(tmp_path / "bad" / "ok.gguf", "bad")
    assert [e.id for e in repo.log()] == before


# --- fuzzing ------------------------------------------------------------------------

HEADER = b"GGUF" + struct.pack("<I", 3)


@given(tail=st.binary(max_size=400))
@settings(max_examples=300, deadline=None)
def test_random_bytes_after_a_valid_header(tail: bytes) -> None:
    buf = HEADER + tail
    try:
        layout = parse_bytes(buf)
    except MalformedFileError:
        return
    check_exact_cover(layout, buf)


@st.composite
def structured(draw: st.DrawFn) -> bytes:
    """Small counts and plausible fields, so parsing gets past the counts."""
    kvs = []
    for i in range(draw(st.integers(0, 3))):
        vtype = draw(st.integers(0, 14))
        kvs.append(gstr(f"k{i}") + struct.pack("<I", vtype) + draw(st.binary(max_size=24)))
    infos = []
    for i in range(draw(st.integers(0, 3))):
        dims = draw(st.lists(st.sampled_from([0, 1, 2, 32, 64, 2**40]), max_size=5))
        ggml_type = draw(st.sampled_from([0, 1, 2, 8, 12, 30, 4, 41, 42]))
        offset = draw(st.sampled_from([0, 32, 64, 7, 2**60]))
        infos.append(tinfo(f"t{i}", dims, ggml_type, offset))
    data = bytes(draw(st.integers(0, 300)))
    buf = bytearray(build_gguf(kvs, infos, data))
    if buf and draw(st.booleans()):
        buf[draw(st.integers(0, len(buf) - 1))] ^= draw(st.integers(1, 255))
    return bytes(buf)


@given(buf=structured())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_structured_fuzz(buf: bytes) -> None:
    try:
        layout = parse_bytes(buf)
    except MalformedFileError:
        return
    check_exact_cover(layout, buf)
    describe_bytes(buf)
