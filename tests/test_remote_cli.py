"""The remote commands through the real ``wvc`` process: output, JSON, exit codes.

tests/test_remote.py covers the transfers through the API over dir, memory:// and S3;
here each test sets up with the API (fast, in process) and then runs the command
under test as a subprocess. memory:// remotes do not outlive a process, so these
use a directory remote and moto's S3 server (the dummy AWS_* credentials the
``s3_endpoint`` fixture puts in os.environ reach the subprocesses).
"""

from __future__ import annotations

import json
import os
import pty
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import RunWvc, S3Endpoint, assert_same_tree, clean_env, tree_files, write_checkpoint

from wvc.repository import Repository

SIZE = r"\d+(\.\d)? (B|KiB|MiB)"


# --- helpers ---------------------------------------------------------------------------


def ok(run_wvc: RunWvc, cwd: Path, *args: object) -> subprocess.CompletedProcess[str]:
    proc = run_wvc(*args, cwd=cwd)
    assert proc.returncode == 0, (args, proc.returncode, proc.stdout, proc.stderr)
    return proc


def fails(run_wvc: RunWvc, cwd: Path, code: int, *args: object, match: str) -> str:
    """Run a command that must fail with ``code`` and one ``wvc: error:`` line; its message."""
    proc = run_wvc(*args, cwd=cwd)
    assert proc.returncode == code, (args, proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr  # one line, no traceback
    assert lines[0].startswith("wvc: error: "), proc.stderr
    assert re.search(match, lines[0]), (match, lines[0])
    return lines[0]


def _model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {f"layers.{i}.w": rng.standard_normal((64, 64)).astype(np.float32) for i in range(4)}


def _history(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, Path, list[str]]:
    """Repository ``tmp_path/a`` with two commits of ``tmp_path/ck`` (left at the second);
    returns (repo dir, checkpoint dir, [first id, second id])."""
    ck = tmp_path / "ck"
    tensors = _model(rng)
    write_checkpoint(ck, {"model.safetensors": tensors, "config.json": '{"d": 64}'})
    with Repository.init(tmp_path / "a") as repo:
        one = repo.commit(ck, "one").id
        tensors["layers.1.w"] = tensors["layers.1.w"] + 1
        write_checkpoint(ck, {"model.safetensors": tensors})
        two = repo.commit(ck, "two").id
    return tmp_path / "a", ck, [one, two]


def _pushed(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, Path, Path, list[str]]:
    """``_history`` pushed to the directory remote ``tmp_path/remote`` (as origin)."""
    a, ck, ids = _history(tmp_path, rng)
    remote = tmp_path / "remote"
    with Repository.open(a) as repo:
        repo.add_remote("origin", str(remote))
        repo.push("origin")
    return a, ck, remote, ids


def _commit_more(repo_dir: Path, ck: Path, rng: np.random.Generator, push: bool) -> str:
    write_checkpoint(ck, {"model.safetensors": _model(rng)})
    with Repository.open(repo_dir) as repo:
        cid = repo.commit(ck, "more").id
        if push:
            repo.push("origin")
    return cid


def _remote_ref(remote: Path, branch: str = "main") -> str:
    return (remote / "refs" / "heads" / branch).read_text().strip()


def _stderr_on_a_terminal(*args: str, cwd: Path) -> str:
    """Run wvc with stderr on a pseudo-terminal (progress bars draw only there)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wvc", *args],
        cwd=cwd,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    proc.communicate(timeout=120)
    assert proc.returncode == 0, (args, b"".join(chunks))
    return b"".join(chunks).decode()


# --- help ------------------------------------------------------------------------------


def test_help_lists_the_remote_commands(run_wvc: RunWvc, tmp_path: Path) -> None:
    out = ok(run_wvc, tmp_path, "--help").stdout
    for command in ("push", "fetch", "pull", "clone", "remote"):
        assert re.search(rf"^  {command}\s+\S", out, re.MULTILINE), (command, out)


# --- remote add / list / remove --------------------------------------------------------


def test_remote_add_list_remove(tmp_path: Path, rng: np.random.Generator, run_wvc: RunWvc) -> None:
    a, _, ids = _history(tmp_path, rng)
    remote = tmp_path / "remote"

    # A relative directory is recorded as an absolute path.
    res = ok(run_wvc, a, "remote", "add", "origin", "../remote")
    assert res.stdout == f"Added remote origin: {remote}\n"
    assert res.stderr == ""
    fails(
        run_wvc, a, 5, "remote", "add", "origin", "/else", match=r"remote 'origin' already exists"
    )
    fails(run_wvc, a, 5, "remote", "add", "bad/name", "/else", match=r"invalid remote name")
    fails(run_wvc, a, 5, "remote", "add", "x", "/else", "-o", "novalue", match="KEY=VALUE")

    # A secret-looking option is kept (as documented) but warned about, in a 0600 file.
    res = ok(
        run_wvc, a, "remote", "add", "store", "s3://bucket/models/",
        "-o", "endpoint_url=http://127.0.0.1:9", "-o", "secret=hunter2",
    )  # fmt: skip
    assert res.stdout == "Added remote store: s3://bucket/models\n"
    assert res.stderr.startswith("warning: option(s) secret are stored in clear text"), res.stderr
    assert len(res.stderr.splitlines()) == 1
    config = a / ".wvc" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text())["remotes"]["store"]["options"] == {
        "endpoint_url": "http://127.0.0.1:9",
        "secret": "hunter2",
    }

    with Repository.open(a) as repo:
        repo.push("origin")

    # Listings name the options but never show their values.
    res = ok(run_wvc, a, "remote", "list")
    assert res.stdout.splitlines() == [
        f"origin       {remote}",
        f"  origin/main                   {ids[1][:12]}",
        "store        s3://bucket/models",
    ]
    res = ok(run_wvc, a, "remote", "list", "--json")
    assert "hunter2" not in res.stdout and "127.0.0.1:9" not in res.stdout
    assert json.loads(res.stdout) == [
        {
            "name": "origin",
            "url": str(remote),
            "options": [],
            "partial": False,
            "branches": {"main": ids[1]},
        },
        {
            "name": "store",
            "url": "s3://bucket/models",
            "options": ["endpoint_url", "secret"],
            "partial": False,
            "branches": {},
        },
    ]

    # remove drops the remote-tracking refs and leaves the storage alone.
    res = ok(run_wvc, a, "remote", "remove", "origin")
    assert res.stdout == f"Removed remote origin ({remote})\n"
    fails(run_wvc, a, 5, "remote", "remove", "origin", match=r"no such remote: 'origin'")
    assert _remote_ref(remote) == ids[1]
    with Repository.open(a) as repo:
        assert [r.name for r in repo.remotes()] == ["store"]
        with pytest.raises(LookupError):
            repo.resolve("origin/main")
        repo.add_remote("origin", str(remote))  # back again: nothing tracked yet
        assert repo.remotes()[0].branches == {}


# --- push ------------------------------------------------------------------------------


def test_push_output_json_and_up_to_date(
    tmp_path: Path, rng: np.random.Generator, run_wvc: RunWvc
) -> None:
    a, ck, ids = _history(tmp_path, rng)
    remote = tmp_path / "remote"
    with Repository.open(a) as repo:
        repo.add_remote("origin", str(remote))

    res = ok(run_wvc, a, "push")  # the current branch to origin
    assert res.stderr == ""  # no terminal: no progress bar
    lines = res.stdout.splitlines()
    assert lines[0] == f"Created remote storage at {remote}"
    m = re.fullmatch(rf"Pushed to origin \({re.escape(str(remote))}\): 2 commit\(s\), "
                     rf"(\d+) object\(s\), {SIZE}", lines[1])  # fmt: skip
    assert m and int(m.group(1)) > 2, lines[1]
    assert re.fullmatch(rf"  branch main\s+{ids[1][:12]} \(new\)", lines[2]), lines[2]
    assert len(lines) == 3
    assert _remote_ref(remote) == ids[1]

    res = ok(run_wvc, a, "push", "origin", "main")
    assert (res.stdout, res.stderr) == ("origin: up to date\n", "")

    three = _commit_more(a, ck, rng, push=False)
    data = json.loads(ok(run_wvc, a, "push", "--json").stdout)
    assert data["up_to_date"] is False
    assert data["remote"] == "origin" and data["url"] == str(remote)
    assert data["created_remote"] is False
    assert data["updates"] == [
        {"ref": "refs/heads/main", "old": ids[1], "new": three, "status": "fast-forward"}
    ]
    assert data["commits"] == 1
    assert data["objects"] > 1 and data["bytes"] > 0
    assert data["present"] == 0

    data = json.loads(ok(run_wvc, a, "push", "--json").stdout)
    assert data["up_to_date"] is True
    assert (data["commits"], data["objects"], data["bytes"], data["present"]) == (0, 0, 0, 0)
    assert [u["status"] for u in data["updates"]] == ["up to date"]

    # Another repository with the same weights: its chunks are on the remote already.
    with Repository.init(tmp_path / "c") as c:
        c.commit(ck, "same weights, other history")
        c.branch("c-main")
        c.add_remote("origin", str(remote))
    data = json.loads(ok(run_wvc, tmp_path / "c", "push", "origin", "c-main", "--json").stdout)
    assert data["present"] > 0
    assert data["updates"][0]["status"] == "new"
    assert _remote_ref(remote, "c-main") == data["updates"][0]["new"]


def test_rejected_push_exit_10_then_force(
    tmp_path: Path, rng: np.random.Generator, run_wvc: RunWvc
) -> None:
    a, ck, remote, _ = _pushed(tmp_path, rng)
    with Repository.clone(str(remote), tmp_path / "b"):
        pass
    theirs = _commit_more(tmp_path / "b", tmp_path / "b-ck", rng, push=True)
    mine = _commit_more(a, ck, rng, push=False)

    message = fails(run_wvc, a, 10, "push", match=r"fetch first")
    assert f"main on origin is at {theirs[:12]}" in message
    assert _remote_ref(remote) == theirs  # nothing moved

    res = ok(run_wvc, a, "push", "--force")
    assert re.search(rf"branch main\s+{theirs[:12]}\.\.{mine[:12]} \(forced\)", res.stdout)
    assert _remote_ref(remote) == mine


# --- clone, fetch, pull ----------------------------------------------------------------


def test_clone_restore_fetch_log_pull(
    tmp_path: Path, rng: np.random.Generator, run_wvc: RunWvc
) -> None:
    a, ck, remote, ids = _pushed(tmp_path, rng)
    b = tmp_path / "b"

    res = ok(run_wvc, tmp_path, "clone", str(remote), "b")
    lines = res.stdout.splitlines()
    assert re.fullmatch(
        rf"Cloned {re.escape(str(remote))} into {re.escape(str(b))}: 2 commit\(s\), "
        rf"\d+ object\(s\), {SIZE}",
        lines[0],
    ), lines[0]
    assert lines[1:] == [f"On branch main at {ids[1][:12]}"]
    ok(run_wvc, b, "restore", "main", "--to", "out")
    assert_same_tree(ck, b / "out")

    three = _commit_more(a, ck, rng, push=True)
    res = ok(run_wvc, b, "fetch")
    lines = res.stdout.splitlines()
    assert re.fullmatch(rf"Fetched from origin: 1 commit\(s\), \d+ object\(s\), {SIZE}", lines[0])
    assert re.fullmatch(
        rf"  branch origin/main\s+{ids[1][:12]}\.\.{three[:12]} \(fast-forward\)", lines[1]
    ), lines[1]
    assert len(lines) == 2
    res = ok(run_wvc, b, "log", "origin/main", "--ids")
    assert res.stdout.split() == [three, ids[1], ids[0]]
    with Repository.open(b) as repo:
        assert repo.resolve("main") == ids[1]  # fetch moves no local branch

    four = _commit_more(a, ck, rng, push=True)
    res = ok(run_wvc, b, "pull")
    lines = res.stdout.splitlines()
    assert re.fullmatch(rf"Fetched from origin: 1 commit\(s\), \d+ object\(s\), {SIZE}", lines[0])
    assert lines[-1] == f"main: {ids[1][:12]}..{four[:12]} (fast-forward)"
    res = ok(run_wvc, b, "pull", "origin", "main")
    assert res.stdout.splitlines() == ["origin: up to date", f"main: up to date ({four[:12]})"]
    with Repository.open(b) as repo:
        repo.restore("main", tmp_path / "out4")
    assert_same_tree(ck, tmp_path / "out4")


def test_partial_clone_then_restore_fetches_on_demand(
    tmp_path: Path, rng: np.random.Generator, run_wvc: RunWvc
) -> None:
    a, ck, remote, _ = _pushed(tmp_path, rng)
    b = tmp_path / "b"
    res = ok(run_wvc, tmp_path, "clone", "--filter", "*.json", str(remote), str(b))
    assert res.stdout.splitlines()[0].endswith(" (partial)"), res.stdout
    with Repository.open(a) as full, Repository.open(b) as part:
        full_size, part_size = full.stats().stored_size, part.stats().stored_size
    assert part_size < full_size / 3  # the model's chunks stayed on the remote
    assert ok(run_wvc, b, "remote", "list").stdout.splitlines()[0] == (
        f"origin       {remote} (partial)"
    )
    before = _object_files(b)
    ok(run_wvc, b, "restore", "main", "--to", "out")
    assert_same_tree(ck, b / "out")
    assert _object_files(b) > before  # what restore fetched was kept


def _object_files(repo_dir: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(repo_dir / ".wvc" / "objects"))


def _object_bytes(repo_dir: Path) -> int:
    return sum(p.stat().st_size for p in (repo_dir / ".wvc" / "objects").rglob("*") if p.is_file())


# Objects fetched on demand are indexed, so stats counts them like fetched ones.
def test_stats_of_a_partial_clone_counts_objects_fetched_on_demand(
    tmp_path: Path, rng: np.random.Generator, run_wvc: RunWvc
) -> None:
    a, _, remote, _ = _pushed(tmp_path, rng)
    b = tmp_path / "b"
    with Repository.clone(str(remote), b, files=["*.json"]) as part:
        part.restore("main", tmp_path / "out")
        part.restore("main~1", tmp_path / "out1")  # now every object is here
    assert (_object_files(b), _object_bytes(b)) == (_object_files(a), _object_bytes(a))
    with Repository.open(a) as full:  # in a complete repository the two agree
        assert (full.stats().stored_size, full.stats().objects) == (
            _object_bytes(a),
            _object_files(a),
        )
    data = json.loads(ok(run_wvc, b, "stats", "--json").stdout)
    assert (data["stored_size"], data["objects"]) == (_object_bytes(b), _object_files(b))


def test_s3_remote_push_clone_restore(
    tmp_path: Path, rng: np.random.Generator, run_wvc: RunWvc, s3_endpoint: S3Endpoint
) -> None:
    a, ck, ids = _history(tmp_path, rng)
    url = f"s3://{s3_endpoint.new_bucket()}/models/m"
    endpoint = f"endpoint_url={s3_endpoint.url}"
    res = ok(run_wvc, a, "remote", "add", "origin", url, "-o", endpoint)
    assert res.stderr == ""  # endpoint_url does not look like a secret

    data = json.loads(ok(run_wvc, a, "push", "--json").stdout)
    assert data["created_remote"] is True and data["url"] == url
    assert data["commits"] == 2 and data["objects"] > 2 and data["bytes"] > 0
    assert data["updates"] == [
        {"ref": "refs/heads/main", "old": None, "new": ids[1], "status": "new"}
    ]

    res = ok(run_wvc, tmp_path, "clone", url, "b", "-o", endpoint)
    assert res.stdout.startswith(f"Cloned {url} into {tmp_path / 'b'}: 2 commit(s)")
    ok(run_wvc, tmp_path / "b", "restore", "main", "--to", "out")
    assert_same_tree(ck, tmp_path / "b" / "out")


# --- errors ----------------------------------------------------------------------------


def test_remote_errors_and_exit_codes(
    tmp_path: Path, rng: np.random.Generator, run_wvc: RunWvc
) -> None:
    a, _, remote, _ = _pushed(tmp_path, rng)
    with Repository.open(a) as repo:
        repo.add_remote("gone", str(tmp_path / "missing"))

    fails(run_wvc, a, 5, "push", "nope", match=r"no such remote: 'nope' \(remotes: gone, origin\)")
    fails(run_wvc, a, 9, "fetch", "gone", match=r"missing: not a wvc remote")
    assert not (tmp_path / "missing").exists()  # fetch creates nothing

    res = run_wvc("push", "--jobs", "0", cwd=a)
    assert res.returncode == 2  # click usage error
    assert "Invalid value for '-j' / '--jobs'" in res.stderr

    # Clone into a non-empty directory: refused, the directory as it was.
    full = tmp_path / "full"
    write_checkpoint(full, {"keep.txt": "mine", "sub/other.bin": b"\x00\x01"})
    before = tree_files(full)
    fails(
        run_wvc,
        tmp_path,
        5,
        "clone",
        str(remote),
        "full",
        match="full: target directory is not empty",
    )
    assert tree_files(full) == before and not (full / ".wvc").exists()
    assert (full / "keep.txt").read_text() == "mine"

    fails(run_wvc, tmp_path, 9, "clone", str(tmp_path / "missing"), "new", match="not a wvc remote")
    assert not (tmp_path / "new").exists()
    fails(run_wvc, tmp_path, 9, "clone", str(remote), "new", "-o", "a=1", match="takes no --option")
    assert not (tmp_path / "new").exists()


def test_unreachable_s3_endpoint_is_one_error_line(
    tmp_path: Path, run_wvc: RunWvc, s3_endpoint: S3Endpoint
) -> None:
    with Repository.init(tmp_path / "a") as repo:
        repo.add_remote("dead", "s3://bucket/m", {"endpoint_url": "http://127.0.0.1:9"})
    # One attempt (botocore retries a refused connection with back-off otherwise).
    res = run_wvc("fetch", "dead", cwd=tmp_path / "a", env={"AWS_MAX_ATTEMPTS": "1"})
    assert res.returncode == 9, res.stderr
    assert res.stderr.startswith("wvc: error: s3://bucket/m: ") and res.stderr.count("\n") == 1


# --- progress --------------------------------------------------------------------------


def test_progress_on_a_terminal_and_quiet(tmp_path: Path, rng: np.random.Generator) -> None:
    _, _, remote, _ = _pushed(tmp_path, rng)
    err = _stderr_on_a_terminal("clone", str(remote), "b1", cwd=tmp_path)
    assert "fetching" in err and "100.0%" in err, err
    assert _stderr_on_a_terminal("clone", "-q", str(remote), "b2", cwd=tmp_path) == ""
    assert (tmp_path / "b2" / ".wvc").is_dir()
