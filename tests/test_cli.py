"""The command line: in process with click's CliRunner and as a real subprocess."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from wvc.cli import cli
from wvc.repository import Repository

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def invoke(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def ok(*args: object) -> Result:
    res = invoke(*args)
    assert res.exit_code == 0, (args, res.exit_code, res.stdout, res.stderr)
    return res


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_ckpt) -> Path:
    """cwd = an initialized repository holding two checkpoint directories (uncommitted)."""
    monkeypatch.delenv("WVC_DIR", raising=False)
    monkeypatch.delenv("WVC_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 64), dtype=np.float32)
    write_ckpt(
        tmp_path / "ck1",
        {"model.safetensors": {"w": w, "b": np.zeros(64, np.float32)}, "config.json": "{}\n"},
    )
    write_ckpt(
        tmp_path / "ck2",
        {"model.safetensors": {"w": w * 2, "b": np.ones(64, np.float32)}, "config.json": "{}\n"},
    )
    res = invoke("init")
    assert res.exit_code == 0
    assert "Initialized empty wvc repository" in res.stdout
    return tmp_path


def commit_two(work: Path) -> tuple[str, str]:
    a = json.loads(ok("commit", "ck1", "-m", "first", "--meta", "loss=2.31", "--json").stdout)
    b = json.loads(ok("commit", "ck2", "-m", "second", "--meta", "loss=1.5", "--json").stdout)
    return a["id"], b["id"]


# --- the happy path, in process ------------------------------------------------------


def test_commit_output_and_meta_types(work: Path) -> None:
    res = ok(
        "commit", "ck1", "-m", "step 100",
        "--meta", "loss=2.31", "--meta", "step=100", "--meta", "lr=1e-4",
        "--meta", "name=run-1", "--meta", "done=true", "--meta", "nothing=null",
        "--meta", "weird=nan", "--meta", "eq=a=b",
    )  # fmt: skip
    m = re.match(r"\[main ([0-9a-f]{12})\] step 100\n", res.stdout)
    assert m, res.stdout
    assert "2 file(s), 2 tensor(s)" in res.stdout
    entry = json.loads(ok("log", "--json").stdout)[0]
    assert entry["id"].startswith(m.group(1))
    assert entry["meta"] == {
        "loss": 2.31,
        "step": 100,
        "lr": 1e-4,
        "name": "run-1",
        "done": True,
        "nothing": None,
        "weird": "nan",
        "eq": "a=b",
    }
    assert type(entry["meta"]["step"]) is int
    assert type(entry["meta"]["loss"]) is float


def test_commit_json_schema(work: Path) -> None:
    data = json.loads(ok("commit", "ck1", "--json").stdout)
    assert set(data) == {
        "id", "parents", "branch", "files", "tensors",
        "logical_size", "new_stored_size", "new_objects", "warnings",
    }  # fmt: skip
    assert data["warnings"] == []
    assert re.fullmatch(r"[0-9a-f]{64}", data["id"])
    assert data["parents"] == []
    assert data["branch"] == "main"
    assert data["files"] == 2
    assert data["tensors"] == 2
    size = sum(p.stat().st_size for p in (work / "ck1").iterdir())
    assert data["logical_size"] == size
    again = json.loads(ok("commit", "ck1", "--json").stdout)
    assert again["parents"] == [data["id"]]
    assert again["new_objects"] == 1


def test_commit_several_paths_and_opaque(work: Path) -> None:
    ok("commit", "ck1/model.safetensors", "ck2/config.json", "-m", "files")
    files = json.loads(ok("show", "--json").stdout)["files"]
    assert [(f["path"], f["format"]) for f in files] == [
        ("config.json", "opaque"),
        ("model.safetensors", "safetensors"),
    ]
    ok("commit", "ck1", "--opaque")
    files = json.loads(ok("show", "--json").stdout)["files"]
    assert {f["format"] for f in files} == {"opaque"}
    assert all(f["tensors"] == [] for f in files)


def test_log_formats(work: Path) -> None:
    a, b = commit_two(work)
    plain = ok("log").stdout
    assert f"commit {b}" in plain
    assert f"commit {a}" in plain
    assert plain.index(b) < plain.index(a)  # newest first
    assert "Meta:   loss=1.5" in plain
    assert "    second" in plain
    assert "Author: " in plain and "Date:   " in plain
    lines = ok("log", "--oneline").stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(b[:12] + " (main) second")
    assert lines[0].endswith("[loss=1.5]")
    assert lines[1].startswith(a[:12] + " first")
    one = ok("log", "-n", "1", "--oneline").stdout.splitlines()
    assert len(one) == 1 and one[0].startswith(b[:12])
    data = json.loads(ok("log", "--json").stdout)
    assert [e["id"] for e in data] == [b, a]
    for e in data:
        assert set(e) == {
            "id", "parents", "time", "author", "message", "meta",
            "logical_size", "new_stored_size", "refs",
        }  # fmt: skip
    assert data[0]["parents"] == [a]
    assert data[0]["refs"] == ["main"]
    assert isinstance(data[0]["time"], float)
    assert [e["id"] for e in json.loads(ok("log", "HEAD~1", "--json").stdout)] == [a]
    assert json.loads(ok("log", a[:6], "--json").stdout)[0]["id"] == a


def test_show_formats(work: Path) -> None:
    a, b = commit_two(work)
    data = json.loads(ok("show", "HEAD~1", "--json").stdout)
    assert set(data) == {"commit", "files", "logical_size", "stored_size"}
    assert data["commit"]["id"] == a
    assert data["commit"]["meta"] == {"loss": 2.31}
    paths = [f["path"] for f in data["files"]]
    assert paths == ["config.json", "model.safetensors"]
    for f in data["files"]:
        assert set(f) == {"path", "format", "size", "stored_size", "tensors", "metadata"}
        assert f["size"] == (work / "ck1" / f["path"]).stat().st_size
    st = data["files"][1]
    assert [t["name"] for t in st["tensors"]] == ["w", "b"]
    for t in st["tensors"]:
        assert set(t) == {"name", "dtype", "shape", "offset", "size"}
    assert st["tensors"][0]["dtype"] == "F32"
    assert st["tensors"][0]["shape"] == [64, 64]
    assert st["tensors"][0]["size"] == 64 * 64 * 4
    assert data["logical_size"] == sum(f["size"] for f in data["files"])
    plain = ok("show").stdout
    assert plain.startswith(f"commit {b}\n")
    assert "model.safetensors  [safetensors]" in plain
    assert re.search(r"^\s+w\s+F32\s+64x64$", plain, re.M)
    no_t = ok("show", "--no-tensors").stdout
    assert "model.safetensors" in no_t
    assert not re.search(r"^\s+w\s+F32", no_t, re.M)


def test_restore(work: Path, same_tree) -> None:
    commit_two(work)
    res = ok("restore", "HEAD~1", "--to", "out1")
    assert res.stdout.startswith("Restored 2 file(s)")
    same_tree(work / "ck1", work / "out1")
    data = json.loads(ok("restore", "main", "model.safetensors", "--to", "out2", "--json").stdout)
    assert set(data) == {"commit", "to", "files", "size"}
    assert data["files"] == 1
    assert (work / "out2" / "model.safetensors").read_bytes() == (
        work / "ck2" / "model.safetensors"
    ).read_bytes()
    assert not (work / "out2" / "config.json").exists()


def test_branch_switch_tag(work: Path) -> None:
    a, b = commit_two(work)
    assert ok("branch", "exp", "HEAD~1").stdout.strip() == f"Branch exp at {a[:12]}"
    listing = ok("branch").stdout.splitlines()
    assert listing[0].split() == ["exp", a[:12]]
    assert listing[1].split() == ["*", "main", b[:12]]
    data = json.loads(ok("branch", "--json").stdout)
    assert data == [
        {"name": "exp", "kind": "branch", "target": a, "current": False},
        {"name": "main", "kind": "branch", "target": b, "current": True},
    ]
    assert ok("switch", "exp").stdout.strip() == "Switched to branch exp"
    c = json.loads(ok("commit", "ck2", "-m", "on exp", "--json").stdout)
    assert c["branch"] == "exp"
    assert c["parents"] == [a]
    assert json.loads(ok("branch", "--json").stdout)[0]["current"] is True
    assert ok("switch", "-c", "exp2").stdout.strip() == "Switched to branch exp2"
    assert ok("switch", b[:10]).stdout.strip() == f"HEAD is now detached at {b[:12]}"
    d = ok("commit", "ck1", "-m", "detached")
    assert d.stdout.startswith("[detached HEAD ")

    assert ok("tag", "v1", a[:8]).stdout.strip() == f"Tagged {a[:12]} as v1"
    ok("tag", "v2")
    tags = json.loads(ok("tag", "--json").stdout)
    assert [(t["name"], t["kind"]) for t in tags] == [("v1", "tag"), ("v2", "tag")]
    assert tags[0]["target"] == a
    assert [line.split()[0] for line in ok("tag").stdout.splitlines()] == ["v1", "v2"]
    assert invoke("tag", "v1").exit_code == 4  # exists
    ok("tag", "-f", "v1", b)
    assert json.loads(ok("tag", "--json").stdout)[0]["target"] == b
    assert ok("tag", "-d", "v2").stdout.startswith("Deleted tag v2")
    assert [t["name"] for t in json.loads(ok("tag", "--json").stdout)] == ["v1"]

    ok("switch", "main")
    res = invoke("branch", "-d", "main")
    assert res.exit_code == 4
    assert res.stderr.startswith("wvc: error: cannot delete branch 'main'")
    assert ok("branch", "-d", "exp2").stdout.startswith("Deleted branch exp2")
    bad = invoke("branch", "bad..name")
    assert bad.exit_code == 4
    assert "invalid branch name" in bad.stderr


def test_stats_and_fsck(work: Path) -> None:
    commit_two(work)
    data = json.loads(ok("stats", "--json").stdout)
    assert {
        "commits", "logical_size", "unique_size", "stored_size",
        "dedup_ratio", "compression_ratio",
    } <= set(data)  # fmt: skip
    assert len(data["commits"]) == 2
    assert set(data["commits"][0]) >= {"id", "message", "logical_size", "new_stored_size"}
    assert data["logical_size"] == sum(c["logical_size"] for c in data["commits"])
    assert data["unique_size"] > 0
    assert data["dedup_ratio"] == pytest.approx(data["logical_size"] / data["unique_size"])
    plain = ok("stats").stdout
    assert "dedup" in plain and "compression" in plain
    assert len(json.loads(ok("stats", "HEAD~1", "--json").stdout)["commits"]) == 1
    res = ok("fsck")
    assert "0 problem(s)" in res.stdout
    report = json.loads(ok("fsck", "--json").stdout)
    assert report["ok"] is True
    assert report["problems"] == []
    assert report["commits_checked"] == 2


def test_wvc_dir_env(work: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    a, _ = commit_two(work)
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    monkeypatch.chdir(elsewhere)
    assert invoke("log").exit_code == 3
    monkeypatch.setenv("WVC_DIR", str(work))
    assert json.loads(ok("log", "--json").stdout)[-1]["id"] == a


def test_version_and_help() -> None:
    res = ok("--version")
    assert "wvc" in res.stdout
    help_text = ok("--help").stdout
    for name in cli.commands:
        assert name in help_text


# --- errors, in process --------------------------------------------------------------


def test_error_exit_codes_in_process(work: Path) -> None:
    commit_two(work)
    cases = [
        (("log", "nosuchrev"), 4, "unknown revision"),
        (("show", "HEAD~5"), 4, "has no parent"),
        (("restore", "HEAD", "nope.bin", "--to", "o1"), 5, "nope.bin"),
        (("commit", "does-not-exist"), 5, "does-not-exist"),
        (("commit", "ck1", "--meta", "novalue"), 5, "expected KEY=VALUE"),
        (("commit", "ck1", "--meta", "=3"), 5, "expected KEY=VALUE"),
        (("init",), 3, "already exists"),
        (("switch", "nosuch"), 4, "nosuch"),
    ]
    for args, code, text in cases:
        res = invoke(*args)
        assert res.exit_code == code, (args, res.exit_code, res.stderr)
        assert res.stderr.startswith("wvc: error: "), (args, res.stderr)
        assert res.stderr.count("\n") == 1, (args, res.stderr)
        assert text in res.stderr, (args, res.stderr)
        assert res.stdout == "", (args, res.stdout)
    assert len(json.loads(ok("log", "--json").stdout)) == 2  # nothing was committed


def test_empty_repository(work: Path) -> None:
    res = invoke("log")
    assert res.exit_code == 4
    assert res.stderr.startswith("wvc: error: HEAD has no commits yet")
    assert ok("branch").stdout == ""
    assert json.loads(ok("branch", "--json").stdout) == []
    assert json.loads(ok("tag", "--json").stdout) == []
    assert json.loads(ok("stats", "--json").stdout)["commits"] == []
    assert json.loads(ok("fsck", "--json").stdout)["ok"] is True
    assert invoke("tag", "v1").exit_code == 4
    assert invoke("switch", "-c", "x").exit_code == 4


# --- real subprocesses ---------------------------------------------------------------


def test_subprocess_workflow(tmp_path: Path, run_wvc, write_ckpt, same_tree) -> None:
    rng = np.random.default_rng(9)
    write_ckpt(tmp_path / "ck", {"m.safetensors": {"x": rng.standard_normal(1000)}, "c.txt": "c"})
    r = run_wvc("init", "repo", cwd=tmp_path, check=True)
    assert r.stdout.startswith("Initialized empty wvc repository in ")
    root = tmp_path / "repo"
    r = run_wvc("commit", tmp_path / "ck", "-m", "one", "--meta", "loss=0.5", cwd=root, check=True)
    assert r.stdout.startswith("[main ")
    assert r.stderr == ""  # no progress bar when stderr is not a terminal
    sub = root / "deep" / "sub"
    sub.mkdir(parents=True)
    log = json.loads(run_wvc("log", "--json", cwd=sub, check=True).stdout)
    assert log[0]["meta"] == {"loss": 0.5}
    run_wvc("restore", "HEAD", "--to", tmp_path / "out", cwd=sub, check=True)
    same_tree(tmp_path / "ck", tmp_path / "out")
    r = run_wvc("fsck", cwd=root)
    assert r.returncode == 0
    assert "0 problem(s)" in r.stdout


def test_demo_subprocess(tmp_path: Path, run_wvc) -> None:
    r = run_wvc("demo", tmp_path / "demo", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "byte-identical" in r.stdout
    assert "DIFFERENT" not in r.stdout
    assert "fsck: ok" in r.stdout
    with Repository.open(tmp_path / "demo" / "repo") as repo:
        assert len(repo.log()) == 2


def assert_one_line_error(r, code: int, text: str = "") -> None:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("wvc: error: "), r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert text in r.stderr, r.stderr


def test_subprocess_errors(tmp_path: Path, run_wvc, write_ckpt) -> None:
    nowhere = tmp_path / "not-a-repo"
    nowhere.mkdir()
    r = run_wvc("log", cwd=nowhere)
    assert_one_line_error(r, 3, "not a wvc repository")
    assert r.stdout == ""

    root = tmp_path / "repo"
    Repository.init(root).close()
    write_ckpt(tmp_path / "ck", {"a.bin": b"a"})
    run_wvc("commit", tmp_path / "ck", cwd=root, check=True)

    assert_one_line_error(run_wvc("show", "deadbeef", cwd=root), 4, "deadbeef")
    assert_one_line_error(run_wvc("restore", "nosuch", "--to", "x", cwd=root), 4, "nosuch")
    assert_one_line_error(run_wvc("commit", tmp_path / "missing", cwd=root), 5, "missing")
    assert_one_line_error(
        run_wvc("restore", "HEAD", "b.bin", "--to", tmp_path / "o", cwd=root), 5, "b.bin"
    )
    assert not (tmp_path / "o").exists()

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    assert_one_line_error(
        run_wvc("commit", bad, cwd=root), 5, f"{bad / 'model.safetensors'}: malformed safetensors"
    )
    r = run_wvc("commit", bad, "--opaque", cwd=root)
    assert r.returncode == 0, r.stderr

    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("keep")
    assert_one_line_error(run_wvc("restore", "HEAD", "--to", full, cwd=root), 5, "not empty")
    assert sorted(p.name for p in full.iterdir()) == ["keep.txt"]

    assert_one_line_error(
        run_wvc("commit", tmp_path / "ck", "--meta", "k", cwd=root), 5, "KEY=VALUE"
    )
    assert_one_line_error(run_wvc("tag", "a b", cwd=root), 4, "invalid tag name")
    assert_one_line_error(run_wvc("init", cwd=root), 3, "already exists")

    # Usage errors are click's (exit 2), not wvc errors.
    assert run_wvc("restore", "HEAD", cwd=root).returncode == 2

    with Repository.open(root) as repo:
        assert len(repo.log()) == 2  # only the good commit and the --opaque one


def test_unsupported_format_exit_code(tmp_path: Path, run_wvc) -> None:
    Repository.init(tmp_path).close()
    (tmp_path / ".wvc" / "format").write_text('{"format": "wvc", "version": 99}\n')
    assert_one_line_error(run_wvc("log", cwd=tmp_path), 3, "version 99 is not supported")


def test_debug_shows_traceback(tmp_path: Path, run_wvc) -> None:
    r = run_wvc("log", cwd=tmp_path, env={"WVC_DEBUG": "1"})
    assert r.returncode != 0
    assert "Traceback (most recent call last)" in r.stderr
    assert "NotARepositoryError" in r.stderr
    assert "wvc: error:" not in r.stderr


def test_every_command_documented() -> None:
    """docs/cli.md has a '## wvc <name>' section for every command."""
    assert DOCS.is_file(), f"{DOCS} is missing"
    text = DOCS.read_text()
    headings = set(re.findall(r"^## wvc ([a-z-]+)\b", text, re.M))
    missing = sorted(set(cli.commands) - headings)
    assert not missing, f"commands without a '## wvc <name>' section in docs/cli.md: {missing}"
