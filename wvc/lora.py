"""LoRA adapters in PEFT's layout: extract one from two versions, merge one into a version.

An adapter directory holds ``adapter_config.json`` (``r``, ``lora_alpha``,
``target_modules``, ``modules_to_save``...) and ``adapter_model.safetensors``
whose keys are ``base_model.model.<module>.lora_A.weight`` (r x in) and
``.lora_B.weight`` (out x r), ``lora_embedding_A`` / ``lora_embedding_B`` for
embeddings, and ``base_model.model.<module>.<param>`` for modules saved whole.
Merging follows PEFT's ``merge_and_unload``: ``W += scale * (B @ A)`` with
``scale = lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA), the product computed in
float32 and added in the weight's dtype.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .dtypes import DType
from .errors import InputError, TargetNotEmptyError
from .formats.safetensors import encode_file, read_file
from .ingest import default_workers
from .lowrank import factorize
from .manifest import MetaValue
from .ops._staging import staged_directory, write_file
from .ops.commit import CommitResult
from .ops.delta import _whole
from .ops.diff import _side
from .ops.restore import snapshot
from .ops.rewrite import NewTensor, commit_edits, new_tensor
from .ops.tensors import TensorLocation, read_tensor, tensor_map

if TYPE_CHECKING:
    from .repository import Repository

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
KEY_PREFIX = "base_model.model."
# Modules whose 2-D weight is an embedding table (PEFT adapts them with lora_embedding_A/B).
EMBEDDING_NAMES = ("*embed*", "wte", "wpe", "shared", "*embeddings")


@dataclass(frozen=True)
class LoraModule:
    module: str
    tensor: str
    shape: tuple[int, ...]
    embedding: bool
    energy: float | None = None  # fraction of ||B - A||² kept (extract)

    def to_json(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "tensor": self.tensor,
            "shape": list(self.shape),
            "embedding": self.embedding,
            "energy": self.energy,
        }


@dataclass(frozen=True)
class ExtractResult:
    path: str
    rank: int
    alpha: float
    modules: tuple[LoraModule, ...]
    modules_to_save: tuple[str, ...]
    not_representable: tuple[tuple[str, str], ...]  # (tensor, reason)
    size: int  # bytes of adapter_model.safetensors

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "rank": self.rank,
            "lora_alpha": self.alpha,
            "modules": [m.to_json() for m in self.modules],
            "modules_to_save": list(self.modules_to_save),
            "not_representable": [{"tensor": t, "reason": r} for t, r in self.not_representable],
            "size": self.size,
        }


@dataclass(frozen=True)
class MergeResult:
    adapter: str
    onto: str
    prefix: tuple[str, str]  # (adapter module prefix removed, checkpoint prefix added)
    modules: tuple[LoraModule, ...]
    replaced: tuple[str, ...]  # tensors taken whole from modules_to_save
    commit: CommitResult | None = None
    to: str | None = None
    warnings: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "adapter": self.adapter,
            "onto": self.onto,
            "prefix": {"strip": self.prefix[0], "add": self.prefix[1]},
            "modules": [m.to_json() for m in self.modules],
            "replaced": list(self.replaced),
            "commit": self.commit.to_json() if self.commit else None,
            "to": self.to,
            "warnings": list(self.warnings),
        }


def is_embedding(module: str) -> bool:
    leaf = module.rsplit(".", 1)[-1]
    return any(fnmatch.fnmatchcase(leaf, p) for p in EMBEDDING_NAMES)


# --- extract -------------------------------------------------------------------------


def extract(
    repo: Repository,
    a: str,
    b: str,
    out: str | os.PathLike[str],
    *,
    rank: int,
    alpha: float | None = None,
    target: str | None = None,
    path: str | None = None,
) -> ExtractResult:
    """Write a PEFT LoRA adapter of rank ``rank`` approximating ``b - a`` into ``out``.

    Every changed 2-D float ``<module>.weight`` (matching the ``target`` glob
    on tensor names) becomes a LoRA module; other changed tensors go to
    ``modules_to_save`` when their module is not adapted, else they are
    reported as not representable.
    """
    if rank < 1:
        raise InputError(f"--rank must be at least 1, not {rank}")
    alpha = float(rank) if alpha is None else alpha
    if not alpha > 0:
        raise InputError(f"--alpha must be positive, not {alpha}")
    out_dir = Path(out)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise TargetNotEmptyError(str(out_dir))
    with ThreadPoolExecutor(default_workers(), thread_name_prefix="wvc-lora") as pool:
        _, side_a = _side(repo, a, path, pool)
        _, side_b = _side(repo, b, path, pool)
        changed = []
        for name in sorted(side_b):
            ta, tb = side_a.get(name), side_b[name]
            if ta is None or ta.digest != tb.digest:
                changed.append(name)
        weights: dict[str, np.ndarray] = {}
        modules: list[LoraModule] = []
        lossless: list[str] = []  # changed tensors that need modules_to_save
        skipped: list[tuple[str, str]] = []
        scale = alpha / rank
        for name in changed:
            ta, tb = side_a.get(name), side_b[name]
            module = name[: -len(".weight")] if name.endswith(".weight") else None
            if target is not None and not fnmatch.fnmatchcase(name, target):
                skipped.append((name, "not matched by --target"))
                continue
            if (
                ta is None
                or module is None
                or len(tb.shape) != 2
                or ta.dtype is not tb.dtype
                or ta.shape != tb.shape
                or not tb.dtype.is_float
                or tb.dtype.bits < 16
                or tb.dtype.name.startswith("C")
            ):
                lossless.append(name)
                continue
            xa = _whole(ta).reshape(tb.shape).astype(np.float32)
            xb = _whole(tb).reshape(tb.shape).astype(np.float32)
            with np.errstate(all="ignore"):
                d = xb - xa
            if not np.any(d):
                continue
            if not np.isfinite(d).all():
                skipped.append((name, "change is not finite (inf or NaN)"))
                continue
            f = factorize(d, rank=rank)
            root = np.sqrt(f.s / scale).astype(np.float32)
            left = (f.u * root).astype(np.float32)  # out x r
            right = (root[:, None] * f.vt).astype(np.float32)  # r x in
            r = f.rank
            if r < rank:  # pad: PEFT expects every module to have rank r
                left = np.pad(left, ((0, 0), (0, rank - r)))
                right = np.pad(right, ((0, rank - r), (0, 0)))
            emb = is_embedding(module)
            key = KEY_PREFIX + module
            if emb:  # W (num x dim) += (B @ A).T with A: r x num, B: dim x r
                weights[key + ".lora_embedding_A"] = np.ascontiguousarray(left.T)
                weights[key + ".lora_embedding_B"] = np.ascontiguousarray(right.T)
            else:
                weights[key + ".lora_A.weight"] = right
                weights[key + ".lora_B.weight"] = left
            modules.append(LoraModule(module, name, tb.shape, emb, f.energy))
        adapted = {m.module for m in modules}
        to_save: set[str] = set()
        not_representable = list(skipped)
        for name in lossless:
            module = name.rsplit(".", 1)[0] if "." in name else None
            if name not in side_a:
                not_representable.append((name, "added tensor"))
            elif module is None:
                not_representable.append((name, "not inside a module"))
            elif module in adapted:
                not_representable.append((name, f"its module {module} is LoRA-adapted"))
            else:
                to_save.add(module)
        for name in sorted(set(side_a) - set(side_b)):
            not_representable.append((name, "removed tensor"))
        for module in sorted(to_save):
            for name, tb in side_b.items():
                if name.startswith(module + ".") and "." not in name[len(module) + 1 :]:
                    weights[KEY_PREFIX + name] = _whole(tb).reshape(tb.shape)
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": alpha,
        "target_modules": sorted(adapted),
        "modules_to_save": sorted(to_save) or None,
        "bias": "none",
        "fan_in_fan_out": False,
        "lora_dropout": 0.0,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "rank_pattern": {},
        "alpha_pattern": {},
        "task_type": None,
        "base_model_name_or_path": None,
    }
    size = _write_adapter(out_dir, config, weights)
    return ExtractResult(
        str(out_dir),
        rank,
        alpha,
        tuple(modules),
        tuple(sorted(to_save)),
        tuple(not_representable),
        size,
    )


def _write_adapter(out: Path, config: dict[str, Any], weights: dict[str, np.ndarray]) -> int:
    with staged_directory(out) as staging:
        size = write_file(staging.file(WEIGHTS_FILE), encode_file(weights, {"format": "pt"}))
        text = (json.dumps(config, indent=2) + "\n").encode()
        write_file(staging.file(CONFIG_FILE), [text])
    return size


# --- merge ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Adapter:
    config: dict[str, Any]
    lora: dict[str, dict[str, np.ndarray]]  # module -> {"A", "B", "bias"?, "embedding"?}
    saved: dict[str, np.ndarray]  # module-relative tensor name -> array (modules_to_save)


def read_adapter(adapter: str | os.PathLike[str]) -> _Adapter:
    """An adapter directory, checked: a LoRA config and safetensors weights in PEFT's layout."""
    d = Path(adapter)
    cfg_path = d / CONFIG_FILE
    if not cfg_path.is_file():
        raise InputError(f"{d}: no {CONFIG_FILE} (not a PEFT adapter directory)", str(d))
    try:
        config = json.loads(cfg_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{cfg_path}: not valid JSON: {e}", str(cfg_path)) from None
    if not isinstance(config, dict):
        raise InputError(f"{cfg_path}: not a JSON object", str(cfg_path))
    if config.get("peft_type", "LORA") != "LORA":
        raise InputError(f"{cfg_path}: peft_type {config.get('peft_type')!r} is not LORA")
    if config.get("use_dora"):
        raise InputError(f"{cfg_path}: DoRA adapters (use_dora) cannot be merged by wvc yet")
    for key in ("r", "lora_alpha"):
        v = config.get(key)
        if not isinstance(v, int | float) or isinstance(v, bool) or not v > 0:
            raise InputError(f"{cfg_path}: {key} must be a positive number")
    weights_path = d / WEIGHTS_FILE
    if not weights_path.is_file():
        if (d / "adapter_model.bin").is_file():
            raise InputError(
                f"{d}: adapter_model.bin (pickle) is not read by wvc; save the adapter "
                "with safe_serialization=True",
                str(d),
            )
        raise InputError(f"{d}: no {WEIGHTS_FILE}", str(d))
    _, tensors = read_file(weights_path)
    lora: dict[str, dict[str, np.ndarray]] = {}
    saved: dict[str, np.ndarray] = {}
    suffixes = {
        ".lora_A.weight": "A",
        ".lora_B.weight": "B",
        ".lora_B.bias": "bias",
        ".lora_embedding_A": "EA",
        ".lora_embedding_B": "EB",
    }
    for key, arr in tensors.items():
        if not key.startswith(KEY_PREFIX):
            raise InputError(f"{weights_path}: key {key!r} does not start with {KEY_PREFIX!r}")
        rest = key[len(KEY_PREFIX) :]
        if rest.endswith(".lora_magnitude_vector") or ".lora_magnitude_vector." in rest:
            raise InputError(f"{weights_path}: DoRA magnitude {key!r} cannot be merged by wvc yet")
        for suffix, role in suffixes.items():
            if rest.endswith(suffix):
                lora.setdefault(rest[: -len(suffix)], {})[role] = arr
                break
        else:
            if ".lora_" in rest:
                raise InputError(f"{weights_path}: unknown LoRA key {key!r}")
            # Whole modules (modules_to_save) and base layers PEFT saves next to
            # adapted embeddings (save_embedding_layers) replace the model's tensor.
            saved[rest.replace(".modules_to_save.", ".").replace(".base_layer.", ".")] = arr
    for module, parts in lora.items():
        if not ({"A", "B"} <= set(parts) or {"EA", "EB"} <= set(parts)):
            raise InputError(f"{weights_path}: module {module!r} lacks its lora_A or lora_B")
        a = parts.get("A", parts.get("EA"))
        b = parts.get("B", parts.get("EB"))
        assert a is not None and b is not None
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise InputError(
                f"{weights_path}: module {module!r}: lora_A {list(a.shape)} and lora_B "
                f"{list(b.shape)} do not share a rank"
            )
    return _Adapter(config, lora, saved)


def _pattern(patterns: Any, module: str) -> Any:
    """PEFT's rank_pattern / alpha_pattern lookup: a key matches a module name's tail."""
    if not isinstance(patterns, dict):
        return None
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):  # as PEFT's get_pattern_key
            return value
    return None


