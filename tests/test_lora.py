"""LoRA adapters in PEFT's layout (wvc.lora and ``wvc lora``), checked against real PEFT.

Tiny transformers models are built from configs (no downloads). Merges are
compared bit for bit with PEFT's ``merge_and_unload`` on CPU; extracted
adapters are loaded back with ``PeftModel.from_pretrained``.
"""

from __future__ import annotations

import copy
import functools
import json
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from wvc import lora as wl  # noqa: E402
from wvc.cli import cli  # noqa: E402
from wvc.errors import InputError, RefError, TargetNotEmptyError  # noqa: E402
from wvc.repository import Repository  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning:peft.*", "ignore::FutureWarning:transformers.*"
)

LLAMA = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=False,
)
GPT2 = dict(
    vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
)
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
Q0 = "model.layers.0.self_attn.q_proj"


# --- helpers --------------------------------------------------------------------------


@functools.cache
def _base(arch: str, dtype: str) -> Any:
    torch.manual_seed(0)
    if arch == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA))
    else:
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**GPT2))
    return model.to(getattr(torch, dtype)).eval()


def base_model(arch: str = "llama", dtype: str = "float32") -> Any:
    """A fresh copy of the tiny model (same weights every time)."""
    return copy.deepcopy(_base(arch, dtype))


def save_base(directory: Path, arch: str = "llama", dtype: str = "float32", **kw: Any) -> Path:
    base_model(arch, dtype).save_pretrained(directory, **kw)
    return directory


def train_adapter(model: Any, out: Path, seed: int = 1, **config: Any) -> Any:
    """A PEFT model with every trainable parameter moved off its initial value, as after
    training, saved to ``out``."""
    pm = peft.get_peft_model(model, peft.LoraConfig(**config))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in pm.named_parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=g).to(p.dtype))
    pm.save_pretrained(out)
    return pm


def merged_state(pm: Any) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in pm.merge_and_unload().state_dict().items()}


def raw(x: Any) -> bytes:
    """The exact bytes of a torch tensor or numpy array."""
    if isinstance(x, torch.Tensor):
        return bytes(x.detach().contiguous().reshape(-1).view(torch.uint8).numpy())
    return np.ascontiguousarray(x).tobytes()


def f32(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().numpy()
    return np.asarray(x).astype(np.float32)


def assert_bit_identical(ref: Mapping[str, Any], got: Mapping[str, np.ndarray]) -> None:
    bad = {}
    for name, arr in got.items():
        r = ref[name]
        if tuple(r.shape) != arr.shape or raw(r) != raw(arr):
            bad[name] = float(np.max(np.abs(f32(r) - f32(arr))))
    assert not bad, f"differ from PEFT (max abs error): {bad}"


def stored(repo: Repository) -> tuple[list[str], int]:
    """What a failed operation must leave alone: the history and the object count."""
    return [e.id for e in repo.log()], repo.stats().objects


def rank_r(
    rng: np.random.Generator, shape: tuple[int, ...], r: int, scale: float = 0.1
) -> np.ndarray:
    """An exact rank-``r`` float32 matrix."""
    return (rng.standard_normal((shape[0], r)) @ rng.standard_normal((r, shape[1])) * scale).astype(
        np.float32
    )


@pytest.fixture
def llama_repo(tmp_path: Path) -> Iterator[tuple[Repository, Any]]:
    """A repository whose main holds the tiny fp32 Llama as saved by save_pretrained."""
    repo = Repository.init(tmp_path / "repo")
    c0 = repo.commit(save_base(tmp_path / "base"), "base")
    yield repo, c0
    repo.close()


# --- 1. merge == PEFT merge_and_unload ------------------------------------------------

MERGE_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama-embedding-modules_to_save": (
        "llama",
        dict(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "v_proj", "embed_tokens"],
            modules_to_save=["lm_head"],
        ),
    ),
    "llama-all-linear-alpha<r": (
        "llama",
        dict(r=8, lora_alpha=3, target_modules="all-linear", modules_to_save=["model.norm"]),
    ),
    "llama-rslora": (
        "llama",
        dict(r=3, lora_alpha=5, use_rslora=True, target_modules=["q_proj", "v_proj", "o_proj"]),
    ),
    "llama-rank-and-alpha-pattern": (
        "llama",
        dict(
            r=4,
            lora_alpha=5,
            target_modules=["q_proj", "v_proj"],
            rank_pattern={"layers.1.self_attn.q_proj": 2},
            alpha_pattern={"layers.1.self_attn.q_proj": 7},
        ),
    ),
    "llama-anchored-pattern": (
        "llama",
        dict(
            r=4,
            lora_alpha=5,
            target_modules=["q_proj", "v_proj"],
            rank_pattern={"^model.layers.0.self_attn.v_proj": 6},
            alpha_pattern={"^model.layers.0.self_attn.v_proj": 3},
        ),
    ),
    # PEFT matches a pattern key as re.match(rf"(.*\.)?({key})$", module): the key is one
    # group, so an alternation applies to the whole module name's tail.
    "llama-alternation-pattern": (
        "llama",
        dict(
            r=4,
            lora_alpha=5,
            target_modules=["q_proj", "v_proj"],
            alpha_pattern={"q_proj|v_proj": 7},
        ),
    ),
    "gpt2-conv1d-fan_in_fan_out-wpe-ln_f": (
        "gpt2",
        dict(
            r=4,
            lora_alpha=5,
            target_modules=["c_attn", "c_proj", "c_fc", "wpe"],
            fan_in_fan_out=True,
            modules_to_save=["ln_f"],
        ),
    ),
    "gpt2-lora_bias": (
        "gpt2",
        dict(r=4, lora_alpha=5, target_modules=["c_attn"], fan_in_fan_out=True, lora_bias=True),
    ),
    "gpt2-bias-all": (
        "gpt2",
        dict(r=4, lora_alpha=5, target_modules=["c_attn"], fan_in_fan_out=True, bias="all"),
    ),
    # Trained biases are saved whole (bias="all") and the adapted c_attn also has a LoRA bias:
    # PEFT loads the saved bias, then adds lora_B.bias * scaling to it.
    "gpt2-bias-all-and-lora_bias": (
        "gpt2",
        dict(
            r=4,
            lora_alpha=5,
            target_modules=["c_attn"],
            fan_in_fan_out=True,
            bias="all",
            lora_bias=True,
        ),
    ),
}


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("case", MERGE_CASES.keys())
def test_merge_is_bit_identical_to_peft_merge_and_unload(
    tmp_path: Path, case: str, dtype: str
) -> None:
    arch, config = MERGE_CASES[case]
    base_dir = save_base(tmp_path / "base", arch, dtype)
    with Repository.init(tmp_path / "repo") as repo:
        c0 = repo.commit(base_dir, "base")
        pm = train_adapter(base_model(arch, dtype), tmp_path / "adapter", **config)
        n_lora = sum(1 for _, m in pm.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer))
        ref = merged_state(pm)
        res = wl.merge(repo, tmp_path / "adapter", "main", message="merge")
        assert res.commit is not None
        got = repo.load(res.commit.id)
        before = repo.load(c0.id)

    assert len(res.modules) == n_lora > 0
    assert res.prefix == ("", "")
    # GPT-2 ties lm_head to wte, so its checkpoint has no lm_head.weight.
    assert set(ref) - set(got) == ({"lm_head.weight"} if arch == "gpt2" else set())
    assert set(got) <= set(ref)
    assert_bit_identical(ref, got)
    # The merge did something: every adapted weight moved.
    for m in res.modules:
        assert raw(got[m.tensor]) != raw(before[m.tensor]), m.tensor


