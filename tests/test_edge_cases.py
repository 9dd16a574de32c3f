"""Inputs at the edges: odd paths, hostile values, unusual targets. Each gets a one-line
error with a documented exit code, or works, and never leaves the repository changed."""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wvc import Repository
from wvc.errors import (
    CorruptIndexError,
    InputError,
    MalformedFileError,
    RefError,
    UnsupportedFormatVersionError,
)


def _one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wvc: error: "), proc.stderr
    return lines[0]


def _count_commits(repo: Repository) -> int:
    try:
        return len(repo.log())
    except Exception:
        return 0


def test_repository_path_with_url_characters_keeps_its_index_inside(tmp_path: Path) -> None:
    root = tmp_path / "a?b=1%41#x"
    root.mkdir()
    repo = Repository.init(root)
    repo.commit_tensors({"w": np.zeros(3, np.float32)}, message="m")
    repo.close()
    assert (root / ".wvc" / "wvc.db").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [root.name]
    assert Repository.open(root).log()[0].message == "m"


def test_garbage_index_is_a_one_line_error(tmp_path: Path, run_wvc) -> None:
    Repository.init(tmp_path).close()
    (tmp_path / ".wvc" / "wvc.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(CorruptIndexError):
        Repository.open(tmp_path)
    line = _one_line_error(run_wvc("log", cwd=tmp_path), 6)
    assert "wvc.db" in line


def test_missing_index_is_reported_not_recreated(tmp_path: Path) -> None:
    Repository.init(tmp_path).close()
    (tmp_path / ".wvc" / "wvc.db").unlink()
    with pytest.raises(CorruptIndexError, match="missing"):
        Repository.open(tmp_path)
    assert not (tmp_path / ".wvc" / "wvc.db").exists()


@pytest.mark.parametrize("version", [True, 1.0, "1", 2])
def test_format_version_must_be_the_integer_1(tmp_path: Path, version: object) -> None:
    Repository.init(tmp_path).close()
    (tmp_path / ".wvc" / "format").write_text(json.dumps({"format": "wvc", "version": version}))
    with pytest.raises(UnsupportedFormatVersionError):
        Repository.open(tmp_path)


# --- restore targets ----------------------------------------------------------------


def test_restore_target_mode_follows_umask_or_existing_dir(
    repo: Repository, tmp_path: Path
) -> None:
    repo.commit_tensors({"w": np.ones(4, np.float32)})
    old = os.umask(0o022)
    try:
        repo.restore("HEAD", tmp_path / "new")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o755
    existing = tmp_path / "existing"
    existing.mkdir()
    existing.chmod(0o751)
    repo.restore("HEAD", existing)
    assert stat.S_IMODE(existing.stat().st_mode) == 0o751
    assert (existing / "model.safetensors").is_file()


def test_restore_through_a_symlink_to_an_empty_dir(repo: Repository, tmp_path: Path) -> None:
    repo.commit_tensors({"w": np.ones(4, np.float32)})
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    repo.restore("HEAD", link)
    assert link.is_symlink()
    assert (real / "model.safetensors").is_file()


def test_restore_creates_missing_parents_and_removes_them_on_failure(
    repo: Repository, tmp_path: Path
) -> None:
    repo.commit_tensors({"w": np.ones(4, np.float32)})
    repo.restore("HEAD", tmp_path / "a" / "b" / "out")
    assert (tmp_path / "a" / "b" / "out" / "model.safetensors").is_file()
    # A corrupt object: the restore fails and the parents it made are gone too.
    for oid in repo.objects.iter_ids():
        p = repo.dir / "objects" / oid[:2] / oid[2:]
        p.chmod(0o644)
        raw = bytearray(p.read_bytes())
        raw[-1] ^= 1
        p.write_bytes(raw)
    with pytest.raises(Exception, match="corrupt"):
        repo.restore("HEAD", tmp_path / "c" / "d" / "out")
    assert not (tmp_path / "c").exists()


def test_restore_below_a_file_is_refused(repo: Repository, tmp_path: Path, run_wvc) -> None:
    repo.commit_tensors({"w": np.ones(4, np.float32)})
    (repo.root / "afile").write_text("x")
    line = _one_line_error(run_wvc("restore", "HEAD", "--to", "afile/out", cwd=repo.root), 5)
    assert "afile" in line


def test_operating_system_errors_are_one_line(repo: Repository, run_wvc) -> None:
    repo.commit_tensors({"w": np.ones(4, np.float32)})
    proc = run_wvc("restore", "HEAD", "--to", "/proc/wvc-cannot-write-here", cwd=repo.root)
    line = _one_line_error(proc, 8)
    assert "/proc" in line


# --- commit inputs ------------------------------------------------------------------


def test_non_utf8_message_and_file_name_are_refused(repo: Repository, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "ok.bin").write_bytes(b"x")
    env = {k: v for k, v in os.environ.items() if k != "WVC_DEBUG"}
    proc = subprocess.run(
        [sys.executable, "-m", "wvc", "commit", str(ck), "-m", b"bad \xff message"],
        cwd=repo.root,
        capture_output=True,
        text=True,
        env=env,
    )
    assert "UTF-8" in _one_line_error(proc, 5)
    os.close(os.open(os.fsencode(ck) + b"/name-\xff.bin", os.O_CREAT | os.O_WRONLY))
    with pytest.raises(InputError, match="UTF-8"):
        repo.commit(ck)
    assert _count_commits(repo) == 0


def test_broken_symlink_in_checkpoint_is_refused(repo: Repository, tmp_path: Path, run_wvc) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "ok.bin").write_bytes(b"x")
    (ck / "dangling.bin").symlink_to(tmp_path / "nowhere")
    line = _one_line_error(run_wvc("commit", ck, cwd=repo.root), 5)
    assert "dangling.bin" in line
    assert _count_commits(repo) == 0