def scaling(config: Mapping[str, Any], module: str, r: int) -> float:
    alpha = _pattern(config.get("alpha_pattern"), module) or config["lora_alpha"]
    if config.get("use_rslora"):
        return float(alpha) / math.sqrt(r)
    return float(alpha) / r


def infer_prefix(modules: list[str], names: set[str]) -> tuple[tuple[str, str], list[str]]:
    """(strip, add) so that ``add + module[len(strip):] + '.weight'`` names a tensor, and the
    modules it leaves unmatched: the mapping matching most modules (then the longest common
    tail) wins."""
    if not modules:
        return ("", ""), []
    first = modules[0]
    parts = first.split(".")
    best: tuple[tuple[str, str], list[str]] = (("", ""), list(modules))
    for i in range(len(parts)):
        tail = ".".join(parts[i:])
        strip = first[: len(first) - len(tail)]
        for n in sorted(names):
            if n == tail + ".weight" or n.endswith("." + tail + ".weight"):
                add = n[: len(n) - len(tail + ".weight")]
                missing = [
                    m
                    for m in modules
                    if not (m.startswith(strip) and add + m[len(strip) :] + ".weight" in names)
                ]
                if not missing:
                    return (strip, add), []
                if len(missing) < len(best[1]):
                    best = ((strip, add), missing)
    return best


