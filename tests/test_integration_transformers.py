"""WvcCallback with a real Trainer: a tiny GPT-2 built from its config, trained on CPU."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from wvc.errors import InputError, PathNotFoundError, RefError  # noqa: E402
from wvc.integrations.transformers import WvcCallback, metrics_at  # noqa: E402
from wvc.repository import Repository  # noqa: E402

VOCAB, SEQ = 100, 8


class TokenDataset(torch.utils.data.Dataset):
    """``n`` random token sequences; the labels are the inputs (causal LM)."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, VOCAB, (n, SEQ), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def train(out: Path, callbacks: list[Any], max_steps: int = 6) -> Any:
    """Train a tiny GPT-2 for ``max_steps``, saving and evaluating every 2 steps."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=SEQ, n_embd=32, n_layer=2, n_head=2
    )
    args = transformers.TrainingArguments(
        output_dir=str(out),
        max_steps=max_steps,
        save_steps=2,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=2,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        report_to=[],
        use_cpu=True,
        save_total_limit=None,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = transformers.Trainer(
        model=transformers.GPT2LMHeadModel(config),
        args=args,
        train_dataset=TokenDataset(32, seed=1),
        eval_dataset=TokenDataset(8, seed=2),
        callbacks=callbacks,
    )
    trainer.train()
    return trainer


def files(directory: Path) -> set[str]:
    """The names in a (flat) checkpoint directory."""
    return {p.name for p in directory.iterdir()}


def logged(history: list[dict[str, Any]], step: int, key: str) -> Any:
    return next(e[key] for e in history if e.get("step") == step and key in e)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One training run onto branch run-1 of a repository whose HEAD is on main."""
    tmp = tmp_path_factory.mktemp("hf")
    repo = Repository.init(tmp / "repo")
    base = repo.commit_tensors({"w": np.zeros(3, np.float32)}, message="base")
    callback = WvcCallback(tmp / "repo", branch="run-1")
    records = Records()
    logger = logging.getLogger("wvc.integrations.transformers")
    logger.addHandler(records)
    try:
        trainer = train(tmp / "out", [callback])
    finally:
        logger.removeHandler(records)
    yield {
        "tmp": tmp,
        "repo": repo,
        "base": base,
        "callback": callback,
        "trainer": trainer,
        "warnings": [r.getMessage() for r in records.records],
    }
    callback.repo.close()
    repo.close()


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_one_commit_per_save_on_the_branch(run: dict[str, Any]) -> None:
    repo: Repository = run["repo"]
    callback: WvcCallback = run["callback"]
    entries = repo.log("run-1")
    assert [e.meta.get("step") for e in entries] == [6, 4, 2, None]
    assert entries[-1].id == run["base"].id  # run-1 was branched from main's commit
    assert [c.id for c in callback.commits] == [e.id for e in reversed(entries[:3])]
    assert [e.message for e in entries[:3]] == ["step 6", "step 4", "step 2"]
    assert all(c.branch == "run-1" for c in callback.commits)


def test_each_commit_warning_is_logged_once(run: dict[str, Any]) -> None:
    commits = run["callback"].commits
    # training_args.bin and rng_state.pth are pickles wvc will not unpickle: stored opaque.
    assert all(any("training_args.bin" in w for w in c.warnings) for c in commits)
    warnings = run["warnings"]
    assert len(warnings) == len(set(warnings)) == len(commits[0].warnings) > 0
    assert any(w.startswith("wvc: training_args.bin: ") for w in warnings)


def test_head_branch_is_not_moved(run: dict[str, Any]) -> None:
    repo: Repository = run["repo"]
    head = repo.head()
    assert head.branch == "main" and head.target == run["base"].id
    assert repo.resolve("main") == run["base"].id


def test_meta_holds_step_epoch_and_latest_metrics(run: dict[str, Any]) -> None:
    repo: Repository = run["repo"]
    history = run["trainer"].state.log_history
    # The train summary (train_runtime, ...) is logged at the last step but after its save.
    assert "train_runtime" in history[-1]
    during = history[:-1]
    for entry in repo.log("run-1")[:3]:
        meta, step = entry.meta, entry.meta["step"]
        assert isinstance(step, int)
        assert meta["epoch"] == pytest.approx(logged(history, step, "epoch"))
        assert isinstance(meta["epoch"], float)
        assert meta["loss"] == logged(history, step, "loss")
        assert meta["eval_loss"] == logged(history, step, "eval_loss")
        assert meta["learning_rate"] == logged(history, step, "learning_rate")
        assert meta == {**metrics_at(during, step), "step": step, "epoch": meta["epoch"]}
        assert "train_runtime" not in meta


