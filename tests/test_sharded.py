"""Hugging Face sharded checkpoints: shards plus a ``*.index.json`` weight map.

The shards and index are written here the way ``save_pretrained`` writes
them (safetensors shards with ``safetensors.numpy.save_file``, torch shards
with ``torch.save``); wvc must read the tensors across shards by name and
store a re-sharded copy of the same tensors almost for free.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from wvc import Repository
from wvc.errors import PathNotFoundError
from wvc.formats import detect
from wvc.interop.torch import from_torch


def tiny_model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A two-layer decoder's tensors: every tensor at least 64 KiB, 1.75 MiB in all."""
    out: dict[str, np.ndarray] = {"model.embed_tokens.weight": rng.standard_normal((256, 128))}
    for i in range(2):
        p = f"model.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out[f"{p}.self_attn.{proj}.weight"] = rng.standard_normal((128, 128))
        out[f"{p}.mlp.up_proj.weight"] = rng.standard_normal((256, 128))
        out[f"{p}.input_layernorm.weight"] = rng.standard_normal(16384)
    out["lm_head.weight"] = rng.standard_normal((256, 128))
    return {k: v.astype(np.float32) for k, v in out.items()}


def shard_names(n: int, ext: str, prefix: str) -> list[str]:
    return [f"{prefix}-{i + 1:05d}-of-{n:05d}.{ext}" for i in range(n)]


def split(names: Sequence[str], sizes: Sequence[int]) -> list[list[str]]:
    assert sum(sizes) == len(names)
    out, pos = [], 0
    for s in sizes:
        out.append(list(names[pos : pos + s]))
        pos += s
    return out


def write_index(path: Path, weight_map: Mapping[str, str], total: int) -> None:
    doc = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    path.write_text(json.dumps(doc, indent=2))


def write_safetensors_shards(
    d: Path, tensors: Mapping[str, np.ndarray], groups: Sequence[Sequence[str]]
) -> dict[str, str]:
    d.mkdir(parents=True, exist_ok=True)
    files = shard_names(len(groups), "safetensors", "model")
    weight_map = {}
    for f, group in zip(files, groups, strict=True):
        save_file({n: tensors[n] for n in group}, str(d / f), metadata={"format": "pt"})
        weight_map.update({n: f for n in group})
    total = sum(a.nbytes for a in tensors.values())
    write_index(d / "model.safetensors.index.json", weight_map, total)
    return weight_map