def test_rank_pattern_gives_modules_their_own_rank(tmp_path: Path) -> None:
    """The pattern case above really exercises a second rank and alpha."""
    _, config = MERGE_CASES["llama-rank-and-alpha-pattern"]
    pm = train_adapter(base_model(), tmp_path / "ad", **config)
    ad = wl.read_adapter(tmp_path / "ad")
    assert ad.lora["model.layers.1.self_attn.q_proj"]["A"].shape == (2, 32)
    assert ad.lora["model.layers.0.self_attn.q_proj"]["A"].shape == (4, 32)
    assert wl.scaling(ad.config, "model.layers.1.self_attn.q_proj", 2) == 7 / 2
    assert wl.scaling(ad.config, "model.layers.0.self_attn.q_proj", 4) == 5 / 4
    assert pm.base_model.model.model.layers[1].self_attn.q_proj.scaling["default"] == 7 / 2


def test_scaling_follows_peft() -> None:
    cfg = {"lora_alpha": 8, "r": 4}
    assert wl.scaling(cfg, "a.q_proj", 4) == 2.0
    assert wl.scaling({**cfg, "use_rslora": True}, "a.q_proj", 4) == 8 / 2
    pat = {**cfg, "alpha_pattern": {"q_proj": 3}}
    assert wl.scaling(pat, "model.layers.0.q_proj", 4) == 3 / 4
    assert wl.scaling(pat, "model.layers.0.xq_proj", 4) == 2.0  # a tail, not a substring


# --- 2. the merged commit ---------------------------------------------------------------


