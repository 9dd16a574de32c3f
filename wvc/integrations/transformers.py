"""A Hugging Face ``Trainer`` callback that commits every saved checkpoint to wvc.

::

    from wvc.integrations.transformers import WvcCallback

    trainer = Trainer(..., callbacks=[WvcCallback("runs", branch="run-1")])

Each time the Trainer saves ``checkpoint-<step>``, the directory is committed
(its files at the root of the commit) with ``step``, ``epoch`` and the latest
logged metrics (``loss``, ``eval_loss``, ...) as meta. Commits are synchronous:
when ``on_save`` returns, the checkpoint is in the repository, and a failed
commit raises, stopping training with the error. This module imports
transformers; ``import wvc`` never does.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from ..errors import InputError, NotARepositoryError, PathNotFoundError
from ..manifest import MetaValue
from ..ops.commit import CommitResult
from ..refs import RefKind, validate_name
from ..repository import Repository

__all__ = ["WvcCallback", "metrics_at"]

logger = logging.get_logger(__name__)

# Training state left out with ``include_optimizer=False``: needed to resume, not to use the model.
OPTIMIZER_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt")
RNG_STATE_PREFIX = "rng_state"
RNG_STATE_SUFFIX = ".pth"


def metrics_at(log_history: list[dict[str, Any]], step: int) -> dict[str, MetaValue]:
    """The latest value of every finite scalar metric logged at or before ``step``.

    Later entries override earlier ones; ``step`` and ``epoch`` are skipped
    (the callback records its own), as are strings, lists, NaN and infinities.
    """
    out: dict[str, MetaValue] = {}
    for entry in log_history:
        if entry.get("step", 0) > step:
            continue
        for key, value in entry.items():
            if key not in ("step", "epoch") and (scalar := _scalar(value)) is not None:
                out[key] = scalar
    return out


def _scalar(value: object) -> bool | int | float | None:
    """``value`` as a finite Python number (numpy scalars included), else None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(value):
        return float(value)
    return None


def _is_training_state(name: str) -> bool:
    return name in OPTIMIZER_FILES or (
        name.startswith(RNG_STATE_PREFIX) and name.endswith(RNG_STATE_SUFFIX)
    )


class WvcCallback(TrainerCallback):  # type: ignore[misc]  # transformers is untyped to mypy
    """Commit each checkpoint the Trainer saves, with its step, epoch and metrics as meta.

    ``repo`` is a :class:`~wvc.Repository` or the path of one; a path with no
    repository is initialised unless ``create=False``. ``branch`` receives the
    commits without moving HEAD (``None``: the current branch). ``message``
    is formatted with ``step`` and ``epoch``. With ``include_optimizer=False``
    the optimizer, scheduler and RNG states are not committed. Every
    :class:`~wvc.ops.commit.CommitResult` is kept in :attr:`commits`.
    """

    def __init__(
        self,
        repo: str | os.PathLike[str] | Repository = ".",
        *,
        branch: str | None = None,
        message: str = "step {step}",
        include_optimizer: bool = True,
        create: bool = True,
    ) -> None:
        if branch is not None:
            validate_name(branch, RefKind.BRANCH)  # fail before training, not at the first save
        self.repo = repo if isinstance(repo, Repository) else _open_repo(repo, create)
        self.branch = branch
        self.message = message
        self.include_optimizer = include_optimizer
        self.commits: list[CommitResult] = []
        self._warned: set[str] = set()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Commit ``<output_dir>/checkpoint-<global_step>`` (on the main process only)."""
        if not state.is_world_process_zero:
            return
        step = int(state.global_step)
        epoch = float(state.epoch or 0.0)
        ckpt = Path(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}")
        if not ckpt.is_dir():
            raise PathNotFoundError(str(ckpt), "checkpoint directory not found")
        meta: dict[str, MetaValue] = {
            **metrics_at(state.log_history, step),
            "step": step,
            "epoch": epoch,
        }
        result = self.repo.commit(
            self._paths(ckpt),
            self.message.format(step=step, epoch=epoch),
            meta,
            branch=self.branch,
        )
        self.commits.append(result)
        for warning in result.warnings:
            # Warnings name files as stored, so the same one at every save (a pickled
            # file stored opaque) is logged once.
            if warning not in self._warned:
                self._warned.add(warning)
                logger.warning("wvc: %s", warning)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Nothing to wait for: every commit finished (or raised) inside ``on_save``."""

    def _paths(self, ckpt: Path) -> list[Path]:
        """The checkpoint directory itself, or its entries minus the training state."""
        if self.include_optimizer:
            return [ckpt]
        entries = sorted(ckpt.iterdir())
        kept = [p for p in entries if not _is_training_state(p.name)]
        if len(kept) == len(entries):
            return [ckpt]
        return kept


def _open_repo(path: str | os.PathLike[str], create: bool) -> Repository:
    try:
        return Repository.open(path, search_parents=False)
    except NotARepositoryError:
        if not create:
            raise InputError(
                f"{Path(path).absolute()}: not a wvc repository; run 'wvc init' there "
                "or pass create=True",
                str(path),
            ) from None
    return Repository.init(path)
