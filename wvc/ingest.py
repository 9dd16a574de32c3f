"""Cutting files into chunks and storing them, in parallel, with bounded memory.

Tensor segments are cut into ``chunk_size`` pieces aligned to the tensor's own
start, so an unchanged tensor produces the same chunks wherever it sits.
Each chunk is read, hashed, checked against the store, and only when new is
encoded and written, on a thread pool (blake3, zstd and numpy release the GIL).
At most ``window`` chunks are in flight, so memory stays bounded whatever the
file size.
"""

from __future__ import annotations

import abc
import bisect
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from .codecs import codec_for
from .dtypes import DType
from .errors import InputError
from .formats import FileLayout
from .manifest import FileManifest, Segment
from .objects import ObjectKind, ObjectStore, PutResult

DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024
Progress = Callable[[int], None]


class Source(abc.ABC):
    """Random access to the bytes of one file being committed."""

    def __init__(self, label: str, size: int) -> None:
        self.label = label
        self.size = size

    @abc.abstractmethod
    def read_at(self, offset: int, length: int) -> bytes | memoryview:
        """Exactly ``length`` bytes from ``offset`` (ranges are always in bounds)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the underlying file, if any; a later read opens it again."""

    def check_unchanged(self) -> None:  # noqa: B027 - optional hook
        """Raise InputError if the file changed since it was first opened."""


class FileSource(Source):
    """A file on disk, read with ``pread`` (thread-safe, no shared offset).

    The descriptor is opened on demand and closed by :meth:`close`, so a
    commit of thousands of files holds only the files in flight open.
    """

    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = os.open(path, os.O_RDONLY)
        st = os.fstat(self._fd)
        self._stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
        super().__init__(path, st.st_size)

    def _open(self) -> int:
        with self._lock:
            if self._fd is None:
                try:
                    self._fd = os.open(self.label, os.O_RDONLY)
                except FileNotFoundError:
                    raise InputError(
                        f"{self.label}: file vanished while it was being committed", self.label
                    ) from None
            return self._fd

    def read_at(self, offset: int, length: int) -> bytes:
        data = os.pread(self._open(), length, offset)
        if len(data) != length and offset + length <= self.size:
            raise InputError(f"{self.label}: file shrank while it was being committed", self.label)
        return data

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def check_unchanged(self) -> None:
        try:
            st = os.stat(self.label)
        except FileNotFoundError:
            raise InputError(f"{self.label}: file vanished while it was being committed") from None
        if (st.st_size, st.st_mtime_ns, st.st_ino) != self._stamp:
            raise InputError(
                f"{self.label}: file changed while it was being committed; commit again "
                "once the writer has finished",
                self.label,
            )


class BufferSource(Source):
    """Bytes already in memory, given as pieces that concatenate to the file."""

    def __init__(self, label: str, pieces: list[memoryview]) -> None:
        super().__init__(label, sum(p.nbytes for p in pieces))
        self._pieces = pieces
        self._starts: list[int] = []
        pos = 0
        for p in pieces:
            self._starts.append(pos)
            pos += p.nbytes

    def read_at(self, offset: int, length: int) -> bytes | memoryview:
        # Chunks never straddle segments and segments map 1:1 to pieces, so one
        # piece always holds the whole range.
        i = bisect.bisect_right(self._starts, offset) - 1
        start = offset - self._starts[i]
        return self._pieces[i][start : start + length]


def default_workers() -> int:
    """Threads for hashing, compressing and decoding chunks: one per core, at most 8."""
    return min(8, os.cpu_count() or 2)


@dataclass(frozen=True)
class IngestResult:
    manifests: list[FileManifest]
    puts: list[PutResult]


def _chunk_ranges(layout: FileLayout, chunk_size: int) -> Iterator[tuple[int, int, int]]:
    """(segment index, offset, length) for every chunk of the file."""
    for i, seg in enumerate(layout.segments):
        for start in range(0, seg.size, chunk_size):
            yield i, seg.offset + start, min(chunk_size, seg.size - start)


def ingest(
    objects: ObjectStore,
    files: Iterable[tuple[Source, FileLayout]],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    workers: int | None = None,
    progress: Progress | None = None,
    bases: Sequence[Sequence[Sequence[str | None]]] | None = None,
) -> IngestResult:
    """Store every chunk of every file and return one manifest per file, in order.

    Chunks of all files form one stream through the pool, so many small files
    keep every worker busy just as one large file does. ``bases[f][s][i]``, if
    given, is the object chunk ``i`` of segment ``s`` of file ``f`` may be
    stored as a delta against (its version in the parent commit).
    """
    workers = workers or default_workers()
    window = 2 * workers + 2
    layouts = list(files)
    seg_chunks: list[list[list[str]]] = [[[] for _ in lay.segments] for _, lay in layouts]
    puts: list[PutResult] = []
    pending: deque[tuple[int, int, int, Future[PutResult]]] = deque()
    remaining = [sum(1 for _ in _chunk_ranges(lay, chunk_size)) for _, lay in layouts]

    def finish(file_index: int) -> None:
        source = layouts[file_index][0]
        source.close()
        source.check_unchanged()

    def store_chunk(
        source: Source, offset: int, length: int, dtype: DType | None, base: str | None
    ) -> PutResult:
        data = source.read_at(offset, length)
        codec, param = codec_for(dtype)
        return objects.put(data, ObjectKind.CHUNK, codec, param, base)

    def drain(limit: int) -> None:
        while len(pending) > limit:
            file_index, seg_index, length, fut = pending.popleft()
            res = fut.result()
            seg_chunks[file_index][seg_index].append(res.id)
            puts.append(res)
            remaining[file_index] -= 1
            if remaining[file_index] == 0:
                finish(file_index)
            if progress:
                progress(length)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wvc-ingest") as pool:
        try:
            for file_index, (source, layout) in enumerate(layouts):
                if remaining[file_index] == 0:
                    finish(file_index)
                for seg_index, offset, length in _chunk_ranges(layout, chunk_size):
                    seg = layout.segments[seg_index]
                    base = None
                    if bases is not None and seg.dtype is not None:
                        base = bases[file_index][seg_index][(offset - seg.offset) // chunk_size]
                    fut = pool.submit(store_chunk, source, offset, length, seg.dtype, base)
                    pending.append((file_index, seg_index, length, fut))
                    drain(window)
            drain(0)
        except BaseException:
            for *_, fut in pending:
                fut.cancel()
            raise
    manifests = []
    for (_, layout), chunks in zip(layouts, seg_chunks, strict=True):
        segments = tuple(
            Segment(spec.kind, spec.size, tuple(ids), spec.tensor, spec.storage)
            for spec, ids in zip(layout.segments, chunks, strict=True)
        )
        manifests.append(
            FileManifest(layout.format, layout.size, chunk_size, segments, layout.views)
        )
    return IngestResult(manifests, puts)