def _parse_prefix(prefix: str) -> tuple[str, str]:
    if "=" in prefix:
        strip, add = prefix.split("=", 1)
        return strip, add
    return "", prefix


def merge(
    repo: Repository,
    adapter: str | os.PathLike[str],
    onto: str = "HEAD",
    *,
    message: str | None = None,
    meta: dict[str, MetaValue] | None = None,
    branch: str | None = None,
    prefix: str | None = None,
    to: str | os.PathLike[str] | None = None,
) -> MergeResult:
    """Merge a PEFT LoRA adapter into ``onto`` and commit the merged model as its child.

    ``prefix`` maps adapter module names to tensor names: ``"P"`` puts ``P``
    in front, ``"OLD=NEW"`` replaces a leading ``OLD``; by default it is
    inferred from the tensors of ``onto``.
    """
    ad = read_adapter(adapter)
    cid, tree = snapshot(repo, onto)
    locations = tensor_map(repo, tree, None)
    names = set(locations)
    modules = sorted(ad.lora)
    if prefix is not None:
        mapping = _parse_prefix(prefix)
    else:
        mapping, missing = infer_prefix(modules, names)
        if missing:
            raise InputError(
                f"{adapter}: cannot match module {missing[0]!r} to a tensor of {onto}; "
                "name the mapping with --prefix"
            )
    strip, add = mapping

    def tensor_name(module: str, leaf: str) -> str:
        if not module.startswith(strip):
            raise InputError(f"{adapter}: module {module!r} does not start with {strip!r}")
        return add + module[len(strip) :] + "." + leaf

    def location(name: str, module: str) -> TensorLocation:
        loc = locations.get(name)
        if loc is None:
            raise InputError(f"{adapter}: module {module!r} has no tensor {name!r} in {onto}")
        return loc

    edits: dict[str, NewTensor | None] = {}
    merged = []
    fan_in_fan_out = bool(ad.config.get("fan_in_fan_out"))
    for module in modules:
        parts = ad.lora[module]
        name = tensor_name(module, "weight")
        loc = location(name, module)
        t = loc.tensor
        if not t.dtype.is_float or t.dtype.bits < 16 or len(t.shape) != 2:
            raise InputError(
                f"{adapter}: {name} is {t.dtype.name}{list(t.shape)}, not a float matrix"
            )
        emb = "EA" in parts
        a, b = (parts["EA"], parts["EB"]) if emb else (parts["A"], parts["B"])
        r = a.shape[0]
        # As PEFT on CPU: the product in float32 (float64 for float64 adapters), rounded to
        # the adapter's dtype; Linear layers add it to the weight in the wider of the two
        # dtypes, embeddings round it to the weight's dtype first.
        work = np.float64 if b.dtype == np.float64 else np.float32
        delta = (b.astype(work) @ a.astype(work)) * work(scaling(ad.config, module, r))
        delta = delta.astype(b.dtype)
        if emb:
            delta = delta.astype(t.dtype.numpy())
        if emb or fan_in_fan_out:
            delta = delta.T
        if delta.shape != t.shape:
            raise InputError(
                f"{adapter}: module {module!r} changes a {list(delta.shape)} matrix but "
                f"{name} is {list(t.shape)}"
            )
        # PEFT loads a saved base layer (save_embedding_layers) before merging into it.
        saved_w = ad.saved.get(_rel(strip, add, name))
        if saved_w is not None and tuple(saved_w.shape) != t.shape:
            raise InputError(
                f"{adapter}: saved base layer of {module!r} is {list(saved_w.shape)} but "
                f"{name} is {list(t.shape)} (resized embeddings are not supported)"
            )
        w = read_tensor(repo.objects, loc) if saved_w is None else saved_w
        edits[name] = new_tensor(t.dtype, t.shape, _add(w.astype(t.dtype.numpy()), delta, t.dtype))
        if "bias" in parts:
            bname = tensor_name(module, "bias")
            bloc = location(bname, module)
            saved_b = ad.saved.get(_rel(strip, add, bname))  # bias="all": trained bias
            bias = read_tensor(repo.objects, bloc) if saved_b is None else saved_b
            lb = parts["bias"]
            bdelta = (lb.astype(work) * work(scaling(ad.config, module, r))).astype(lb.dtype)
            edits[bname] = new_tensor(
                bloc.tensor.dtype,
                bloc.tensor.shape,
                _add(bias.astype(bloc.tensor.dtype.numpy()), bdelta, bloc.tensor.dtype),
            )
        merged.append(LoraModule(module, name, t.shape, emb))
    replaced = []
    for rel, arr in sorted(ad.saved.items()):
        module, leaf = rel.rsplit(".", 1) if "." in rel else ("", rel)
        name = tensor_name(module, leaf) if module else add + leaf
        loc = location(name, module)
        t = loc.tensor
        if tuple(arr.shape) != t.shape:
            raise InputError(
                f"{adapter}: saved tensor {rel!r} is {list(arr.shape)} but {name} is "
                f"{list(t.shape)}"
            )
        value = arr if arr.dtype == t.dtype.numpy() else arr.astype(t.dtype.numpy())
        if name not in edits:  # else merged into above
            edits[name] = new_tensor(t.dtype, t.shape, value)
        replaced.append(name)
    _, result = commit_edits(
        repo,
        cid,
        onto,
        tree,
        edits,
        message=message or f"Merge LoRA adapter {Path(adapter).name}",
        meta=meta,
        branch=branch,
        to=to,
    )
    return MergeResult(
        str(adapter),
        cid,
        mapping,
        tuple(merged),
        tuple(replaced),
        result,
        None if to is None else str(to),
    )


def _rel(strip: str, add: str, name: str) -> str:
    """The adapter-relative name of a checkpoint tensor (inverse of the prefix mapping)."""
    return strip + name[len(add) :] if name.startswith(add) else name


def _add(w: np.ndarray, delta: np.ndarray, dtype: DType) -> np.ndarray:
    """``w + delta`` the way torch's in-place add does it: in float32 (float64 if either
    is float64), rounded once to the weight's dtype."""
    compute = np.float64 if np.float64 in (w.dtype, delta.dtype) else np.float32
    with np.errstate(over="ignore", invalid="ignore"):
        out: np.ndarray = (w.astype(compute) + delta.astype(compute)).astype(dtype.numpy())
    return out