def test_merge_commit_is_child_on_branch_and_stores_only_adapted_tensors(
    tmp_path: Path, same_tree: Callable[[Path, Path], None]
) -> None:
    base_dir = save_base(tmp_path / "base", max_shard_size="40KB")
    assert (base_dir / "model.safetensors.index.json").is_file()  # sharded
    with Repository.init(tmp_path / "repo") as repo:
        c0 = repo.commit(base_dir, "base")
        pm = train_adapter(
            base_model(), tmp_path / "ad", r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]
        )
        ref = merged_state(pm)
        res = wl.merge(repo, tmp_path / "ad", "main", message="merged", meta={"kind": "lora"})
        c = res.commit
        assert c is not None
        adapted = {
            f"model.layers.{i}.self_attn.{p}.weight" for i in (0, 1) for p in ("q_proj", "v_proj")
        }
        assert {m.tensor for m in res.modules} == adapted
        assert res.replaced == ()

        # A child of the revision, on its branch, which moved; HEAD follows main.
        assert c.parents == (c0.id,)
        assert c.branch == "main"
        assert repo.resolve("main") == c.id
        assert repo.head().target == c.id
        entry = repo.log(limit=1)[0]
        assert (entry.id, entry.message, entry.meta) == (c.id, "merged", {"kind": "lora"})

        # Only the adapted tensors changed; the others keep their digests.
        d = repo.diff(c0.id, c.id)
        status = {t.name: t.status for t in d.tensors}
        assert {n for n, s in status.items() if s != "unchanged"} == adapted
        assert {status[n] for n in adapted} == {"modified"}
        assert len(status) == len(ref)

        # Only their bytes are new: a small fraction of the model.
        adapted_bytes = sum(ref[n].numel() * 4 for n in adapted)
        model_bytes = sum(v.numel() * 4 for v in ref.values())
        assert c.logical_size == c0.logical_size
        assert c.new_stored_size <= adapted_bytes + 8192
        assert c.new_stored_size < model_bytes / 4

        # The commit restores as a checkpoint transformers loads, equal to PEFT's merge.
        repo.restore(c.id, tmp_path / "restored")
        loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "restored")
        assert_bit_identical(ref, {k: v.numpy() for k, v in loaded.state_dict().items()})

        # --to writes the same files and commits nothing.
        log_before = stored(repo)
        res_to = wl.merge(repo, tmp_path / "ad", c0.id, to=tmp_path / "out")
        assert res_to.commit is None and res_to.to == str(tmp_path / "out")
        assert stored(repo)[0] == log_before[0]
        same_tree(tmp_path / "restored", tmp_path / "out")


def test_merge_onto_an_older_revision(llama_repo: Any, tmp_path: Path) -> None:
    repo, c0 = llama_repo
    train_adapter(base_model(), tmp_path / "ad", r=2, lora_alpha=2, target_modules=["q_proj"])
    first = wl.merge(repo, tmp_path / "ad", "main").commit
    assert first is not None
    # main has moved on: merging onto c0 needs a branch for the result.
    before = stored(repo)
    with pytest.raises(RefError, match="--branch"):
        wl.merge(repo, tmp_path / "ad", c0.id)
    assert stored(repo)[0] == before[0]
    second = wl.merge(repo, tmp_path / "ad", c0.id, branch="lora").commit
    assert second is not None
    assert second.parents == (c0.id,) and second.branch == "lora"
    assert repo.resolve("lora") == second.id
    assert repo.resolve("main") == first.id
    # Same adapter onto the same revision: the same tree, nothing new stored but the commit.
    assert repo.diff(first.id, second.id).differs is False
    assert second.new_objects == 1


# --- 3. extract -----------------------------------------------------------------------