def test_file_and_directory_of_the_same_stored_name(repo: Repository, tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a").write_bytes(b"file")
    (tmp_path / "y" / "a").mkdir(parents=True)
    (tmp_path / "y" / "a" / "b").write_bytes(b"nested")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "c").write_bytes(b"dir")
    with pytest.raises(InputError, match="both a file and a directory"):
        repo.commit([tmp_path / "x" / "a", tmp_path / "a"])


def test_meta_edge_values(repo: Repository, run_wvc) -> None:
    with pytest.raises(InputError, match="finite"):
        repo.commit_tensors({"w": np.ones(2, np.float32)}, meta={"loss": np.float32("nan")})
    with pytest.raises(InputError, match="strings"):
        repo.commit_tensors({"w": np.ones(2, np.float32)}, metadata={"a": 1})  # type: ignore[dict-item]
    ck = repo.root / "ck"
    ck.mkdir()
    (ck / "f.bin").write_bytes(b"x")
    digits = "9" * 5000
    run_wvc("commit", "ck", "--meta", f"n={digits}", "--meta", "v=1_000", cwd=repo.root, check=True)
    meta = repo.log()[0].meta
    assert meta == {"n": digits, "v": "1_000"}


def test_huge_revision_suffix_is_a_clean_error(repo: Repository, run_wvc) -> None:
    repo.commit_tensors({"w": np.ones(2, np.float32)})
    _one_line_error(run_wvc("log", "HEAD~" + "9" * 5000, cwd=repo.root), 4)
    _one_line_error(run_wvc("log", "HEAD~99", cwd=repo.root), 4)


def test_safetensors_with_enormous_dimensions_is_malformed(
    repo: Repository, tmp_path: Path
) -> None:
    header = json.dumps(
        {
            f"t{i}": {"dtype": "F32", "shape": [10**4000 if i else 2, 3], "data_offsets": [0, 24]}
            for i in range(2)
        }
    ).encode()
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "m.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 24)
    with pytest.raises(MalformedFileError, match=r"m\.safetensors"):
        repo.commit(ck)


@pytest.mark.parametrize("name", ["a.lock/b", "@", "x/y.lock", "a..b", "-x", "HEAD"])
def test_invalid_ref_names(repo: Repository, name: str) -> None:
    repo.commit_tensors({"w": np.ones(2, np.float32)})
    with pytest.raises(RefError):
        repo.branch(name)


def test_branch_delete_without_a_name_is_a_usage_error(repo: Repository, run_wvc) -> None:
    repo.commit_tensors({"w": np.ones(2, np.float32)})
    assert run_wvc("branch", "-d", cwd=repo.root).returncode == 2
    assert run_wvc("tag", "-d", cwd=repo.root).returncode == 2
