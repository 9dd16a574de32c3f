"""A strict reader of zip central directories, for formats that are zip archives.

PyTorch checkpoints and NumPy ``.npz`` files are zip archives whose entries
are mostly stored uncompressed, so an entry's bytes are one range of the
file. This module finds those ranges (zip64 included) and checks that the
archive is consistent: every local header agrees with its central-directory
entry, every entry lies inside the file and no two overlap. It never
decompresses anything except when asked for one small entry.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from dataclasses import dataclass

from ._base import ReadAt

STORED = 0
DEFLATED = 8
_EOCD = b"PK\x05\x06"
_EOCD64 = b"PK\x06\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_CENTRAL = b"PK\x01\x02"
_LOCAL = b"PK\x03\x04"
_MAX_COMMENT = 0xFFFF
MAX_ENTRIES = 1_000_000


class ZipError(ValueError):
    """The archive breaks the zip format; the message names the problem."""


@dataclass(frozen=True)
class ZipEntry:
    name: str
    method: int
    flags: int
    crc: int
    compressed_size: int
    size: int
    header_offset: int
    data_offset: int

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & 1)

    @property
    def stored(self) -> bool:
        """Uncompressed and unencrypted: the bytes at ``data_offset`` are the entry."""
        return self.method == STORED and not self.encrypted


def is_zip(read_at: ReadAt, size: int) -> bool:
    return size >= 22 and read_at(0, 4) in (_LOCAL, _EOCD)


def read_entries(read_at: ReadAt, size: int) -> list[ZipEntry]:
    """Every entry of the archive in central-directory order; raises ZipError."""
    if size < 22:
        raise ZipError("too small to be a zip archive")
    tail_len = min(size, 22 + _MAX_COMMENT)
    tail = read_at(size - tail_len, tail_len)
    # The last signature whose comment length reaches exactly to the end of the
    # file (a comment may itself contain the signature bytes).
    pos = tail.rfind(_EOCD)
    while pos >= 0:
        if pos + 22 <= len(tail):
            comment_len = struct.unpack_from("<H", tail, pos + 20)[0]
            if pos + 22 + comment_len == len(tail):
                break
        pos = tail.rfind(_EOCD, 0, pos)
    if pos < 0:
        raise ZipError("no end-of-central-directory record")
    eocd_at = size - tail_len + pos
    (_, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, _) = struct.unpack_from(
        "<4sHHHHIIH", tail, pos
    )
    if disk != 0 or cd_disk != 0 or n_disk != n_total:
        raise ZipError("multi-disk archives are not supported")
    if 0xFFFF in (n_total,) or 0xFFFFFFFF in (cd_size, cd_offset):
        n_total, cd_size, cd_offset = _zip64_eocd(read_at, eocd_at)
    if n_total > MAX_ENTRIES:
        raise ZipError(f"{n_total} entries exceed the limit of {MAX_ENTRIES}")
    if cd_offset + cd_size > eocd_at:
        raise ZipError("central directory runs past the end-of-central-directory record")
    cd = read_at(cd_offset, cd_size)
    if len(cd) != cd_size:
        raise ZipError("file is shorter than its central directory")
    entries = []
    p = 0
    names: set[str] = set()
    for _ in range(n_total):
        if cd[p : p + 4] != _CENTRAL or p + 46 > len(cd):
            raise ZipError("central directory entry is malformed")
        (flags, method, crc, csize, usize, n_len, e_len, c_len, hdr_off) = _central_fields(cd, p)
        name_raw = bytes(cd[p + 46 : p + 46 + n_len])
        extra = bytes(cd[p + 46 + n_len : p + 46 + n_len + e_len])
        p += 46 + n_len + e_len + c_len
        if p > len(cd):
            raise ZipError("central directory entry runs past the directory")
        usize, csize, hdr_off = _zip64_extra(extra, usize, csize, hdr_off)
        try:
            name = name_raw.decode("utf-8" if flags & 0x800 else "cp437", errors="strict")
        except UnicodeDecodeError:
            raise ZipError(f"entry name {name_raw[:60]!r} is not valid UTF-8") from None
        if name in names:
            raise ZipError(f"entry {name!r} appears twice")
        names.add(name)
        data_offset = _local_header(read_at, size, hdr_off, name_raw)
        if method == STORED and not flags & 1 and csize != usize:
            raise ZipError(f"stored entry {name!r} has different compressed and plain sizes")
        if data_offset + csize > cd_offset:
            raise ZipError(f"entry {name!r} runs into the central directory")
        entries.append(ZipEntry(name, method, flags, crc, csize, usize, hdr_off, data_offset))
    if p != len(cd):
        raise ZipError("central directory has bytes after its last entry")
    ordered = sorted(entries, key=lambda e: e.header_offset)
    for a, b in itertools.pairwise(ordered):
        if a.data_offset + a.compressed_size > b.header_offset:
            raise ZipError(f"entries {a.name!r} and {b.name!r} overlap")
    return entries


def _central_fields(cd: bytes, p: int) -> tuple[int, ...]:
    (flags, method, _t, _d, crc, csize, usize, n_len, e_len, c_len) = struct.unpack_from(
        "<HHHHIIIHHH", cd, p + 8
    )
    hdr_off: int = struct.unpack_from("<I", cd, p + 42)[0]
    return flags, method, crc, csize, usize, n_len, e_len, c_len, hdr_off


def _zip64_eocd(read_at: ReadAt, eocd_at: int) -> tuple[int, int, int]:
    if eocd_at < 20:
        raise ZipError("zip64 end-of-central-directory locator is missing")
    loc = read_at(eocd_at - 20, 20)
    if loc[:4] != _EOCD64_LOCATOR:
        raise ZipError("zip64 end-of-central-directory locator is missing")
    (eocd64_at,) = struct.unpack_from("<Q", loc, 8)
    if eocd64_at + 56 > eocd_at - 20:
        raise ZipError("zip64 end-of-central-directory record is out of place")
    rec = read_at(eocd64_at, 56)
    if rec[:4] != _EOCD64:
        raise ZipError("zip64 end-of-central-directory record is missing")
    n_disk, n_total, cd_size, cd_offset = struct.unpack_from("<QQQQ", rec, 24)
    if n_disk != n_total:
        raise ZipError("multi-disk archives are not supported")
    return n_total, cd_size, cd_offset


def _zip64_extra(extra: bytes, usize: int, csize: int, hdr_off: int) -> tuple[int, int, int]:
    """Apply the zip64 extended-information field to sizes and offset marked 0xFFFFFFFF."""
    p = 0
    while p + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, p)
        body = extra[p + 4 : p + 4 + length]
        if len(body) != length:
            raise ZipError("extra field runs past its entry")
        if tag == 0x0001:
            q = 0
            values = []
            for current in (usize, csize, hdr_off):
                if current == 0xFFFFFFFF:
                    if q + 8 > len(body):
                        raise ZipError("zip64 extra field is too short")
                    values.append(struct.unpack_from("<Q", body, q)[0])
                    q += 8
                else:
                    values.append(current)
            return values[0], values[1], values[2]
        p += 4 + length
    if 0xFFFFFFFF in (usize, csize, hdr_off):
        raise ZipError("entry needs a zip64 extra field but has none")
    return usize, csize, hdr_off


def _local_header(read_at: ReadAt, size: int, offset: int, name: bytes) -> int:
    if offset + 30 > size:
        raise ZipError("local header is past the end of the file")
    head = read_at(offset, 30)
    if head[:4] != _LOCAL:
        raise ZipError(f"no local header at offset {offset}")
    n_len, e_len = struct.unpack_from("<HH", head, 26)
    local_name = read_at(offset + 30, n_len)
    if bytes(local_name) != name:
        raise ZipError(f"local header at {offset} names a different entry")
    data_offset: int = offset + 30 + n_len + e_len
    return data_offset


def read_entry(read_at: ReadAt, entry: ZipEntry, limit: int) -> bytes:
    """An entry's plain bytes (stored or deflated), CRC-checked, at most ``limit`` bytes."""
    if entry.encrypted:
        raise ZipError(f"entry {entry.name!r} is encrypted")
    if entry.size > limit:
        raise ZipError(f"entry {entry.name!r} is {entry.size} bytes, over the {limit}-byte limit")
    raw = bytes(read_at(entry.data_offset, entry.compressed_size))
    if entry.method == STORED:
        data = raw
    elif entry.method == DEFLATED:
        d = zlib.decompressobj(-15)
        try:
            data = d.decompress(raw, entry.size + 1)
        except zlib.error as e:
            raise ZipError(f"entry {entry.name!r} does not inflate: {e}") from None
    else:
        raise ZipError(f"entry {entry.name!r} uses compression method {entry.method}")
    if len(data) != entry.size or zlib.crc32(data) != entry.crc:
        raise ZipError(f"entry {entry.name!r} fails its CRC or size check")
    return data