def extract_fixture(
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A and B: B = A + exact rank-3 (or less) changes on some 2-D weights, plus a norm and
    a bias of an adapted module changed."""
    a = {
        Q0 + ".weight": rng.standard_normal((24, 16)).astype(np.float32),
        Q0 + ".bias": rng.standard_normal(24).astype(np.float32),
        "model.layers.0.self_attn.k_proj.weight": rng.standard_normal((8, 16)).astype(np.float32),
        "model.layers.0.mlp.up_proj.weight": rng.standard_normal((40, 16)).astype(np.float32),
        "model.embed_tokens.weight": rng.standard_normal((50, 16)).astype(np.float32),
        "model.norm.weight": np.ones(16, np.float32),
        "model.layers.0.input_layernorm.weight": np.ones(16, np.float32),
        "tiny.weight": rng.standard_normal((2, 16)).astype(np.float32),
    }
    b = dict(a)
    b[Q0 + ".weight"] = a[Q0 + ".weight"] + rank_r(rng, (24, 16), 3)
    b["model.layers.0.mlp.up_proj.weight"] = a["model.layers.0.mlp.up_proj.weight"] + rank_r(
        rng, (40, 16), 2
    )
    b["model.embed_tokens.weight"] = a["model.embed_tokens.weight"] + rank_r(rng, (50, 16), 3)
    b["tiny.weight"] = a["tiny.weight"] + rank_r(rng, (2, 16), 2)  # rank 2 < r: padded
    b["model.norm.weight"] = a["model.norm.weight"] + rng.standard_normal(16).astype(np.float32)
    b[Q0 + ".bias"] = a[Q0 + ".bias"] + 1
    return a, b


ADAPTED = {Q0, "model.layers.0.mlp.up_proj", "model.embed_tokens", "tiny"}


@pytest.mark.parametrize("alpha", [None, 8.0])
def test_extract_exact_low_rank_change(
    repo: Repository, tmp_path: Path, rng: np.random.Generator, alpha: float | None
) -> None:
    a, b = extract_fixture(rng)
    ca = repo.commit_tensors(a, message="a")
    cb = repo.commit_tensors(b, message="b")
    out = tmp_path / "ad"
    ex = wl.extract(repo, ca.id, cb.id, out, rank=3, alpha=alpha)

    assert ex.rank == 3 and ex.alpha == (alpha or 3.0)
    assert {m.module for m in ex.modules} == ADAPTED
    for m in ex.modules:
        assert m.energy is not None and m.energy > 1 - 1e-6, m
        assert m.tensor == m.module + ".weight" and m.shape == a[m.tensor].shape
        assert m.embedding == (m.module == "model.embed_tokens")
    assert ex.modules_to_save == ("model.norm",)
    assert ex.not_representable == ((Q0 + ".bias", f"its module {Q0} is LoRA-adapted"),)

    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert config["r"] == 3 and config["lora_alpha"] == (alpha or 3.0)
    assert config["target_modules"] == sorted(ADAPTED)
    assert config["modules_to_save"] == ["model.norm"]
    weights = safetensors_numpy.load_file(out / "adapter_model.safetensors")
    assert ex.size == (out / "adapter_model.safetensors").stat().st_size
    p = "base_model.model."
    assert weights[p + Q0 + ".lora_A.weight"].shape == (3, 16)
    assert weights[p + Q0 + ".lora_B.weight"].shape == (24, 3)
    assert weights[p + "tiny.lora_A.weight"].shape == (3, 16)  # padded to r
    assert weights[p + "model.embed_tokens.lora_embedding_A"].shape == (3, 50)
    assert weights[p + "model.embed_tokens.lora_embedding_B"].shape == (16, 3)
    assert raw(weights[p + "model.norm.weight"]) == raw(b["model.norm.weight"])
    assert len(weights) == 2 * len(ADAPTED) + 1

    # Merging the adapter back onto A gives B (the bias it could not carry stays A's).
    res = wl.merge(repo, out, ca.id, branch="merged")
    assert res.replaced == ("model.norm.weight",)
    got = repo.load("merged")
    for module in ADAPTED:
        name = module + ".weight"
        np.testing.assert_allclose(got[name], b[name], rtol=0, atol=1e-5, err_msg=name)
        assert not np.array_equal(got[name], a[name])
    for name in ("model.norm.weight", "model.layers.0.input_layernorm.weight"):
        assert raw(got[name]) == raw(b[name])
    for name in (Q0 + ".bias", "model.layers.0.self_attn.k_proj.weight"):
        assert raw(got[name]) == raw(a[name])


def test_extract_truncated_rank_reports_energy_kept(
    repo: Repository, tmp_path: Path, rng: np.random.Generator
) -> None:
    a, b = extract_fixture(rng)
    ca = repo.commit_tensors(a)
    cb = repo.commit_tensors(b)
    ex = wl.extract(repo, ca.id, cb.id, tmp_path / "ad", rank=1, target=Q0 + ".weight")
    (m,) = ex.modules
    s = np.linalg.svd(b[Q0 + ".weight"] - a[Q0 + ".weight"], compute_uv=False).astype(np.float64)
    assert m.energy == pytest.approx(s[0] ** 2 / np.sum(s**2), rel=1e-5)
    assert 0.2 < m.energy < 0.99


def test_extract_target_glob_limits_modules(
    repo: Repository, tmp_path: Path, rng: np.random.Generator
) -> None:
    a, b = extract_fixture(rng)
    ca = repo.commit_tensors(a)
    cb = repo.commit_tensors(b)
    ex = wl.extract(repo, ca.id, cb.id, tmp_path / "ad", rank=3, target="*proj.weight")
    assert {m.module for m in ex.modules} == {Q0, "model.layers.0.mlp.up_proj"}
    assert ex.modules_to_save == ()
    left_out = dict(ex.not_representable)
    assert set(left_out) == {
        Q0 + ".bias",
        "model.embed_tokens.weight",
        "model.norm.weight",
        "tiny.weight",
    }
    assert left_out["model.norm.weight"] == "not matched by --target"
    config = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert config["target_modules"] == sorted([Q0, "model.layers.0.mlp.up_proj"])
    assert config["modules_to_save"] is None


def test_extract_refuses_bad_arguments(repo: Repository, tmp_path: Path) -> None:
    c = repo.commit_tensors({"m.weight": np.ones((2, 2), np.float32)})
    with pytest.raises(InputError, match="--rank"):
        wl.extract(repo, c.id, c.id, tmp_path / "a", rank=0)
    with pytest.raises(InputError, match="--alpha"):
        wl.extract(repo, c.id, c.id, tmp_path / "a", rank=1, alpha=0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(TargetNotEmptyError):
        wl.extract(repo, c.id, c.id, tmp_path / "full", rank=1)
    assert (tmp_path / "full" / "x").read_text() == "x"


def test_extracted_adapter_loads_in_peft_and_merges_like_wvc(
    llama_repo: Any, tmp_path: Path
) -> None:
    repo, c0 = llama_repo
    rng = np.random.default_rng(3)
    sd = {k: v.numpy().copy() for k, v in base_model().state_dict().items()}
    changed_2d = [
        Q0 + ".weight",
        "model.layers.1.self_attn.o_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.embed_tokens.weight",
        "lm_head.weight",
    ]
    for name in changed_2d:
        sd[name] = sd[name] + rank_r(rng, sd[name].shape, 4, 0.05)
    norms = ["model.norm.weight", "model.layers.1.input_layernorm.weight"]
    for name in norms:
        sd[name] = sd[name] + rng.standard_normal(sd[name].shape).astype(np.float32)
    ft = tmp_path / "ft"
    shutil.copytree(tmp_path / "base", ft)
    safetensors_numpy.save_file(sd, ft / "model.safetensors", metadata={"format": "pt"})
    c1 = repo.commit(ft, "fine-tuned")

    ex = wl.extract(repo, c0.id, c1.id, tmp_path / "ad", rank=4)
    assert {m.tensor for m in ex.modules} == set(changed_2d)
    assert all(m.energy is not None and m.energy > 1 - 1e-6 for m in ex.modules)
    assert ex.modules_to_save == ("model.layers.1.input_layernorm", "model.norm")
    assert ex.not_representable == ()

    pm = peft.PeftModel.from_pretrained(base_model(), tmp_path / "ad")
    ref = merged_state(pm)
    res = wl.merge(repo, tmp_path / "ad", c0.id, branch="merged")
    got = repo.load("merged")
    assert set(got) == set(ref)
    for name, arr in got.items():
        np.testing.assert_allclose(arr, ref[name].numpy(), rtol=0, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(arr, sd[name], rtol=0, atol=1e-5, err_msg=name)
    for name in norms:  # modules_to_save round-trip exactly, through PEFT and wvc
        assert raw(ref[name]) == raw(sd[name]) == raw(got[name])
    assert set(res.replaced) == set(norms)
    # The untouched tensors are untouched.
    d = repo.diff(c0.id, "merged")
    assert {t.name for t in d.tensors if t.status != "unchanged"} == set(changed_2d) | set(norms)


# --- 4. module prefixes ---------------------------------------------------------------


@pytest.fixture
def inner_adapter(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """An adapter on the full LlamaForCausalLM (modules 'model.layers...') and PEFT's merge."""
    pm = train_adapter(
        base_model(),
        tmp_path / "ad",
        r=2,
        lora_alpha=3,
        target_modules=["q_proj", "v_proj"],
        modules_to_save=["model.norm"],
    )
    return tmp_path / "ad", merged_state(pm)


def renamed(state: Mapping[str, Any], old: str, new: str) -> dict[str, np.ndarray]:
    return {new + k[len(old) :]: v.numpy() for k, v in state.items() if k.startswith(old)}


@pytest.mark.parametrize("prefix", [None, "model.="])
def test_prefix_stripped_for_a_checkpoint_of_the_inner_model(
    repo: Repository, inner_adapter: tuple[Path, dict[str, Any]], prefix: str | None
) -> None:
    adapter, ref = inner_adapter
    # Saved from model.model: tensor names lack the leading "model.".
    c0 = repo.commit_tensors(renamed(base_model().state_dict(), "model.", ""))
    res = wl.merge(repo, adapter, c0.id, prefix=prefix)
    assert res.prefix == ("model.", "")
    assert res.modules[0].tensor == "layers.0.self_attn.q_proj.weight"
    assert res.replaced == ("norm.weight",)
    got = repo.load()
    assert set(got) == {k[len("model.") :] for k in ref if k.startswith("model.")}
    assert_bit_identical(renamed(ref, "model.", ""), got)


@pytest.mark.parametrize("prefix", [None, "model.=decoder."])
def test_prefix_replaced(
    repo: Repository, inner_adapter: tuple[Path, dict[str, Any]], prefix: str | None
) -> None:
    adapter, ref = inner_adapter
    c0 = repo.commit_tensors(renamed(base_model().state_dict(), "model.", "decoder."))
    res = wl.merge(repo, adapter, c0.id, prefix=prefix)
    assert res.prefix == ("model.", "decoder.")
    assert_bit_identical(renamed(ref, "model.", "decoder."), repo.load())


@pytest.mark.parametrize("prefix", [None, "model."])
def test_prefix_added_for_an_adapter_of_the_inner_model(
    llama_repo: Any, tmp_path: Path, prefix: str | None
) -> None:
    repo, _ = llama_repo
    full = base_model()
    # PEFT on full.model (a LlamaModel): module names "layers.0.self_attn.q_proj".
    pm = train_adapter(full.model, tmp_path / "ad", r=2, lora_alpha=3, target_modules=["q_proj"])
    assert "base_model.model.layers.0.self_attn.q_proj.lora_A.weight" in (
        safetensors_numpy.load_file(tmp_path / "ad" / "adapter_model.safetensors")
    )
    pm.merge_and_unload()
    ref = {k: v.detach().clone() for k, v in full.state_dict().items()}  # the outer model
    res = wl.merge(repo, tmp_path / "ad", "main", prefix=prefix)
    assert res.prefix == ("", "model.")
    got = repo.load()
    assert_bit_identical(ref, got)
    assert raw(got[Q0 + ".weight"]) != raw(base_model().state_dict()[Q0 + ".weight"])


def add_module(adapter: Path, module: str, r: int = 2, shape: tuple[int, int] = (32, 32)) -> None:
    """Add a LoRA module's A and B to an adapter's weights."""
    path = adapter / "adapter_model.safetensors"
    w = safetensors_numpy.load_file(path)
    w[f"base_model.model.{module}.lora_A.weight"] = np.ones((r, shape[1]), np.float32)
    w[f"base_model.model.{module}.lora_B.weight"] = np.ones((shape[0], r), np.float32)
    safetensors_numpy.save_file(w, path, metadata={"format": "pt"})


def test_unmatched_module_names_the_module_and_suggests_prefix(
    llama_repo: Any, inner_adapter: tuple[Path, dict[str, Any]]
) -> None:
    repo, _ = llama_repo
    adapter, _ = inner_adapter
    # Layer 7 does not exist; the other modules match the checkpoint as they are.
    add_module(adapter, "model.layers.7.self_attn.q_proj")
    before = stored(repo)
    with pytest.raises(InputError) as e:
        wl.merge(repo, adapter, "main")
    assert "model.layers.7.self_attn.q_proj" in str(e.value)
    assert "--prefix" in str(e.value)
    assert stored(repo) == before


def test_adapter_with_no_matching_module(repo: Repository, tmp_path: Path) -> None:
    repo.commit_tensors({"encoder.w.weight": np.zeros((32, 32), np.float32)})
    ad = tmp_path / "ad"
    ad.mkdir()
    (ad / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 2})
    )
    safetensors_numpy.save_file({}, ad / "adapter_model.safetensors")
    add_module(ad, "decoder.q")
    with pytest.raises(InputError, match=r"'decoder\.q'.*--prefix"):
        wl.merge(repo, ad)
    with pytest.raises(InputError, match=r"'decoder\.q' has no tensor 'x\.decoder\.q\.weight'"):
        wl.merge(repo, ad, prefix="x.")
    with pytest.raises(InputError, match=r"'decoder\.q' does not start with 'enc'"):
        wl.merge(repo, ad, prefix="enc=")
    res = wl.merge(repo, ad, prefix="decoder.q=encoder.w")
    assert res.modules[0].tensor == "encoder.w.weight"
    assert np.all(repo.load()["encoder.w.weight"] == 2 * 1.0)  # B @ A = 2, scale 1