def assert_same(loaded: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> None:
    assert set(loaded) == set(expected)
    for name, a in expected.items():
        assert loaded[name].dtype == a.dtype and loaded[name].shape == a.shape, name
        assert loaded[name].tobytes() == a.tobytes(), name


def test_safetensors_shards(repo: Repository, tmp_path: Path, rng: np.random.Generator) -> None:
    tensors = tiny_model(rng)
    names = sorted(tensors)
    tensor_bytes = sum(a.nbytes for a in tensors.values())
    smallest = min(a.nbytes for a in tensors.values())
    assert smallest >= 64 << 10

    v1 = tmp_path / "v1"
    write_safetensors_shards(v1, tensors, split(names, [5, 4, len(names) - 9]))
    assert detect("model.safetensors.index.json").name == "hf-index"
    first = repo.commit(v1, "three shards")
    assert first.warnings == ()
    assert first.files == 4 and first.tensors == len(tensors)
    assert first.new_stored_size > tensor_bytes // 2
    files = {f.path: f for f in repo.show(first.id).files}
    assert files["model.safetensors.index.json"].format == "hf-index"
    assert files["model.safetensors.index.json"].tensors == ()

    assert_same(repo.load(first.id, file="model.safetensors.index.json"), tensors)
    assert_same(repo.load(first.id), tensors)
    one_shard = repo.load(first.id, file="model-00002-of-00003.safetensors")
    assert sorted(one_shard) == names[5:9]
    repo.restore(first.id, tmp_path / "out1")
    for p in v1.iterdir():
        assert (tmp_path / "out1" / p.name).read_bytes() == p.read_bytes()

    # The same tensors, re-sharded differently (and in another order within shards).
    v2 = tmp_path / "v2"
    reordered = names[::-1]
    write_safetensors_shards(v2, tensors, split(reordered, [7, len(names) - 7]))
    second = repo.commit(v2, "two shards")
    assert second.warnings == ()
    assert second.new_stored_size < tensor_bytes // 100, (second.new_stored_size, tensor_bytes)
    # No tensor-sized object is new: headers, the index, manifests, tree and commit only.
    assert second.new_stored_size < smallest // 4
    assert second.new_objects <= 3 + 3 + 2
    assert_same(repo.load(second.id, file="model.safetensors.index.json"), tensors)
    assert_same(repo.load(second.id), tensors)
    repo.restore(second.id, tmp_path / "out2")
    for p in v2.iterdir():
        assert (tmp_path / "out2" / p.name).read_bytes() == p.read_bytes()


def test_shards_in_a_subdirectory(
    repo: Repository, tmp_path: Path, rng: np.random.Generator
) -> None:
    tensors = {k: v[:8].copy() for k, v in list(tiny_model(rng).items())[:6]}
    root = tmp_path / "pipeline"
    write_safetensors_shards(root / "text_encoder", tensors, split(sorted(tensors), [3, 3]))
    (root / "model_index.json").write_text("{}")
    result = repo.commit(root, "pipeline")
    assert result.warnings == ()
    index = "text_encoder/model.safetensors.index.json"
    assert_same(repo.load(result.id, file=index), tensors)
    assert_same(repo.load(result.id, file="text_encoder"), tensors)


def test_index_naming_a_missing_shard(
    repo: Repository, tmp_path: Path, rng: np.random.Generator
) -> None:
    tensors = {k: v[:4].copy() for k, v in list(tiny_model(rng).items())[:4]}
    d = tmp_path / "ckpt"
    write_safetensors_shards(d, tensors, split(sorted(tensors), [2, 2]))
    (d / "model-00002-of-00002.safetensors").unlink()
    result = repo.commit(d, "one shard missing")
    (warning,) = result.warnings
    assert "model.safetensors.index.json" in warning
    assert "model-00002-of-00002.safetensors" in warning and "not in the commit" in warning
    with pytest.raises(PathNotFoundError):
        repo.load(result.id, file="model.safetensors.index.json")
    # The shard that is there still reads on its own.
    assert len(repo.load(result.id, file="model-00001-of-00002.safetensors")) == 2


def test_index_naming_a_tensor_not_in_its_shard(
    repo: Repository, tmp_path: Path, rng: np.random.Generator
) -> None:
    tensors = {k: v[:4].copy() for k, v in list(tiny_model(rng).items())[:4]}
    d = tmp_path / "ckpt"
    weight_map = write_safetensors_shards(d, tensors, split(sorted(tensors), [2, 2]))
    weight_map["ghost.weight"] = "model-00001-of-00002.safetensors"
    write_index(d / "model.safetensors.index.json", weight_map, 0)
    result = repo.commit(d, "ghost")
    (warning,) = result.warnings
    assert "1 tensor(s)" in warning and "'ghost.weight'" in warning


@pytest.mark.parametrize(
    "text",
    ["not json", "[]", '{"metadata": {}}', '{"weight_map": {"a": "../x.safetensors"}}'],
)
def test_unusable_index_is_opaque_with_a_warning(
    repo: Repository, tmp_path: Path, text: str
) -> None:
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "model.safetensors.index.json").write_text(text)
    save_file({"a": np.ones(2, dtype=np.float32)}, str(d / "model.safetensors"))
    result = repo.commit(d, "bad index")
    (warning,) = result.warnings
    assert "not a usable shard index" in warning
    files = {f.path: f for f in repo.show(result.id).files}
    assert files["model.safetensors.index.json"].format == "opaque"
    assert set(repo.load(result.id)) == {"a"}


def test_pytorch_shards(repo: Repository, tmp_path: Path, rng: np.random.Generator) -> None:
    tensors = tiny_model(rng)
    names = sorted(tensors)
    d = tmp_path / "ckpt"
    d.mkdir()
    files = shard_names(2, "bin", "pytorch_model")
    weight_map = {}
    for f, group in zip(files, split(names, [6, len(names) - 6]), strict=True):
        torch.save({n: torch.from_numpy(tensors[n]) for n in group}, d / f)
        weight_map.update({n: f for n in group})
    write_index(d / "pytorch_model.bin.index.json", weight_map, 0)
    assert detect("pytorch_model.bin.index.json").name == "hf-index"
    result = repo.commit(d, "torch shards")
    assert result.warnings == ()
    assert_same(repo.load(result.id, file="pytorch_model.bin.index.json"), tensors)
    assert_same(repo.load(result.id), tensors)
    repo.restore(result.id, tmp_path / "out")
    for p in d.iterdir():
        assert (tmp_path / "out" / p.name).read_bytes() == p.read_bytes()

    # The same tensors as safetensors shards: the tensor bytes are already stored.
    tensor_bytes = sum(a.nbytes for a in tensors.values())
    st = tmp_path / "st"
    write_safetensors_shards(st, tensors, split(names, [3, len(names) - 3]))
    converted = repo.commit(st, "converted")
    assert converted.new_stored_size < tensor_bytes // 100
    loaded = repo.load(converted.id, file="model.safetensors.index.json")
    for name in names:
        assert loaded[name].tobytes() == from_torch(torch.from_numpy(tensors[name])).tobytes()
