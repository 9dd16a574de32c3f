"""wvc.formats._zip: the strict zip reader, checked against Python's zipfile.

Archives come from two writers: Python's ``zipfile`` (the reference) and
``build_zip`` below, a minimal writer of stored entries that can also write
what ``zipfile`` never would (zip64 fields in the central directory, bad
offsets, overlapping or duplicate entries), so each rule of the reader is hit
on purpose.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import struct
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wvc.formats import _zip
from wvc.formats._zip import DEFLATED, STORED, ZipEntry, ZipError, read_entries, read_entry


def reader(buf: bytes) -> _zip.ReadAt:
    return lambda off, n: buf[off : off + n]


def entries_of(buf: bytes) -> list[ZipEntry]:
    return read_entries(reader(buf), len(buf))


def refuse(buf: bytes, *fragments: str) -> ZipError:
    with pytest.raises(ZipError) as info:
        entries_of(buf)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    return info.value


def local_data_offset(buf: bytes, header_offset: int) -> int:
    """Where an entry's data starts, from its local header (independent of wvc)."""
    assert buf[header_offset : header_offset + 4] == b"PK\x03\x04"
    n_len, e_len = struct.unpack_from("<HH", buf, header_offset + 26)
    return header_offset + 30 + n_len + e_len


def check_against_zipfile(buf: bytes) -> list[ZipEntry]:
    """wvc's entries are zipfile's, in central-directory order, with the same data."""
    entries = entries_of(buf)
    with zipfile.ZipFile(io.BytesIO(buf)) as zf:
        infos = zf.infolist()
        assert [e.name for e in entries] == [i.filename for i in infos]
        for e, info in zip(entries, infos, strict=True):
            assert e.method == info.compress_type
            assert e.flags == info.flag_bits
            assert e.crc == info.CRC
            assert e.size == info.file_size
            assert e.compressed_size == info.compress_size
            assert e.header_offset == info.header_offset
            assert e.data_offset == local_data_offset(buf, info.header_offset)
            plain = zf.read(info)
            assert read_entry(reader(buf), e, len(plain)) == plain
            if e.method == STORED:
                assert e.stored
                assert buf[e.data_offset : e.data_offset + e.size] == plain
            else:
                assert not e.stored
                raw = buf[e.data_offset : e.data_offset + e.compressed_size]
                assert zlib.decompress(raw, -15) == plain
    return entries


def zipfile_bytes(
    files: Sequence[tuple[str, bytes, int]], comment: bytes = b"", **kwargs: object
) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", **kwargs) as zf:  # type: ignore[arg-type]
        for name, data, method in files:
            zf.writestr(zipfile.ZipInfo(name, (2024, 1, 2, 3, 4, 6)), data, compress_type=method)
        zf.comment = comment
    return out.getvalue()


# --- a minimal writer for archives zipfile would not write --------------------


@dataclass
class Raw:
    """One stored entry; the fields that are None are computed."""

    name: bytes
    data: bytes
    flags: int = 0
    method: int = STORED
    local_name: bytes | None = None  # the name in the local header
    cd_size: int | None = None  # the size the central directory claims (both sizes)
    cd_offset: int | None = None  # the local header offset the central directory claims
    zip64: bool = False  # sizes and offset as 0xFFFFFFFF plus a zip64 extra field
    zip64_extra: bytes | None = None  # the central directory's extra field, verbatim