def test_infer_prefix() -> None:
    names = {"model.layers.0.q.weight", "model.layers.1.q.weight", "lm_head.weight"}
    assert wl.infer_prefix(["model.layers.0.q", "model.layers.1.q"], names) == (("", ""), [])
    assert wl.infer_prefix(["layers.0.q"], names) == (("", "model."), [])
    assert wl.infer_prefix(["base.model.layers.0.q", "base.lm_head"], names) == (("base.", ""), [])
    # The mapping that matches most modules wins; the ones it leaves out are named.
    assert wl.infer_prefix(["model.layers.0.q", "model.layers.2.q"], names) == (
        ("", ""),
        ["model.layers.2.q"],
    )
    assert wl.infer_prefix(["nothing.here"], names)[1] == ["nothing.here"]
    assert wl.infer_prefix([], names) == (("", ""), [])


# --- 5. bad adapters --------------------------------------------------------------------

P = "base_model.model."
BAD_MODULE = "model.layers.0.q"


@pytest.fixture
def small(repo: Repository, tmp_path: Path) -> tuple[Repository, Callable[..., Path]]:
    """A checkpoint with one 8x6 matrix and a norm, and a maker of valid adapters for it."""
    repo.commit_tensors(
        {
            BAD_MODULE + ".weight": np.ones((8, 6), np.float32),
            "model.norm.weight": np.ones(6, np.float32),
        }
    )

    def make(name: str = "ad") -> Path:
        d = tmp_path / name
        d.mkdir()
        config = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q"]}
        (d / "adapter_config.json").write_text(json.dumps(config))
        weights = {
            P + BAD_MODULE + ".lora_A.weight": np.full((2, 6), 0.5, np.float32),
            P + BAD_MODULE + ".lora_B.weight": np.full((8, 2), 0.25, np.float32),
            P + "model.norm.weight": np.full(6, 3.0, np.float32),
        }
        safetensors_numpy.save_file(weights, d / "adapter_model.safetensors")
        return d

    return repo, make