def test_best_checkpoint_by_eval_loss(run: dict[str, Any]) -> None:
    repo: Repository = run["repo"]
    history = run["trainer"].state.log_history
    losses = {logged(history, step, "eval_loss"): step for step in (2, 4, 6)}
    (best,) = repo.log("run-1", where="eval_loss<100", sort="eval_loss", limit=1)
    assert best.meta["step"] == losses[min(losses)]


def test_restore_is_byte_identical_to_each_checkpoint(run: dict[str, Any], same_tree) -> None:
    repo: Repository = run["repo"]
    tmp: Path = run["tmp"]
    for commit in run["callback"].commits:
        step = repo.show(commit.id).commit.meta["step"]
        ckpt = tmp / "out" / f"checkpoint-{step}"
        assert {"model.safetensors", "optimizer.pt", "trainer_state.json"} <= set(files(ckpt))
        restored = tmp / f"restored-{step}"
        repo.restore(commit.id, restored)
        same_tree(ckpt, restored)


def test_load_matches_safetensors(run: dict[str, Any]) -> None:
    repo: Repository = run["repo"]
    tmp: Path = run["tmp"]
    for commit in run["callback"].commits:
        step = repo.show(commit.id).commit.meta["step"]
        expected = safetensors_numpy.load_file(tmp / "out" / f"checkpoint-{step}/model.safetensors")
        loaded = repo.load(commit.id, "model.safetensors")
        assert sorted(loaded) == sorted(expected)
        for name, array in expected.items():
            assert loaded[name].dtype == array.dtype and np.array_equal(loaded[name], array)
        tensors = repo.load_state_dict(commit.id, "model.safetensors", framework="torch")
        assert torch.equal(
            tensors["transformer.wte.weight"], torch.from_numpy(expected["transformer.wte.weight"])
        )


def test_without_optimizer_state(tmp_path: Path) -> None:
    callback = WvcCallback(tmp_path / "repo", include_optimizer=False, message="s{step} e{epoch}")
    train(tmp_path / "out", [callback], max_steps=2)
    repo = callback.repo
    (commit,) = callback.commits
    assert commit.branch == "main" and repo.head().target == commit.id
    assert repo.show(commit.id).commit.message == "s2 e0.25"
    ckpt = tmp_path / "out" / "checkpoint-2"
    left_out = {"optimizer.pt", "scheduler.pt", "rng_state.pth"}
    assert left_out <= set(files(ckpt))
    repo.restore(commit.id, tmp_path / "restored")
    assert set(files(tmp_path / "restored")) == set(files(ckpt)) - left_out
    for name in files(tmp_path / "restored"):
        assert (tmp_path / "restored" / name).read_bytes() == (ckpt / name).read_bytes()
    repo.close()


class DeleteCheckpoint(transformers.TrainerCallback):
    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        shutil.rmtree(Path(args.output_dir, f"checkpoint-{state.global_step}"))


def test_a_failed_commit_stops_training(tmp_path: Path) -> None:
    callback = WvcCallback(Repository.init(tmp_path / "repo"))
    with pytest.raises(PathNotFoundError, match="checkpoint-2: checkpoint directory not found"):
        train(tmp_path / "out", [DeleteCheckpoint(), callback], max_steps=4)
    assert callback.commits == []
    callback.repo.close()


def test_not_a_repository_without_create(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a wvc repository") as info:
        WvcCallback(tmp_path, create=False)
    assert info.value.path == str(tmp_path)
    assert not (tmp_path / ".wvc").exists()


def test_invalid_branch_fails_before_training(tmp_path: Path) -> None:
    with pytest.raises(RefError, match="invalid branch name"):
        WvcCallback(tmp_path, branch="-x")


def test_metrics_at_skips_non_scalars_and_later_steps() -> None:
    history = [
        {"loss": 3.0, "grad_norm": float("nan"), "step": 1, "epoch": 0.5},
        {"loss": 2.0, "grad_norm": np.float32(0.5), "note": "x", "step": 2},
        {"eval_loss": 2.5, "eval_runtime": 0.1, "sizes": [1], "step": 2},
        {"loss": 1.0, "step": 3},
        {"flag": True, "count": np.int64(7), "inf": float("inf"), "step": 2},
    ]
    assert metrics_at(history, 2) == {
        "loss": 2.0,
        "grad_norm": 0.5,
        "eval_loss": 2.5,
        "eval_runtime": 0.1,
        "flag": True,
        "count": 7,
    }


def test_import_wvc_does_not_import_frameworks() -> None:
    code = (
        "import wvc, sys; assert 'transformers' not in sys.modules and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