def build_zip(
    entries: Sequence[Raw],
    *,
    comment: bytes = b"",
    zip64_eocd: bool = False,
    n_total: int | None = None,
    cd_offset: int | None = None,
    cd_size: int | None = None,
    disk: int = 0,
) -> bytes:
    out = bytearray()
    central = bytearray()
    for e in entries:
        offset = len(out)
        local_name = e.name if e.local_name is None else e.local_name
        crc = zlib.crc32(e.data)
        out += struct.pack(
            "<4sHHHHHIIIHH",
            b"PK\x03\x04", 20, e.flags, e.method, 0, 0x21,
            crc, len(e.data), len(e.data), len(local_name), 0,
        )  # fmt: skip
        out += local_name + e.data
        size = len(e.data) if e.cd_size is None else e.cd_size
        hdr = offset if e.cd_offset is None else e.cd_offset
        extra = b""
        if e.zip64:
            extra = struct.pack("<HHQQQ", 1, 24, size, size, hdr)
            size32, hdr32 = 0xFFFFFFFF, 0xFFFFFFFF
        else:
            size32, hdr32 = size, hdr
        if e.zip64_extra is not None:
            extra = e.zip64_extra
        central += struct.pack(
            "<4sHHHHHHIIIHHHHHII",
            b"PK\x01\x02", 45, 45 if e.zip64 else 20, e.flags, e.method, 0, 0x21,
            crc, size32, size32, len(e.name), len(extra), 0, 0, 0, 0, hdr32,
        )  # fmt: skip
        central += e.name + extra
    start = len(out) if cd_offset is None else cd_offset
    length = len(central) if cd_size is None else cd_size
    count = len(entries) if n_total is None else n_total
    out += central
    if zip64_eocd:
        eocd64_at = len(out)
        out += struct.pack(
            "<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, length, start
        )
        out += struct.pack("<4sIQI", b"PK\x06\x07", 0, eocd64_at, 1)
        out += struct.pack(
            "<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, len(comment)
        )
    else:
        out += struct.pack(
            "<4sHHHHIIH", b"PK\x05\x06", disk, disk, count, count, length, start, len(comment)
        )
    return bytes(out + comment)


SMALL = [Raw(b"a/data.pkl", b"pickle bytes"), Raw(b"a/data/0", b"\x01" * 40), Raw(b"b", b"")]


# --- archives written by zipfile ---------------------------------------------


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_matches_zipfile(method: int) -> None:
    files = [
        ("archive/data.pkl", b"\x80\x02}q\x00." * 50, method),
        ("archive/data/0", bytes(range(256)) * 7, method),
        ("archive/data/1", b"", method),
        ("archive/version", b"3\n", method),
        ("dir/", b"", method),
    ]
    entries = check_against_zipfile(zipfile_bytes(files))
    assert [e.method for e in entries] == [method] * len(files)
    assert {DEFLATED, STORED} >= {e.method for e in entries}


def test_mixed_methods_with_comment() -> None:
    files = [
        ("stored.bin", b"s" * 1000, zipfile.ZIP_STORED),
        ("deflated.txt", b"hello " * 1000, zipfile.ZIP_DEFLATED),
        ("empty", b"", zipfile.ZIP_STORED),
    ]
    plain = entries_of(zipfile_bytes(files))
    for comment in [b"a comment", b"x" * 0xFFFF]:
        buf = zipfile_bytes(files, comment)
        entries = check_against_zipfile(buf)
        assert [e.stored for e in entries] == [True, False, True]
        assert entries == plain
    # A comment holding the end-record signature (zipfile itself gives up here):
    # the reader walks back to the record whose comment reaches the end of the file.
    buf = zipfile_bytes(files, b"PK\x05\x06 looks like an end record but is not one")
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(buf))
    assert entries_of(buf) == plain


def test_many_entries_utf8_names() -> None:
    files = [(f"t/{i:04d}-ünï", bytes([i % 256]) * (i % 37), i % 2 * 8) for i in range(600)]
    entries = check_against_zipfile(zipfile_bytes(files))
    assert len(entries) == 600
    assert entries[5].name == "t/0005-ünï"
    assert all(e.flags & 0x800 for e in entries)


def test_torch_style_alignment_padding() -> None:
    # torch.save pads local headers with an extra field so data is 64-byte aligned.
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for i in range(5):
            info = zipfile.ZipInfo(f"ckpt/data/{i}")
            info.extra = struct.pack("<HH", 0xCAFE, 11 + i) + b"\0" * (11 + i)
            zf.writestr(info, bytes([i]) * (100 + i))
    buf = out.getvalue()
    entries = check_against_zipfile(buf)
    assert [buf[e.data_offset : e.data_offset + e.size] for e in entries] == [
        bytes([i]) * (100 + i) for i in range(5)
    ]


def test_zip64_forced_on_an_entry() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("small", b"abc")
        with zf.open("forced", "w", force_zip64=True) as f:
            f.write(b"zip64 data " * 100)
        zf.writestr("after", b"xyz" * 3)
    buf = out.getvalue()
    entries = check_against_zipfile(buf)
    assert [e.name for e in entries] == ["small", "forced", "after"]
    # The local header of the forced entry carries a zip64 extra field.
    forced = entries[1]
    assert forced.data_offset - forced.header_offset > 30 + len("forced")