def test_small_adapter_is_valid(small: tuple[Repository, Callable[..., Path]]) -> None:
    repo, make = small
    res = wl.merge(repo, make())
    assert res.commit is not None
    got = repo.load()
    assert np.all(got[BAD_MODULE + ".weight"] == 1 + 2 * (2 * 0.5 * 0.25))
    assert np.all(got["model.norm.weight"] == 3.0)


def _edit_weights(fn: Callable[[dict[str, np.ndarray]], None]) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        w = safetensors_numpy.load_file(d / "adapter_model.safetensors")
        fn(w)
        safetensors_numpy.save_file(w, d / "adapter_model.safetensors")

    return edit


def _edit_config(**changes: Any) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        config = json.loads((d / "adapter_config.json").read_text())
        config.update(changes)
        (d / "adapter_config.json").write_text(json.dumps(config))

    return edit


def _bin_only(d: Path) -> None:
    (d / "adapter_model.safetensors").rename(d / "adapter_model.bin")


BAD_ADAPTERS: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "no-config": (lambda d: (d / "adapter_config.json").unlink(), ["no adapter_config.json"]),
    "config-not-json": (
        lambda d: (d / "adapter_config.json").write_text("{"),
        ["adapter_config.json", "not valid JSON"],
    ),
    "no-weights": (
        lambda d: (d / "adapter_model.safetensors").unlink(),
        ["no adapter_model.safetensors"],
    ),
    "bin-only": (_bin_only, ["adapter_model.bin", "safe_serialization=True"]),
    "dora": (_edit_config(use_dora=True), ["adapter_config.json", "DoRA"]),
    "dora-magnitude": (
        _edit_weights(
            lambda w: w.update({P + BAD_MODULE + ".lora_magnitude_vector": np.ones(8, np.float32)})
        ),
        ["adapter_model.safetensors", "DoRA magnitude", BAD_MODULE],
    ),
    "not-lora": (_edit_config(peft_type="LOHA"), ["adapter_config.json", "'LOHA'", "not LORA"]),
    "r-zero": (_edit_config(r=0), ["adapter_config.json", "r must be a positive number"]),
    "alpha-missing": (_edit_config(lora_alpha=None), ["lora_alpha must be a positive number"]),
    "lora_A-without-lora_B": (
        _edit_weights(lambda w: w.pop(P + BAD_MODULE + ".lora_B.weight")),
        ["adapter_model.safetensors", f"module {BAD_MODULE!r}", "lora_B"],
    ),
    "rank-mismatch": (
        _edit_weights(
            lambda w: w.update({P + BAD_MODULE + ".lora_B.weight": np.ones((8, 3), np.float32)})
        ),
        ["adapter_model.safetensors", f"module {BAD_MODULE!r}", "[2, 6]", "[8, 3]", "rank"],
    ),
    "shape-mismatch": (
        _edit_weights(
            lambda w: w.update({P + BAD_MODULE + ".lora_A.weight": np.ones((2, 7), np.float32)})
        ),
        [f"module {BAD_MODULE!r}", "[8, 7]", f"{BAD_MODULE}.weight is [8, 6]"],
    ),
    "saved-shape-mismatch": (
        _edit_weights(lambda w: w.update({P + "model.norm.weight": np.ones(7, np.float32)})),
        ["'model.norm.weight' is [7]", "model.norm.weight is [6]"],
    ),
    "lora-on-a-vector": (
        _edit_weights(
            lambda w: w.update(
                {
                    P + "model.norm.lora_A.weight": np.ones((2, 6), np.float32),
                    P + "model.norm.lora_B.weight": np.ones((6, 2), np.float32),
                }
            )
        ),
        ["model.norm.weight is F32[6], not a float matrix"],
    ),
    "unknown-lora-key": (
        _edit_weights(
            lambda w: w.update({P + BAD_MODULE + ".lora_C.weight": np.ones(2, np.float32)})
        ),
        ["unknown LoRA key", "lora_C"],
    ),
    "foreign-key": (
        _edit_weights(lambda w: w.update({"model.x": np.ones(2, np.float32)})),
        ["'model.x' does not start with 'base_model.model.'"],
    ),
}


