"""Remotes: push, clone, fetch, pull against a directory, memory:// and a real S3 endpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import (
    RemoteSpot,
    assert_same_tree,
    repo_with_history,
    small_model,
    write_checkpoint,
)

from wvc.errors import InputError, PushRejectedError, RefError, RemoteError
from wvc.ops._transfer import UpdateStatus
from wvc.repository import Repository


def _add(repo: Repository, spot: RemoteSpot, name: str = "origin") -> None:
    repo.add_remote(name, spot.url, spot.options)


def test_push_clone_restore_bit_exact(
    tmp_path: Path, rng: np.random.Generator, remote_spot: RemoteSpot
) -> None:
    a, ck = repo_with_history(tmp_path, rng)
    _add(a, remote_spot)
    res = a.push("origin")
    assert res.created_remote
    assert res.commits == 2
    assert [u.status for u in res.updates] == [UpdateStatus.CREATED]
    assert res.objects > 0 and res.bytes > 0

    b = Repository.clone(remote_spot.url, tmp_path / "b", options=remote_spot.options)
    assert b.last_clone is not None and b.last_clone.branch == "main"
    assert [e.id for e in b.log()] == [e.id for e in a.log()]
    assert b.log()[0].meta == {"step": 2}
    for rev in ("main", "main~1"):
        a.restore(rev, tmp_path / f"a-{rev}")
        b.restore(rev, tmp_path / f"b-{rev}")
        assert_same_tree(tmp_path / f"a-{rev}", tmp_path / f"b-{rev}")
    assert_same_tree(ck, tmp_path / "b-main")
    assert b.fsck().ok
    assert b.resolve("origin/main") == a.resolve("main")


def test_noop_push_and_fetch_are_up_to_date(
    tmp_path: Path, rng: np.random.Generator, remote_spot: RemoteSpot
) -> None:
    a, _ = repo_with_history(tmp_path, rng)
    _add(a, remote_spot)
    a.push("origin")
    again = a.push("origin")
    assert again.up_to_date and again.objects == 0 and again.commits == 0
    b = Repository.clone(remote_spot.url, tmp_path / "b", options=remote_spot.options)
    fetched = b.fetch("origin")
    assert fetched.up_to_date and fetched.objects == 0


def test_incremental_push_moves_only_new_objects(
    tmp_path: Path, rng: np.random.Generator, remote_spot: RemoteSpot
) -> None:
    a, ck = repo_with_history(tmp_path, rng)
    _add(a, remote_spot)
    a.push("origin")
    tensors = small_model(rng)
    write_checkpoint(ck, {"model.safetensors": tensors})
    before = a.stats().stored_size
    c = a.commit(ck, "three")
    new_stored = a.stats().stored_size - before
    res = a.push("origin")
    # The new commit's objects exactly: what the commit stored (chunks, manifest, tree,
    # commit), nothing the remote already had.
    assert res.commits == 1
    assert res.objects == c.new_objects
    assert res.bytes == new_stored
    assert res.present == 0
    assert [u.status for u in res.updates] == [UpdateStatus.FAST_FORWARD]


def test_fetch_and_pull_fast_forward(
    tmp_path: Path, rng: np.random.Generator, remote_spot: RemoteSpot
) -> None:
    a, ck = repo_with_history(tmp_path, rng)
    _add(a, remote_spot)
    a.push("origin")
    b = Repository.clone(remote_spot.url, tmp_path / "b", options=remote_spot.options)
    write_checkpoint(ck, {"model.safetensors": small_model(rng)})
    c3 = a.commit(ck, "three")
    a.push("origin")

    fetched = b.fetch("origin")
    assert fetched.commits == 1
    assert b.resolve("origin/main") == c3.id
    assert b.resolve("main") != c3.id  # fetch moves no local branch
    pulled = b.pull("origin")
    assert pulled.status is UpdateStatus.FAST_FORWARD
    assert b.resolve("main") == c3.id
    b.restore("main", tmp_path / "out")
    assert_same_tree(ck, tmp_path / "out")
    assert b.pull("origin").status is UpdateStatus.UP_TO_DATE


def test_non_fast_forward_push_is_rejected_unless_forced(
    tmp_path: Path, rng: np.random.Generator, remote_spot: RemoteSpot
) -> None:
    a, ck = repo_with_history(tmp_path, rng)
    _add(a, remote_spot)
    a.push("origin")
    b = Repository.clone(remote_spot.url, tmp_path / "b", options=remote_spot.options)
    # b moves the remote branch on; a, not knowing it, commits something else.
    write_checkpoint(tmp_path / "ckb", {"model.safetensors": small_model(rng)})
    b.commit(tmp_path / "ckb", "from b")
    b.push("origin")
    write_checkpoint(ck, {"model.safetensors": small_model(rng)})
    mine = a.commit(ck, "from a")
    with pytest.raises(PushRejectedError, match="fetch first"):
        a.push("origin")
    # After a fetch a knows the remote commit: still not a fast-forward.
    a.fetch("origin")
    with pytest.raises(PushRejectedError, match="not a fast-forward"):
        a.push("origin")
    with pytest.raises(RefError, match="diverged"):
        a.pull("origin")
    forced = a.push("origin", force=True)
    assert [u.status for u in forced.updates] == [UpdateStatus.FORCED]
    assert b.fetch("origin").updates[0].new == mine.id


def test_tags_travel(tmp_path: Path, rng: np.random.Generator, remote_spot: RemoteSpot) -> None:
    a, _ = repo_with_history(tmp_path, rng)
    _add(a, remote_spot)
    a.tag("v1", "main~1")
    a.push("origin", tags=True)
    b = Repository.clone(remote_spot.url, tmp_path / "b", options=remote_spot.options)
    assert {t.name: t.target for t in b.tags()} == {"v1": a.resolve("v1")}
    a.tag("v1", "main", force=True)
    with pytest.raises(PushRejectedError, match="tags do not move"):
        a.push("origin", ["v1"])


def test_partial_clone_fetches_the_rest_on_demand(
    tmp_path: Path, rng: np.random.Generator, remote_spot: RemoteSpot
) -> None:
    a, ck = repo_with_history(tmp_path, rng)
    _add(a, remote_spot)
    a.push("origin")
    b = Repository.clone(
        remote_spot.url, tmp_path / "b", files=["config.json"], options=remote_spot.options
    )
    assert b.last_clone is not None and b.last_clone.fetch.partial
    full = Repository.clone(remote_spot.url, tmp_path / "full", options=remote_spot.options)
    assert b.stats().stored_size < full.stats().stored_size / 3
    # Restore reads what was not fetched from the remote, verified, and keeps it.
    check = b.fsck()
    assert check.ok and check.not_fetched > 0
    b.restore("main", tmp_path / "out")
    assert_same_tree(ck, tmp_path / "out")
    assert b.remotes()[0].partial
    # The chunks restore fetched are kept: only main~1's own chunk is still on the remote.
    assert 0 < b.fsck().not_fetched < check.not_fetched


def test_partial_fetch_by_tensor_name(
    tmp_path: Path, rng: np.random.Generator, remote_spot: RemoteSpot
) -> None:
    a, _ = repo_with_history(tmp_path, rng)
    _add(a, remote_spot)
    a.push("origin")
    b = Repository.init(tmp_path / "b")
    _add(b, remote_spot)
    res = b.fetch("origin", tensors=["layers.0.*"])
    assert res.partial
    # Only layer 0's chunk (plus commits, trees, manifests and opaque segments) came over.
    loaded = b.load_state_dict("origin/main")
    want = a.load("main")
    np.testing.assert_array_equal(loaded["layers.0.w"], want["layers.0.w"])


def test_clone_errors_leave_nothing(tmp_path: Path) -> None:
    with pytest.raises(RemoteError, match="not a wvc remote"):
        Repository.clone(str(tmp_path / "nowhere"), tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_fetch_unknown_branch(
    tmp_path: Path, rng: np.random.Generator, remote_spot: RemoteSpot
) -> None:
    a, _ = repo_with_history(tmp_path, rng)
    _add(a, remote_spot)
    a.push("origin")
    with pytest.raises(RefError, match="no branch 'nope'"):
        a.fetch("origin", ["nope"])


def test_full_fetch_completes_a_partial_clone(
    tmp_path: Path, rng: np.random.Generator, remote_spot: RemoteSpot
) -> None:
    a, ck = repo_with_history(tmp_path, rng)
    _add(a, remote_spot)
    a.push("origin")
    b = Repository.clone(
        remote_spot.url, tmp_path / "b", files=["config.json"], options=remote_spot.options
    )
    before = b.fsck().not_fetched
    res = b.fetch("origin")
    assert res.objects > 0  # the tip's chunks, although no commit is new
    # Only main~1's own changed chunk is left on the remote; the tip restores offline.
    assert 0 < b.fsck().not_fetched < before
    with pytest.raises(InputError, match="partial fetch"):
        b.remove_remote("origin")
    b.remove_remote("origin", force=True)  # offline from here on
    b.restore("main", tmp_path / "out")
    assert_same_tree(ck, tmp_path / "out")


def test_push_of_a_branch_behind_the_remote_says_pull(
    tmp_path: Path, rng: np.random.Generator, remote_spot: RemoteSpot
) -> None:
    a, _ = repo_with_history(tmp_path, rng)
    _add(a, remote_spot)
    a.push("origin")
    # main moves back one commit locally, as in a clone that missed the last push.
    a.branch("main", "main~1", force=True)
    with pytest.raises(PushRejectedError, match=r"is ahead of yours .*; pull first"):
        a.push("origin", ["main"])
    assert a.pull("origin").status is UpdateStatus.FAST_FORWARD