def test_zip64_end_record_from_zipfile() -> None:
    # More than 65535 entries: zipfile writes the zip64 end-of-central-directory record.
    n = 65_536 + 5
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for i in range(n):
            zf.writestr(zipfile.ZipInfo(str(i)), b"")
    buf = out.getvalue()
    assert b"PK\x06\x06" in buf[-200:]
    entries = entries_of(buf)
    assert len(entries) == n
    assert entries[-1].name == str(n - 1)
    with zipfile.ZipFile(io.BytesIO(buf)) as zf:
        infos = zf.infolist()
        assert [e.header_offset for e in entries[-10:]] == [i.header_offset for i in infos[-10:]]


def test_zip64_central_directory_fields() -> None:
    # Sizes and offsets given only in the central directory's zip64 extra field.
    raws = [Raw(b"first", b"1" * 10, zip64=True), Raw(b"second", b"22", zip64=True)]
    buf = build_zip(raws, zip64_eocd=True)
    entries = check_against_zipfile(buf)
    assert [(e.name, e.size) for e in entries] == [("first", 10), ("second", 2)]


def test_built_archives_are_valid_zips() -> None:
    # The test writer itself agrees with zipfile.
    check_against_zipfile(build_zip(SMALL))
    check_against_zipfile(build_zip(SMALL, comment=b"hi"))
    check_against_zipfile(build_zip(SMALL, zip64_eocd=True))


def test_empty_archive() -> None:
    buf = zipfile_bytes([])
    assert len(buf) == 22
    assert entries_of(buf) == []


def test_is_zip() -> None:
    assert _zip.is_zip(reader(zipfile_bytes([("a", b"x", 0)])), 200)
    assert _zip.is_zip(reader(zipfile_bytes([])), 22)
    assert not _zip.is_zip(reader(b"\x80\x02" + bytes(40)), 42)
    assert not _zip.is_zip(reader(b"PK\x03\x04"), 4)