@pytest.mark.parametrize("case", BAD_ADAPTERS.keys())
def test_bad_adapter_is_refused_and_nothing_is_committed(
    small: tuple[Repository, Callable[..., Path]], case: str
) -> None:
    repo, make = small
    mutate, words = BAD_ADAPTERS[case]
    d = make()
    mutate(d)
    before = stored(repo)
    with pytest.raises(InputError) as e:
        wl.merge(repo, d, message="should not happen")
    message = str(e.value)
    assert str(d) in message
    for w in words:
        assert w in message
    assert stored(repo) == before


def test_real_peft_dora_adapter_is_refused(llama_repo: Any, tmp_path: Path) -> None:
    repo, _ = llama_repo
    train_adapter(
        base_model(), tmp_path / "dora", r=2, lora_alpha=2, target_modules=["q_proj"], use_dora=True
    )
    before = stored(repo)
    with pytest.raises(InputError, match="DoRA"):
        wl.merge(repo, tmp_path / "dora")
    assert stored(repo) == before


# --- 6. the command line ----------------------------------------------------------------


def invoke(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def ok(*args: object) -> Result:
    res = invoke(*args)
    assert res.exit_code == 0, (args, res.exit_code, res.stdout, res.stderr)
    return res


@pytest.fixture
def cli_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_ckpt: Any, rng: np.random.Generator
) -> tuple[Path, dict[str, np.ndarray], dict[str, np.ndarray], str, str]:
    monkeypatch.delenv("WVC_DIR", raising=False)
    monkeypatch.delenv("WVC_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    a, b = extract_fixture(rng)
    write_ckpt(tmp_path / "ck1", {"model.safetensors": a, "config.json": "{}\n"})
    write_ckpt(tmp_path / "ck2", {"model.safetensors": b, "config.json": "{}\n"})
    ok("init")
    ca = json.loads(ok("commit", "ck1", "-m", "a", "--json").stdout)["id"]
    cb = json.loads(ok("commit", "ck2", "-m", "b", "--json").stdout)["id"]
    return tmp_path, a, b, ca, cb


def test_cli_extract_and_apply(cli_work: Any) -> None:
    tmp, _, b, ca, cb = cli_work
    out = json.loads(ok("lora", "extract", ca, cb, "--rank", "3", "-o", "ad", "--json").stdout)
    assert out["path"] == "ad" and out["rank"] == 3 and out["lora_alpha"] == 3.0
    assert {m["module"] for m in out["modules"]} == ADAPTED
    assert all(m["energy"] > 1 - 1e-6 for m in out["modules"])
    assert out["modules_to_save"] == ["model.norm"]
    assert out["not_representable"] == [
        {"tensor": Q0 + ".bias", "reason": f"its module {Q0} is LoRA-adapted"}
    ]
    assert out["size"] == (tmp / "ad" / "adapter_model.safetensors").stat().st_size

    text = ok("lora", "extract", ca, cb, "-r", "3", "-o", "ad2")
    assert text.stdout.startswith("wrote ad2: 4 LoRA module(s) at rank 3, 1 module(s) to save")
    assert "model.embed_tokens" in text.stdout and "embedding" in text.stdout
    assert "saved whole: model.norm" in text.stdout
    assert f"not in the adapter: {Q0}.bias" in text.stderr

    # HEAD is at B, so merging onto A names a branch for the result.
    applied = json.loads(
        ok("lora", "apply", "ad", "--onto", ca, "-b", "merged", "-m", "msg", "--json").stdout
    )
    assert applied["onto"] == ca
    assert applied["prefix"] == {"strip": "", "add": ""}
    assert applied["replaced"] == ["model.norm.weight"]
    assert applied["commit"]["parents"] == [ca] and applied["commit"]["branch"] == "merged"
    log = json.loads(ok("log", "merged", "--json").stdout)
    assert log[0]["id"] == applied["commit"]["id"] and log[0]["message"] == "msg"
    got = Repository.open(tmp).load("merged")
    np.testing.assert_allclose(got[Q0 + ".weight"], b[Q0 + ".weight"], rtol=0, atol=1e-5)
    assert raw(got["model.norm.weight"]) == raw(b["model.norm.weight"])

    text = ok("lora", "apply", "ad", "--onto", ca, "-b", "merged2")
    assert text.stdout.startswith("[merged2 ")
    assert "merged 4 LoRA module(s), replaced 1 tensor(s) onto " + ca[:12] in text.stdout


def test_cli_apply_to_directory_commits_nothing(cli_work: Any) -> None:
    tmp, _, b, ca, cb = cli_work
    ok("lora", "extract", ca, cb, "--rank", "3", "-o", "ad")
    log_before = ok("log", "--json").stdout
    res = json.loads(ok("lora", "apply", "ad", "--onto", ca, "--to", "out", "--json").stdout)
    assert res["commit"] is None and res["to"] == "out"
    assert ok("log", "--json").stdout == log_before
    assert sorted(p.name for p in (tmp / "out").iterdir()) == ["config.json", "model.safetensors"]
    written = safetensors_numpy.load_file(tmp / "out" / "model.safetensors")
    np.testing.assert_allclose(written[Q0 + ".weight"], b[Q0 + ".weight"], rtol=0, atol=1e-5)
    text = ok("lora", "apply", "ad", "--onto", ca, "--to", "out2")
    assert (
        text.stdout.strip()
        == f"merged 4 LoRA module(s), replaced 1 tensor(s) onto {ca[:12]} into out2"
    )


def test_cli_errors(cli_work: Any) -> None:
    tmp, _, _, ca, cb = cli_work
    (tmp / "empty").mkdir()
    log_before = ok("log", "--json").stdout
    res = invoke("lora", "apply", "empty", "--onto", ca, "-b", "x")
    assert res.exit_code == 5
    assert res.stderr.startswith("wvc: error: empty: no adapter_config.json")
    ok("lora", "extract", ca, cb, "--rank", "3", "-o", "ad")
    res = invoke("lora", "apply", "ad", "--onto", ca, "-b", "x", "--prefix", "nope.")
    assert res.exit_code == 5 and "has no tensor 'nope." in res.stderr
    res = invoke("lora", "extract", ca, cb, "--rank", "3", "-o", "ad")  # not empty
    assert res.exit_code == 5 and "ad: target directory is not empty" in res.stderr
    res = invoke("lora", "extract", ca, cb, "--rank", "0", "-o", "ad3")
    assert res.exit_code == 2  # click's usage error
    assert not (tmp / "ad3").exists()
    assert ok("log", "--json").stdout == log_before
