"""wvc.store: one conformance suite, run against every Store implementation."""

from __future__ import annotations

import os
import stat
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import S3Endpoint

from wvc.errors import StoreConflictError
from wvc.store import FsspecStore, LocalStore, MemoryStore, S3Store, Store


class StoreTests:
    """Behaviour every :class:`Store` must have. Subclasses provide ``make_store``."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Store:
        return self.make_store(tmp_path)

    def make_store(self, tmp_path: Path) -> Store:
        raise NotImplementedError

    def test_is_a_store(self, store: Store) -> None:
        assert isinstance(store, Store)
        assert store.supports_writes is True

    def test_put_get(self, store: Store) -> None:
        store.put("ab/cdef", b"hello")
        assert store.get("ab/cdef") == b"hello"
        assert store.exists("ab/cdef")
        assert store.size("ab/cdef") == 5

    def test_get_returns_bytes(self, store: Store) -> None:
        store.put("k", bytearray(b"xyz"))
        store.put("m", memoryview(b"0123456789")[2:5])
        assert store.get("k") == b"xyz"
        assert type(store.get("k")) is bytes
        assert store.get("m") == b"234"
        assert store.size("m") == 3

    def test_value_is_copied_on_put(self, store: Store) -> None:
        buf = bytearray(b"before")
        store.put("copy", buf)
        buf[:] = b"AFTER!"
        assert store.get("copy") == b"before"

    def test_empty_value(self, store: Store) -> None:
        store.put("empty", b"")
        assert store.exists("empty")
        assert store.get("empty") == b""
        assert store.size("empty") == 0
        assert store.get_prefix("empty", 10) == b""

    def test_large_value(self, store: Store) -> None:
        data = os.urandom(3 * 1024 * 1024 + 7)
        store.put("big/value", data)
        assert store.get("big/value") == data
        assert store.size("big/value") == len(data)
        assert store.get_prefix("big/value", 48) == data[:48]

    def test_get_prefix(self, store: Store) -> None:
        store.put("p/q", b"0123456789")
        assert store.get_prefix("p/q", 0) == b""
        assert store.get_prefix("p/q", 4) == b"0123"
        assert store.get_prefix("p/q", 10) == b"0123456789"
        assert store.get_prefix("p/q", 1000) == b"0123456789"

    def test_missing_key(self, store: Store) -> None:
        assert not store.exists("no/such")
        with pytest.raises(KeyError):
            store.get("no/such")
        with pytest.raises(KeyError):
            store.get_prefix("no/such", 8)
        with pytest.raises(KeyError):
            store.size("no/such")

    def test_put_existing_key_is_a_noop(self, store: Store) -> None:
        store.put("same/key", b"first")
        store.put("same/key", b"first")
        assert store.get("same/key") == b"first"
        # Content addressing means a second value never legitimately differs; the store
        # keeps what it has rather than rewriting it.
        store.put("same/key", b"second value")
        assert store.get("same/key") == b"first"
        assert store.size("same/key") == 5
        assert list(store.list_prefix("same/")) == ["same/key"]

    def test_delete(self, store: Store) -> None:
        store.put("d/one", b"1")
        store.put("d/two", b"2")
        store.delete("d/one")
        assert not store.exists("d/one")
        with pytest.raises(KeyError):
            store.get("d/one")
        assert store.get("d/two") == b"2"
        assert sorted(store.list_prefix("")) == ["d/two"]
        store.delete("d/one")  # deleting an absent key is fine
        store.delete("never/there")
        # A deleted key can be written again.
        store.put("d/one", b"again")
        assert store.get("d/one") == b"again"

    def test_list_prefix(self, store: Store) -> None:
        assert list(store.list_prefix("")) == []
        keys = ["ab/cd", "ab/ce", "ac/00", "b/x/y", "top"]
        for k in keys:
            store.put(k, k.encode())
        assert sorted(store.list_prefix("")) == keys
        assert sorted(store.list_prefix("ab/")) == ["ab/cd", "ab/ce"]
        assert sorted(store.list_prefix("a")) == ["ab/cd", "ab/ce", "ac/00"]
        assert sorted(store.list_prefix("ab/c")) == ["ab/cd", "ab/ce"]
        assert sorted(store.list_prefix("ab/cd")) == ["ab/cd"]
        assert sorted(store.list_prefix("b/x/")) == ["b/x/y"]
        assert list(store.list_prefix("zz")) == []

    def test_prefix_of_keys_is_not_a_key(self, store: Store) -> None:
        # "ab" only exists as the start of other keys; it holds no value.
        store.put("ab/cdef", b"v")
        assert not store.exists("ab")
        with pytest.raises(KeyError):
            store.get("ab")
        with pytest.raises(KeyError):
            store.size("ab")

    def test_keys_are_independent(self, store: Store) -> None:
        values = {f"{i:02x}/{'k' * (i + 1)}": bytes([i]) * i for i in range(40)}
        for k, v in values.items():
            store.put(k, v)
        for k, v in values.items():
            assert store.get(k) == v
            assert store.size(k) == len(v)
        assert sorted(store.list_prefix("")) == sorted(values)

    def test_concurrent_puts(self, store: Store) -> None:
        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                for i in range(30):
                    # Every thread writes the shared keys too: same key, same value.
                    store.put(f"shared/{i:03d}", f"value {i}".encode())
                    store.put(f"t{t}/{i:03d}", f"{t}:{i}".encode())
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == []
        assert len(list(store.list_prefix("shared/"))) == 30
        for i in range(30):
            assert store.get(f"shared/{i:03d}") == f"value {i}".encode()
            for t in range(6):
                assert store.get(f"t{t}/{i:03d}") == f"{t}:{i}".encode()
        store.flush()

    def test_flush(self, store: Store) -> None:
        store.flush()  # nothing written yet
        store.put("f/1", b"1")
        store.flush()
        store.flush()
        assert store.get("f/1") == b"1"

    # --- swap: the one compare-and-swap write (refs) -----------------------------------

    @staticmethod
    def _assert_found(store: Store, err: StoreConflictError, current: bytes | None) -> None:
        if isinstance(store, S3Store):
            # A conditional write that loses a race cannot tell what won: found may be None.
            assert err.found in (current, None)
        else:
            assert err.found == current

    def test_swap_creates_absent_key(self, store: Store) -> None:
        store.swap("refs/heads/main", None, b"one\n")
        assert store.get("refs/heads/main") == b"one\n"
        assert store.exists("refs/heads/main")
        assert store.size("refs/heads/main") == 4
        assert store.get_prefix("refs/heads/main", 3) == b"one"

    def test_swap_create_conflict_reports_current_value(self, store: Store) -> None:
        store.swap("refs/heads/main", None, b"one\n")
        with pytest.raises(StoreConflictError) as info:
            store.swap("refs/heads/main", None, b"two\n")
        assert info.value.key == "refs/heads/main"
        self._assert_found(store, info.value, b"one\n")
        assert store.get("refs/heads/main") == b"one\n"

    def test_swap_from_the_right_old_value(self, store: Store) -> None:
        store.swap("refs/heads/main", None, b"one\n")
        store.swap("refs/heads/main", b"one\n", b"two\n")
        assert store.get("refs/heads/main") == b"two\n"
        store.swap("refs/heads/main", b"two\n", b"a longer third value\n")
        assert store.get("refs/heads/main") == b"a longer third value\n"
        store.swap("refs/heads/main", b"a longer third value\n", b"4\n")
        assert store.get("refs/heads/main") == b"4\n"  # shorter: no stale tail
        assert store.size("refs/heads/main") == 2

    def test_swap_from_a_wrong_old_value_changes_nothing(self, store: Store) -> None:
        store.swap("refs/heads/main", None, b"one\n")
        with pytest.raises(StoreConflictError) as info:
            store.swap("refs/heads/main", b"stale\n", b"two\n")
        self._assert_found(store, info.value, b"one\n")
        assert store.get("refs/heads/main") == b"one\n"
        # Expecting a value where there is none is a conflict too, and creates nothing.
        with pytest.raises(StoreConflictError) as info:
            store.swap("refs/heads/other", b"one\n", b"two\n")
        self._assert_found(store, info.value, None)
        assert not store.exists("refs/heads/other")
        with pytest.raises(KeyError):
            store.get("refs/heads/other")

    def test_swapped_keys_are_listed_and_no_lock_is_left(self, store: Store) -> None:
        store.put("objects/ab/cdef", b"object")
        store.swap("HEAD", None, b"ref: refs/heads/main\n")
        store.swap("refs/heads/main", None, b"1\n")
        store.swap("refs/heads/main", b"1\n", b"2\n")
        store.swap("refs/heads/dev/x", None, b"3\n")
        store.swap("refs/tags/v1", None, b"4\n")
        with pytest.raises(StoreConflictError):
            store.swap("refs/tags/v1", None, b"5\n")
        with pytest.raises(StoreConflictError):
            store.swap("refs/heads/main", b"1\n", b"6\n")
        store.flush()
        refs = ["refs/heads/dev/x", "refs/heads/main", "refs/tags/v1"]
        assert sorted(store.list_prefix("refs/")) == refs
        assert sorted(store.list_prefix("refs/heads/m")) == ["refs/heads/main"]
        assert sorted(store.list_prefix("")) == sorted(["HEAD", "objects/ab/cdef", *refs])
        assert [store.get(k) for k in refs] == [b"3\n", b"2\n", b"4\n"]
        assert store.get("HEAD") == b"ref: refs/heads/main\n"

    def test_concurrent_swaps_lose_no_update(self, store: Store) -> None:
        # Each thread increments a counter by read, swap, retry-on-conflict: every
        # increment must land exactly once.
        store.swap("refs/counter", None, b"0")
        threads_n, each = 4, 8
        errors: list[BaseException] = []
        conflicts = [0]

        def work() -> None:
            try:
                for _ in range(each):
                    while True:
                        old = store.get("refs/counter")
                        try:
                            store.swap("refs/counter", old, str(int(old) + 1).encode())
                            break
                        except StoreConflictError:
                            conflicts[0] += 1
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work) for _ in range(threads_n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == []
        assert store.get("refs/counter") == str(threads_n * each).encode()
        assert sorted(store.list_prefix("refs/")) == ["refs/counter"]


class TestMemoryStore(StoreTests):
    def make_store(self, tmp_path: Path) -> Store:
        return MemoryStore()


class TestLocalStore(StoreTests):
    def make_store(self, tmp_path: Path) -> Store:
        (tmp_path / "tmp").mkdir(exist_ok=True)
        return LocalStore(tmp_path / "objects", tmp_dir=tmp_path / "tmp")

    @staticmethod
    def _local(store: Store) -> LocalStore:
        assert isinstance(store, LocalStore)
        return store

    def test_values_are_files_under_root(self, store: Store) -> None:
        local = self._local(store)
        store.put("ab/cdef", b"on disk")
        path = local.root / "ab" / "cdef"
        assert path.is_file()
        assert path.read_bytes() == b"on disk"

    def test_files_are_read_only(self, store: Store) -> None:
        local = self._local(store)
        store.put("ab/cdef", b"x" * 100)
        store.put("top", b"y")
        for p in (local.root / "ab" / "cdef", local.root / "top"):
            mode = stat.S_IMODE(p.stat().st_mode)
            assert mode & 0o222 == 0, oct(mode)
            assert mode & 0o444 == 0o444, oct(mode)

    def test_no_temp_files_left_behind(self, store: Store) -> None:
        local = self._local(store)
        for i in range(25):
            store.put(f"{i % 5:02x}/{i:04d}", os.urandom(1000 + i))
        store.put("00/0000", b"ignored: exists")
        store.flush()
        assert list(local.tmp_dir.iterdir()) == []
        on_disk = sorted(
            str(p.relative_to(local.root)).replace(os.sep, "/")
            for p in local.root.rglob("*")
            if p.is_file()
        )
        assert on_disk == sorted(f"{i % 5:02x}/{i:04d}" for i in range(25))

    def test_failed_put_leaves_no_temp_file(self, store: Store) -> None:
        local = self._local(store)
        with pytest.raises(TypeError):
            store.put("ab/bad", 12345)  # type: ignore[arg-type]
        assert list(local.tmp_dir.iterdir()) == []
        assert not store.exists("ab/bad")

    @pytest.mark.parametrize(
        "key",
        ["/etc/passwd", "/abs", "..", "../outside", "a/../../outside", "a/..", "ab/../cd"],
    )
    def test_invalid_keys_are_rejected(self, store: Store, tmp_path: Path, key: str) -> None:
        with pytest.raises(ValueError, match="invalid store key"):
            store.put(key, b"escape")
        for op in (store.get, store.exists, store.size, store.delete):
            with pytest.raises(ValueError, match="invalid store key"):
                op(key)
        with pytest.raises(ValueError, match="invalid store key"):
            store.get_prefix(key, 4)
        assert not (tmp_path / "outside").exists()
        assert not (tmp_path / "escape").exists()

    def test_root_created_on_first_put(self, tmp_path: Path) -> None:
        (tmp_path / "t").mkdir()
        store = LocalStore(tmp_path / "deep" / "root", tmp_dir=tmp_path / "t")
        assert list(store.list_prefix("")) == []
        assert not store.exists("ab/cd")
        store.put("ab/cd", b"1")
        assert (tmp_path / "deep" / "root" / "ab" / "cd").read_bytes() == b"1"

    def test_delete_read_only_file(self, store: Store) -> None:
        local = self._local(store)
        store.put("ro/file", b"data")
        store.delete("ro/file")
        assert not (local.root / "ro" / "file").exists()

    def test_reopen_sees_values(self, store: Store, tmp_path: Path) -> None:
        store.put("persist/key", b"still here")
        store.flush()
        again = LocalStore(tmp_path / "objects", tmp_dir=tmp_path / "tmp")
        assert again.get("persist/key") == b"still here"
        assert list(again.list_prefix("persist/")) == ["persist/key"]


class TestFsspecLocalStore(StoreTests):
    """FsspecStore on a filesystem without atomic uploads (fsspec's local one): values go
    through ``tmp/`` and a move, refs through the lease lock: the path ssh:// remotes take.
    ``auto_mkdir=True`` because the store does not make parent directories itself (below)."""

    def make_store(self, tmp_path: Path) -> Store:
        import fsspec

        return FsspecStore(fsspec.filesystem("file", auto_mkdir=True), str(tmp_path / "root"))

    def test_takes_the_non_atomic_path(self, store: Store) -> None:
        assert isinstance(store, FsspecStore) and not store.atomic_upload
        assert "lease" in store.swap_guarantee

    @staticmethod
    def _plain(tmp_path: Path) -> FsspecStore:
        # Like SFTPFileSystem, fsspec's local filesystem by default does not create the
        # parent directories of a file it writes.
        import fsspec

        return FsspecStore(fsspec.filesystem("file"), str(tmp_path / "plain"))

    # A filesystem that does not make parents (sftp, local): tmp/ is created first.
    def test_put_creates_parent_directories(self, tmp_path: Path) -> None:
        store = self._plain(tmp_path)
        store.put("objects/ab/cdef", b"v")
        assert store.get("objects/ab/cdef") == b"v"

    # The lock and the ref go into refs/heads/, created on such filesystems too.
    def test_swap_creates_parent_directories(self, tmp_path: Path) -> None:
        store = self._plain(tmp_path)
        store.swap("refs/heads/main", None, b"1\n")
        assert store.get("refs/heads/main") == b"1\n"


class TestFsspecMemoryStore(StoreTests):
    """FsspecStore on fsspec's in-memory filesystem (a process-wide dict: a fresh root each)."""

    def make_store(self, tmp_path: Path) -> Store:
        import fsspec

        return FsspecStore(fsspec.filesystem("memory"), f"/wvc-store-tests/{uuid.uuid4().hex}")


class TestS3Store(StoreTests):
    """S3Store through s3fs against moto's S3 server: a fresh bucket per test."""

    @pytest.fixture
    def store(self, s3_endpoint: S3Endpoint) -> Iterator[Store]:
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint.url, skip_instance_cache=True)
        yield S3Store(fs, f"{s3_endpoint.new_bucket()}/root")