# --- read_entry ---------------------------------------------------------------


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_read_entry_detects_a_flipped_byte(method: int) -> None:
    data = bytes(range(256)) * 4
    buf = zipfile_bytes([("x", data, method)])
    (entry,) = entries_of(buf)
    assert read_entry(reader(buf), entry, len(data)) == data
    # (A deflate stream's last byte may hold unused padding bits, so not there.)
    last = [entry.compressed_size - 1] if method == zipfile.ZIP_STORED else []
    for pos in [0, entry.compressed_size // 2, *last]:
        bad = bytearray(buf)
        bad[entry.data_offset + pos] ^= 0x10
        with pytest.raises(ZipError, match="'x'"):
            read_entry(reader(bytes(bad)), entry, len(data))


def test_read_entry_limit_and_unsupported() -> None:
    data = b"0123456789"
    buf = zipfile_bytes([("x", data, zipfile.ZIP_STORED)])
    (entry,) = entries_of(buf)
    with pytest.raises(ZipError, match="over the 9-byte limit"):
        read_entry(reader(buf), entry, 9)
    assert read_entry(reader(buf), entry, 10) == data
    bz = zipfile_bytes([("b", data * 10, zipfile.ZIP_BZIP2)])
    (bz_entry,) = entries_of(bz)
    assert bz_entry.method == zipfile.ZIP_BZIP2 and not bz_entry.stored
    with pytest.raises(ZipError, match="compression method 12"):
        read_entry(reader(bz), bz_entry, 1000)
    enc = build_zip([Raw(b"secret", b"xxxx", flags=1)])
    (enc_entry,) = entries_of(enc)
    assert enc_entry.encrypted and not enc_entry.stored
    with pytest.raises(ZipError, match="encrypted"):
        read_entry(reader(enc), enc_entry, 100)


def test_read_entry_deflate_bomb_is_bounded() -> None:
    # A deflated entry claiming a small size inflates no further than that size + 1.
    data = b"\0" * 1_000_000
    buf = bytearray(zipfile_bytes([("bomb", data, zipfile.ZIP_DEFLATED)]))
    (entry,) = entries_of(bytes(buf))
    small = ZipEntry(
        entry.name, entry.method, entry.flags, entry.crc, entry.compressed_size, 100,
        entry.header_offset, entry.data_offset,
    )  # fmt: skip
    with pytest.raises(ZipError, match="CRC or size"):
        read_entry(reader(bytes(buf)), small, 1000)


# --- malformed archives -------------------------------------------------------


def test_every_truncation_is_refused() -> None:
    files = [("m/data.pkl", b"p" * 30, 0), ("m/data/0", b"\x07" * 64, 0), ("c", b"z" * 50, 8)]
    for buf in [zipfile_bytes(files), zipfile_bytes(files, b"comment"), build_zip(SMALL)]:
        entries_of(buf)
        for cut in range(len(buf)):
            with pytest.raises(ZipError):
                entries_of(buf[:cut])


def test_too_small() -> None:
    refuse(b"", "too small")
    refuse(b"PK\x05\x06" + bytes(17), "too small")


def test_no_end_record() -> None:
    buf = build_zip(SMALL)
    pos = buf.rfind(b"PK\x05\x06")
    refuse(buf[:pos] + b"XX\x05\x06" + buf[pos + 4 :], "no end-of-central-directory record")
    refuse(bytes(100), "no end-of-central-directory record")
    # An end record whose comment length does not reach the end of the file.
    refuse(buf + b"trailing", "no end-of-central-directory record")


def test_comment_ending_in_a_signature_fragment() -> None:
    # A valid archive whose comment ends with the end-record signature: the real
    # record (earlier in the tail) must still be found.
    buf = build_zip(SMALL, comment=b"note: PK\x05\x06")
    entries = entries_of(buf)
    assert [e.name for e in entries] == ["a/data.pkl", "a/data/0", "b"]


def test_central_directory_outside_the_file() -> None:
    refuse(build_zip(SMALL, cd_offset=10**6), "central directory runs past")
    refuse(build_zip(SMALL, cd_size=10**6), "central directory runs past")
    refuse(build_zip(SMALL, cd_offset=0xFFFFFFF0), "central directory runs past")
    # Pointing at the wrong place inside the file.
    refuse(build_zip(SMALL, cd_offset=0), "central directory entry is malformed")


def test_entry_count_mismatch() -> None:
    refuse(build_zip(SMALL, n_total=4), "central directory entry is malformed")
    refuse(build_zip(SMALL, n_total=2), "bytes after its last entry")


def test_multi_disk_refused() -> None:
    refuse(build_zip(SMALL, disk=1), "multi-disk")


def test_local_header_problems() -> None:
    refuse(build_zip([Raw(b"name", b"data", local_name=b"nAme")]), "names a different entry")
    refuse(build_zip([Raw(b"name", b"data", local_name=b"name2")]), "names a different entry")
    refuse(build_zip([Raw(b"x", b"data", cd_offset=3)]), "no local header at offset 3")
    refuse(build_zip([Raw(b"x", b"data", cd_offset=10**6)]), "past the end of the file")


def test_stored_sizes_must_agree() -> None:
    buf = bytearray(build_zip([Raw(b"x", b"data")]))
    cd = buf.find(b"PK\x01\x02")
    struct.pack_into("<I", buf, cd + 20, 3)  # compressed size 3, plain size 4
    refuse(bytes(buf), "different compressed and plain sizes")


def test_entry_running_into_the_central_directory() -> None:
    refuse(build_zip([Raw(b"x", b"data", cd_size=5)]), "'x' runs into the central directory")


def test_overlapping_entries() -> None:
    raws = [Raw(b"first", b"1" * 10, cd_size=20), Raw(b"second", b"2" * 20)]
    refuse(build_zip(raws), "entries 'first' and 'second' overlap")
    # Also when the central directory lists them out of file order.
    buf = build_zip(raws)
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(buf)).read("first")


def test_two_entries_sharing_one_local_header() -> None:
    # The second central entry points at the first's local header: names differ.
    raws = [Raw(b"same", b"abc"), Raw(b"other", b"abc", cd_offset=0, local_name=b"other")]
    refuse(build_zip(raws), "names a different entry")


def test_duplicate_names() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        buf = zipfile_bytes([("dup", b"1", 0), ("other", b"2", 0), ("dup", b"3", 0)])
    refuse(buf, "entry 'dup' appears twice")
    refuse(build_zip([Raw(b"d", b"1"), Raw(b"d", b"2")]), "appears twice")


def test_zip64_problems() -> None:
    good = build_zip([Raw(b"x", b"abc", zip64=True)], zip64_eocd=True)
    entries_of(good)
    # Locator missing.
    loc = good.rfind(b"PK\x06\x07")
    refuse(good[:loc] + b"XX" + good[loc + 2 :], "locator is missing")
    # Record missing where the locator points.
    rec = good.rfind(b"PK\x06\x06")
    refuse(good[:rec] + b"XX" + good[rec + 2 :], "zip64 end-of-central-directory record is missing")
    # Locator pointing past itself.
    bad = bytearray(good)
    struct.pack_into("<Q", bad, loc + 8, len(good))
    refuse(bytes(bad), "out of place")
    # Needs a zip64 extra field but has none / has a short one.
    refuse(build_zip([Raw(b"x", b"abc", zip64=True, zip64_extra=b"")]), "has none")
    short = struct.pack("<HHQ", 1, 8, 3)
    refuse(build_zip([Raw(b"x", b"abc", zip64=True, zip64_extra=short)]), "too short")
    refuse(build_zip([Raw(b"x", b"abc", zip64_extra=b"\x01\x00\x10\x00abc")]), "runs past")


def test_absurd_entry_count_is_refused_without_allocating() -> None:
    buf = bytearray(build_zip(SMALL, zip64_eocd=True))
    rec = buf.rfind(b"PK\x06\x06")
    struct.pack_into("<QQ", buf, rec + 24, 2**62, 2**62)
    refuse(bytes(buf), "exceed the limit")
    struct.pack_into("<QQ", buf, rec + 24, 5, 6)
    refuse(bytes(buf), "multi-disk")


def test_non_utf8_name_flagged_utf8() -> None:
    # zipfile raises UnicodeDecodeError here too; the formats turn it into
    # MalformedFileError (see test_pytorch.test_bad_utf8_entry_name_is_malformed).
    with pytest.raises((ZipError, UnicodeDecodeError)):
        entries_of(build_zip([Raw(b"\xff\xfe", b"abc", flags=0x800)]))
    # Without the UTF-8 flag the name is cp437, which decodes any byte.
    (entry,) = entries_of(build_zip([Raw(b"\xff\xfe", b"abc")]))
    assert entry.name == b"\xff\xfe".decode("cp437")


def test_garbage_after_a_local_header_signature() -> None:
    # A file starting like a zip but holding garbage: refused, never an IndexError.
    refuse(b"PK\x03\x04" + bytes(200), "no end-of-central-directory record")


# --- fuzzing ------------------------------------------------------------------

SEEDS = [
    build_zip(SMALL, comment=b"c"),
    build_zip([Raw(b"x", b"abc", zip64=True), Raw(b"y", b"")], zip64_eocd=True),
    zipfile_bytes([("d.pkl", b"q" * 40, 8), ("d/0", b"\x01" * 16, 0)]),
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    buf = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        if not buf:
            break
        pos = draw(st.integers(0, len(buf) - 1))
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        if op == "flip":
            buf[pos] ^= draw(st.integers(1, 255))
        elif op == "set":
            buf[pos] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, 0x50, 0x4B]))
        elif op == "truncate":
            del buf[pos:]
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            del buf[pos : pos + draw(st.integers(1, 8))]
    return bytes(buf)


@given(buf=mutated())
@settings(max_examples=300, deadline=None)
def test_mutated_archives_parse_consistently_or_are_refused(buf: bytes) -> None:
    try:
        entries = entries_of(buf)
    except ZipError:
        return
    except UnicodeDecodeError:
        return  # an entry flagged UTF-8 whose name is not (callers catch this too)
    names = [e.name for e in entries]
    assert len(names) == len(set(names))
    spans = sorted((e.header_offset, e.data_offset + e.compressed_size) for e in entries)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start
    for e in entries:
        assert e.data_offset + e.compressed_size <= len(buf)
        with contextlib.suppress(ZipError):
            read_entry(reader(buf), e, 1 << 20)
