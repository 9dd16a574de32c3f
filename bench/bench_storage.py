#!/usr/bin/env python3
"""Storage benchmark: a series of checkpoints in wvc (with and without chunk deltas) against
zstd, DVC and Git LFS: stored bytes, commit throughput, restore of the newest checkpoint.

Usage (from the repository root, in wvc's venv; DVC from ``pip install -e '.[bench]'``,
Git LFS from ``apt-get install git-lfs``; both optional)::

    python bench/bench_storage.py                        # all series, ~17 min on 2 cores
    python bench/bench_storage.py --quick                # smoke run, ~2-3 min
    python bench/bench_storage.py --chain-sweep 1,4,10,20 --json out.json  # ~23 min
    python bench/bench_storage.py --series c --synthetic-size 256MiB --tools wvc-delta,zstd
    python bench/bench_storage.py --code HEAD~1          # another wvc (a revision or a dir)
    python bench/bench_storage.py --series a,b --pretrain-steps 300 --lr 3e-4  # later training
    python bench/bench_storage.py --sensitivity --pretrain-steps 300  # LR x interval table

The script makes its checkpoint series itself (nothing is downloaded); each has
``--checkpoints`` (10) versions of one ``model.safetensors``, every version in a
directory of its own:

* **a-fp32 / a-bf16**: a small LLaMA-like decoder (RMSNorm, RoPE, SwiGLU, untied
  embeddings; HF tensor names; ~9 M parameters, ~37 MB fp32 by default) trained for
  real on CPU (``torch.set_num_threads(--threads)``, everything seeded) with AdamW,
  linear warm-up (10 % of the steps) and cosine decay to 10 % of ``--lr``, on
  synthetic tokens with learnable structure (a random sparse bigram table whose
  successor is picked by the token two back, 5 % noise). A checkpoint every
  ``--every`` steps, written as fp32 (a-fp32) and as its bf16 cast (a-bf16).
  With ``--pretrain-steps P`` (default 0, the above) the series starts later in
  training: first P steps that are neither timed nor saved, with the LR rising
  linearly to ``--pretrain-lr`` (default ``--lr``) over the first ``max(1, P // 10)``
  steps and then held there; then, with the same optimiser (its AdamW moments
  carried over) and the same token stream, the ``--checkpoints`` x ``--every``
  saved steps, with the LR at saved step s (0-based, S = checkpoints x every)
  ``lr * (0.1 + 0.45 * (1 + cos(pi * s / S)))``: ``--lr`` at the first saved step,
  decaying to just above 10 % of it at the last (no second warm-up).
* **b-fp32**: the last a checkpoint fine-tuned (same optimiser and schedule, peak
  ``--ft-lr``, on a different token table) with only the last
  ``--trainable-blocks`` blocks, the final norm and ``lm_head`` trainable; all other
  tensors have ``requires_grad=False`` and are checked to stay bit-identical. The
  bytes stored for the frozen tensors are measured by committing, beside the full
  checkpoints, files holding only the frozen (and only the trainable) tensors into
  repositories of their own: wvc cuts chunks per tensor, aligned to the tensor's
  start, so a tensor has the same chunks in either file.
* **c-bf16**: ``_common.model_shapes('bf16', --synthetic-size)`` (1 GiB) with
  N(0, 0.02) values (norms 1 + N(0, 0.02)) held in fp32; each next version adds
  ``--synthetic-lr * N(0, 1) * |w|`` to every value (a small relative update), and
  every version is written as bf16.

For every series and tool, in one run: **stored** bytes (% of the raw bytes, the
sum of all checkpoint files); **commit MB/s** = raw bytes / the seconds of every
commit step summed over the checkpoints; **restore newest MB/s** = the newest
file's bytes / the seconds of its restore, which is checked byte-identical to the
original (the run stops if it is not). MB = 10^6 bytes. Each timed step is one or
more whole processes (start-up included), followed by a ``sync`` that is timed too,
so every tool's figure includes getting its bytes to disk; the page cache is warm
(inputs read just before, untimed; ``sync`` before every step). The tools:

1. **wvc (no delta)**: ``Repository.commit(dir, message, delta=False)`` (what
   ``wvc commit DIR --no-delta`` runs) per checkpoint, each in a child Python (the
   repository made by ``python -m wvc init``, untimed); stored = ``.wvc/objects``;
   restore = ``Repository.restore("HEAD", out)`` in a child. For wvc the seconds
   timed around the call are shown too ("in-process"); the process figures include
   ~0.5 s of interpreter start-up and imports per step, which dominates for the
   small series. A wvc without the ``delta`` parameter gets a plain commit here,
   like the next row, and the report says so.
2. **wvc (delta)**: the same with wvc's default (chunk deltas against the parent);
   ``wvc stats --json`` gives its per-commit delta / standalone object counts.
3. **zstd -1**: ``zstd -1 -q`` of each file (stored: the .zst files); restore =
   ``zstd -d`` of the newest.
4. **DVC**: ``git init`` + ``dvc init`` (untimed); per checkpoint the file is copied
   into the workspace (untimed), then ``dvc add`` + ``git add`` + ``git commit`` of
   the .dvc file are timed; stored = ``.dvc/cache``; restore = the workspace file
   deleted, ``dvc checkout`` (a copy out of the local cache).
5. **Git LFS**: ``git init`` + ``git lfs install --local`` + ``git lfs track
   '*.safetensors'`` (untimed); per checkpoint the file is copied in (untimed),
   ``git add`` (LFS clean filter) + ``git commit`` timed; stored =
   ``.git/lfs/objects`` (all of ``.git`` in the JSON); restore = the workspace file
   deleted, ``git checkout -- model.safetensors`` (smudge from the local LFS store).

``--sensitivity`` (instead of the series and tools above) shows how the stored size
depends on the regime: one pre-trained state (``--pretrain-steps``, 300 if not given,
at ``--pretrain-lr``, default ``--lr`` = 1e-3; weights, AdamW state and the token
stream's generator saved in the work dir as ``sens-pretrain-P.pt`` and reused by a
later run in the same ``--workdir`` with the same settings), then for each LR in
``--sens-lrs`` (1e-3,3e-4,1e-4) and interval in ``--sens-every`` (10,25) the saved
phase as above (cosine from that LR to 10 % of it over checkpoints x every steps),
every checkpoint written as fp32 and as its bf16 cast; each of the two series is
committed into a new wvc repository with deltas (default) and with ``delta=False``
in one child process (untimed), stored = ``.wvc/objects``, the newest restored and
checked byte-identical. One table: per (lr, every) the loss, the % of bf16 / fp32
elements changed between consecutive checkpoints (median, min-max) and the stored
% of raw. With the defaults: 300 + 3 x (100 + 250) = 1,350 training steps, about
0.6-0.8 s each on 2 cores with ``--threads 1`` (much faster than 2 threads when another
process keeps a core busy), plus ~6.7 GB of checkpoints committed: 20 min 19 s measured
with ``--threads 1`` while other work kept ~0.8 of the 2 cores busy.

``--chain-sweep 1,4,10,20`` repeats the wvc (delta) run of every series with
``WVC_MAX_CHAIN=N`` in wvc's environment and prints stored % and restore MB/s per
N. A block (one tool on one series) is measured again when other work kept the
machine busy (``--max-other-load``; ``--retries`` defaults to 1 here, 0 with
``--quick``), as in the other benchmarks; every table shows the other load its rows
saw. ``--code REV_OR_DIR`` measures another wvc (as in bench_transfer.py); a digest
of the measured ``wvc/*.py`` is compared at start and end. The parent process
imports only the standard library; torch and numpy run in the ``--child``
processes. Disk: about 2 x checkpoints x ``--synthetic-size`` for series c.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    MB,
    REPO_ROOT,
    BenchBase,
    ChildFailed,
    GiB,
    MiB,
    add_run_options,
    child_env,
    child_restore,
    dir_bytes,
    files_identical,
    git_rev,
    human,
    import_check,
    machine_info,
    machine_line,
    make_workdir,
    median,
    model_shapes,
    parse_size,
    run_caveats,
    run_if_child,
    run_measured,
    run_script_child,
    run_session,
    source_hash,
    timed,
    warm_up,
)

MODEL = "model.safetensors"
TOOLS = ("wvc-nodelta", "wvc-delta", "zstd", "dvc", "git-lfs")
LABELS = {
    "wvc-nodelta": "wvc (no delta)",
    "wvc-delta": "wvc (delta, default)",
    "zstd": "zstd -1 per file",
    "dvc": "DVC (local cache)",
    "git-lfs": "Git LFS (local)",
}
TIMED = {
    "wvc-nodelta": "`Repository.commit(dir, delta=False)` / `.restore('HEAD', out)`, each a "
    "child Python (wall incl. interpreter and imports)",
    "wvc-delta": "`Repository.commit(dir)` / `.restore('HEAD', out)`, each a child Python",
    "zstd": "`zstd -1 -q FILE -o FILE.zst` / `zstd -d -q`",
    "dvc": "`dvc add` + `git add` + `git commit` (file copied into the workspace untimed) / "
    "`dvc checkout` of the deleted workspace file (copy from the local cache)",
    "git-lfs": "`git add` (LFS clean filter) + `git commit` (file copied in untimed) / "
    "`git checkout -- model.safetensors` of the deleted file (smudge from .git/lfs)",
}
SERIES = ("a", "b", "c")
ZSTD = "/usr/bin/zstd" if os.access("/usr/bin/zstd", os.X_OK) else "zstd"
# Targets, printed beside the figures.
TARGET_STORED_PCT = {"a-bf16": 40.0, "a-fp32": 70.0}
TARGET_RESTORE_MBPS = 400.0
TARGET_FROZEN_BYTES = 0
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
    "DVC_NO_ANALYTICS": "1",
}
# Run sizes: the default, and --quick (each only where the option was not given).
DEFAULTS: dict[str, Any] = {
    "checkpoints": 10,
    "every": 25,
    "vocab": 8192,
    "hidden": 256,
    "layers": 6,
    "heads": 4,
    "intermediate": 768,
    "seq_len": 128,
    "batch": 8,
    "synthetic_size": GiB,
}
QUICK: dict[str, Any] = {
    "checkpoints": 4,
    "every": 5,
    "vocab": 4096,
    "hidden": 128,
    "layers": 4,
    "heads": 4,
    "intermediate": 384,
    "seq_len": 64,
    "batch": 8,
    "synthetic_size": 64 * MiB,
}


# ----------------------------------------------------------------------------------------------
# Child side: writing checkpoints
# ----------------------------------------------------------------------------------------------


def st_header(specs: list[tuple[str, str, tuple[int, ...], int]]) -> bytes:
    """A safetensors header (length + JSON, padded to 8 bytes) for tensors laid out in order.

    ``specs``: (name, safetensors dtype such as "F32" / "BF16", shape, byte size).
    """
    head: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, dtype, shape, nbytes in specs:
        head[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + nbytes]}
        off += nbytes
    text = json.dumps(head, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def _make_model(c: dict[str, Any]) -> Any:
    """A small LLaMA-like decoder with Hugging Face tensor names (built here: no downloads)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    vocab, dim, n_layers, heads, inter, seq = (
        c["vocab"],
        c["hidden"],
        c["layers"],
        c["heads"],
        c["intermediate"],
        c["seq_len"],
    )
    hd = dim // heads

    class RMSNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(dim))

        def forward(self, x: Any) -> Any:
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight

    def rope(x: Any, cos: Any, sin: Any) -> Any:
        x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q_proj = nn.Linear(dim, dim, bias=False)
            self.k_proj = nn.Linear(dim, dim, bias=False)
            self.v_proj = nn.Linear(dim, dim, bias=False)
            self.o_proj = nn.Linear(dim, dim, bias=False)

        def forward(self, x: Any, cos: Any, sin: Any) -> Any:
            b, t, _ = x.shape
            q, k, v = (
                p(x).view(b, t, heads, hd).transpose(1, 2)
                for p in (self.q_proj, self.k_proj, self.v_proj)
            )
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.o_proj(a.transpose(1, 2).reshape(b, t, dim))

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate_proj = nn.Linear(dim, inter, bias=False)
            self.up_proj = nn.Linear(dim, inter, bias=False)
            self.down_proj = nn.Linear(inter, dim, bias=False)

        def forward(self, x: Any) -> Any:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.input_layernorm = RMSNorm()
            self.self_attn = Attention()
            self.post_attention_layernorm = RMSNorm()
            self.mlp = MLP()

        def forward(self, x: Any, cos: Any, sin: Any) -> Any:
            x = x + self.self_attn(self.input_layernorm(x), cos, sin)
            return x + self.mlp(self.post_attention_layernorm(x))

    class Decoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed_tokens = nn.Embedding(vocab, dim)
            self.layers = nn.ModuleList(Layer() for _ in range(n_layers))
            self.norm = RMSNorm()

    class CausalLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = Decoder()
            self.lm_head = nn.Linear(dim, vocab, bias=False)
            inv = 1.0 / (10000 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
            freqs = torch.outer(torch.arange(seq, dtype=torch.float32), inv)
            self.register_buffer("cos", freqs.cos(), persistent=False)
            self.register_buffer("sin", freqs.sin(), persistent=False)

        def forward(self, idx: Any) -> Any:
            t = idx.shape[1]
            cos, sin = self.cos[:t], self.sin[:t]
            h = self.model.embed_tokens(idx)
            for layer in self.model.layers:
                h = layer(h, cos, sin)
            return self.lm_head(self.model.norm(h))

    m = CausalLM()
    for p in m.parameters():
        if p.dim() == 2:
            nn.init.normal_(p, 0.0, 0.02)
    return m


class _Tokens:
    """Synthetic token streams with learnable structure: token i follows a random sparse
    bigram table ``succ[token i-1]``; which of its successors comes is mostly picked by token
    i-2 (so attention pays), sometimes at random; 5 % of tokens are uniform noise."""

    def __init__(self, vocab: int, seed: int, k: int = 8) -> None:
        import torch

        self.torch = torch
        self.g = torch.Generator().manual_seed(seed)
        self.vocab, self.k = vocab, k
        self.succ = torch.randint(vocab, (vocab, k), generator=self.g)

    def batch(self, b: int, t: int) -> Any:
        torch, g = self.torch, self.g
        x = torch.empty(b, t + 1, dtype=torch.long)
        x[:, :2] = torch.randint(self.vocab, (b, 2), generator=g)
        for i in range(2, t + 1):
            rule = torch.rand(b, generator=g) < 0.75
            j = torch.where(rule, x[:, i - 2] % self.k, torch.randint(self.k, (b,), generator=g))
            nxt = self.succ[x[:, i - 1], j]
            noise = torch.rand(b, generator=g) < 0.05
            x[:, i] = torch.where(noise, torch.randint(self.vocab, (b,), generator=g), nxt)
        return x


def _tensor_bytes(t: Any, dtype: str) -> bytes:
    import torch

    t = t.detach().contiguous()
    if dtype == "bf16":
        return bytes(t.to(torch.bfloat16).view(torch.int16).numpy().tobytes())
    return bytes(t.to(torch.float32).numpy().tobytes())


def _save(path: Path, items: list[tuple[str, Any]], dtype: str) -> tuple[int, dict[str, bytes]]:
    """Write ``items`` (name, tensor) as one safetensors file; return its size and the bytes."""
    blobs = {name: _tensor_bytes(t, dtype) for name, t in items}
    st = "BF16" if dtype == "bf16" else "F32"
    specs = [(name, st, tuple(t.shape), len(blobs[name])) for name, t in items]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(st_header(specs))
        for name, _ in items:
            f.write(blobs[name])
    return path.stat().st_size, blobs


def _changed_fraction(prev: dict[str, bytes] | None, cur: dict[str, bytes], width: int) -> float:
    """Fraction of elements whose bit pattern differs from the previous checkpoint."""
    import numpy as np

    if prev is None:
        return 1.0
    dt = np.uint32 if width == 4 else np.uint16
    changed = total = 0
    for name, b in cur.items():
        x, y = np.frombuffer(prev[name], dtype=dt), np.frombuffer(b, dtype=dt)
        changed += int(np.count_nonzero(x != y))
        total += x.size
    return changed / total


def _log(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def _seed_all(seed: int, threads: int) -> None:
    import random

    import numpy as np
    import torch

    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_warmup_cosine(peak: float, steps: int) -> Callable[[int], float]:
    """Training from scratch (and series b): linear warm-up over the first 10 % of the
    steps, then cosine decay from ``peak`` towards 10 % of it."""
    import math

    warm = max(1, steps // 10)

    def lr(s: int) -> float:
        if s < warm:
            return peak * (s + 1) / warm
        prog = (s - warm) / max(1, steps - warm)
        return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * prog)))

    return lr


def lr_warmup_hold(peak: float, steps: int) -> Callable[[int], float]:
    """The pre-training phase: linear warm-up over its first 10 % of steps, then ``peak``."""
    warm = max(1, steps // 10)
    return lambda s: peak * min(1.0, (s + 1) / warm)


def lr_cosine(peak: float, steps: int) -> Callable[[int], float]:
    """The saved phase after pre-training: ``peak * (0.1 + 0.45 * (1 + cos(pi * s / steps)))``
    at saved step ``s`` (0-based): ``peak`` at the first, ~10 % of it at the last."""
    import math

    return lambda s: peak * (0.1 + 0.45 * (1 + math.cos(math.pi * s / steps)))


def _adamw(params: list[Any], lr: float) -> Any:
    import torch

    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=(0.9, 0.95),
    )


def _train_steps(
    model: Any,
    opt: Any,
    params: list[Any],
    data: _Tokens,
    a: dict[str, Any],
    steps: int,
    lr_at: Callable[[int], float],
    every: int,
    save: Callable[[int, int, float], None] | None,
    label: str = "",
) -> tuple[float, list[float]]:
    """``steps`` AdamW steps (gradient norm clipped to 1) at ``lr_at(s)``; every ``every``
    steps ``save(i, s + 1, mean loss)`` if given. Returns the seconds and the mean losses."""
    import torch
    import torch.nn.functional as F

    c = a["model"]
    t0 = time.perf_counter()
    recent: list[float] = []
    losses: list[float] = []
    for s in range(steps):
        lr = lr_at(s)
        for group in opt.param_groups:
            group["lr"] = lr
        x = data.batch(a["batch"], c["seq_len"])
        logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, c["vocab"]), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        recent.append(float(loss))
        if (s + 1) % every == 0 or s + 1 == steps:
            avg = sum(recent) / len(recent)
            recent.clear()
            losses.append(avg)
            if save is not None and (s + 1) % every == 0:
                save((s + 1) // every - 1, s + 1, avg)
            _log(f"{label}step {s + 1}/{steps} loss {avg:.3f} lr {lr:.2e}")
    return time.perf_counter() - t0, losses


def child_train(a: dict[str, Any]) -> dict[str, Any]:
    """Train the small decoder (series a), then fine-tune its last blocks (series b)."""
    import hashlib

    _seed_all(a["seed"], a["threads"])
    c = a["model"]
    model = _make_model(c)
    root = Path(a["root"])
    n, every = a["checkpoints"], a["every"]
    pre = a.get("pretrain_steps", 0)
    names = [k for k, _ in model.named_parameters()]
    out: dict[str, Any] = {
        "params": sum(p.numel() for p in model.parameters()),
        "tensors": len(names),
        "series": {},
    }

    def new_series(key: str, dtype: str) -> None:
        out["series"][key] = {"dtype": dtype, "dirs": [], "steps": [], "loss": [], "changed": []}

    # --- series a: pre-training, saved as fp32 and as bf16 casts
    prev: dict[str, dict[str, bytes] | None] = {"a-fp32": None, "a-bf16": None}
    for key in prev:
        new_series(key, key[2:])

    def save_a(i: int, step: int, loss: float) -> None:
        items = list(model.state_dict().items())
        for key in ("a-fp32", "a-bf16"):
            s = out["series"][key]
            d = root / key / f"ckpt-{i:02d}"
            size, blobs = _save(d / MODEL, items, s["dtype"])
            s["dirs"].append(str(d))
            s["steps"].append(pre + step)
            s["loss"].append(loss)
            s["file_bytes"] = size
            s["changed"].append(_changed_fraction(prev[key], blobs, 4 if key == "a-fp32" else 2))
            prev[key] = blobs

    params = list(model.parameters())
    data = _Tokens(c["vocab"], a["seed"])
    if pre:
        # Untimed, unsaved: warm-up to --pretrain-lr and hold; the saved phase then
        # decays from --lr with the same optimiser (its moments carried over).
        _log(f"series a: {pre} pre-training steps (not saved)")
        opt = _adamw(params, a["pretrain_lr"])
        secs, losses = _train_steps(
            model,
            opt,
            params,
            data,
            a,
            pre,
            lr_warmup_hold(a["pretrain_lr"], pre),
            25,
            None,
            "pre-train ",
        )
        out["pretrain_seconds"], out["pretrain_loss"] = secs, losses
        lr_at = lr_cosine(a["lr"], n * every)
    else:
        opt = _adamw(params, a["lr"])
        lr_at = lr_warmup_cosine(a["lr"], n * every)
    _log(f"series a: {n * every} steps")
    out["train_seconds"], _ = _train_steps(
        model, opt, params, data, a, n * every, lr_at, every, save_a
    )

    # --- series b: fine-tune the last blocks, the final norm and the head; the rest frozen
    k = a["trainable_blocks"]
    first = c["layers"] - k
    trainable = {
        name
        for name in names
        if name.startswith(("lm_head.", "model.norm."))
        or any(name.startswith(f"model.layers.{i}.") for i in range(first, c["layers"]))
    }
    for name, p in model.named_parameters():
        p.requires_grad_(name in trainable)
    new_series("b-fp32", "fp32")
    b = out["series"]["b-fp32"]
    b.update(trainable=sorted(trainable), frozen_dirs=[], trainable_dirs=[])
    digests: list[str] = []
    prev_b: list[dict[str, bytes] | None] = [None]

    def save_b(i: int, step: int, loss: float) -> None:
        sd = model.state_dict()
        items = list(sd.items())
        d = root / "b-fp32" / f"ckpt-{i:02d}"
        size, blobs = _save(d / MODEL, items, "fp32")
        frozen = [(n_, t) for n_, t in items if n_ not in trainable]
        train_items = [(n_, t) for n_, t in items if n_ in trainable]
        fd = root / "b-frozen-only" / f"ckpt-{i:02d}"
        td = root / "b-trainable-only" / f"ckpt-{i:02d}"
        _save(fd / MODEL, frozen, "fp32")
        _save(td / MODEL, train_items, "fp32")
        h = hashlib.blake2b()
        for n_, _ in frozen:
            h.update(n_.encode() + b"\0" + blobs[n_])
        digests.append(h.hexdigest())
        b["dirs"].append(str(d))
        b["frozen_dirs"].append(str(fd))
        b["trainable_dirs"].append(str(td))
        b["steps"].append(step)
        b["loss"].append(loss)
        b["file_bytes"] = size
        b["frozen_bytes"] = sum(len(blobs[n_]) for n_, _ in frozen)
        b["trainable_bytes"] = sum(len(blobs[n_]) for n_, _ in train_items)
        b["frozen_tensors"] = len(frozen)
        b["changed"].append(_changed_fraction(prev_b[0], blobs, 4))
        prev_b[0] = blobs

    _log(f"series b: {n * every} fine-tuning steps, {len(trainable)} trainable tensors")
    params = [p for p in model.parameters() if p.requires_grad]
    out["ft_seconds"], _ = _train_steps(
        model,
        _adamw(params, a["ft_lr"]),
        params,
        _Tokens(c["vocab"], a["seed"] + 1000),
        a,
        n * every,
        lr_warmup_cosine(a["ft_lr"], n * every),
        every,
        save_b,
    )
    b["frozen_identical"] = len(set(digests)) == 1
    if not b["frozen_identical"]:
        raise SystemExit("series b: the frozen tensors changed between checkpoints")
    return out


def child_sens_pretrain(a: dict[str, Any]) -> dict[str, Any]:
    """Sensitivity: ``pretrain_steps`` steps from scratch (warm-up to ``pretrain_lr``, held),
    saved to ``a["path"]`` with the AdamW state and the token stream's generator state.
    A file already there with the same ``key`` (the settings) is reused."""
    import torch

    path = Path(a["path"])
    if path.exists():
        old = torch.load(path, weights_only=True)
        if old.get("key") == json.dumps(a["key"], sort_keys=True):
            return {"reused": True, "seconds": 0.0, "loss": old["loss"], "params": old["params"]}
    _seed_all(a["seed"], a["threads"])
    c = a["model"]
    model = _make_model(c)
    params = list(model.parameters())
    data = _Tokens(c["vocab"], a["seed"])
    opt = _adamw(params, a["pretrain_lr"])
    p = a["pretrain_steps"]
    secs, losses = _train_steps(
        model, opt, params, data, a, p, lr_warmup_hold(a["pretrain_lr"], p), 25, None, "pre-train "
    )
    n_params = sum(x.numel() for x in params)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "key": json.dumps(a["key"], sort_keys=True),
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "gen": data.g.get_state(),
            "loss": losses,
            "params": n_params,
        },
        tmp,
    )
    tmp.replace(path)
    return {"reused": False, "seconds": secs, "loss": losses, "params": n_params}


def child_sens_train(a: dict[str, Any]) -> dict[str, Any]:
    """Sensitivity: from the pre-trained state, ``checkpoints`` x ``every`` steps with the LR
    decaying (cosine) from ``lr`` to 10 % of it; each checkpoint written as fp32 and bf16."""
    import torch

    _seed_all(a["seed"], a["threads"])
    c = a["model"]
    state = torch.load(a["path"], weights_only=True)
    model = _make_model(c)
    model.load_state_dict(state["model"])
    params = list(model.parameters())
    opt = _adamw(params, a["lr"])
    opt.load_state_dict(state["opt"])  # the moments carry over; the LR is set every step
    data = _Tokens(c["vocab"], a["seed"])
    data.g.set_state(state["gen"])
    n, every = a["checkpoints"], a["every"]
    root = Path(a["root"])
    out: dict[str, Any] = {}
    prev: dict[str, dict[str, bytes] | None] = {"fp32": None, "bf16": None}
    for dt in prev:
        out[dt] = {"dirs": [], "changed": [], "loss": []}

    def save(i: int, step: int, loss: float) -> None:
        items = list(model.state_dict().items())
        for dt, s in out.items():
            d = root / dt / f"ckpt-{i:02d}"
            size, blobs = _save(d / MODEL, items, dt)
            s["dirs"].append(str(d))
            s["loss"].append(loss)
            s["file_bytes"] = size
            s["changed"].append(_changed_fraction(prev[dt], blobs, 4 if dt == "fp32" else 2))
            prev[dt] = blobs

    secs, _ = _train_steps(
        model,
        opt,
        params,
        data,
        a,
        n * every,
        lr_cosine(a["lr"], n * every),
        every,
        save,
        f"lr {a['lr']:g} every {every}: ",
    )
    return {"series": out, "seconds": secs}


def child_synth(a: dict[str, Any]) -> dict[str, Any]:
    """Series c: N(0, 0.02) weights in fp32, small relative updates, each version as bf16.

    Written tensor by tensor in row blocks, every version's file in step (bounded memory).
    """
    import zlib

    import numpy as np

    shapes = model_shapes("bf16", a["size"])
    n, lr = a["checkpoints"], np.float32(a["rel_lr"])
    specs = []
    for name, shape in shapes.items():
        numel = 1
        for d in shape:
            numel *= d
        specs.append((name, "BF16", shape, 2 * numel))
    header = st_header(specs)
    root = Path(a["root"])
    dirs = [root / f"ckpt-{i:02d}" for i in range(n)]
    files = []
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        files.append(open(d / MODEL, "wb"))  # noqa: SIM115 -- closed below
    changed = [0] * n
    total = 0

    def bf16(x: Any) -> Any:  # round to nearest even (no NaN / inf here)
        u = x.view(np.uint32)
        return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> 16).astype(
            np.uint16
        )

    try:
        for f in files:
            f.write(header)
        block = 4 * MiB
        for name, shape in shapes.items():
            rng = np.random.default_rng(zlib.crc32(name.encode()))
            rows, cols = shape if len(shape) == 2 else (1, shape[0])
            step = max(1, block // cols)
            for r in range(0, rows, step):
                nr = min(step, rows - r)
                w = rng.standard_normal((nr, cols), dtype=np.float32)
                w *= np.float32(0.02)
                if len(shape) == 1:
                    w += np.float32(1.0)
                prev = bf16(w)
                files[0].write(prev.tobytes())
                total += prev.size
                tmp = np.empty_like(w)
                for i in range(1, n):
                    z = rng.standard_normal((nr, cols), dtype=np.float32)
                    np.abs(w, out=tmp)
                    tmp *= z
                    tmp *= lr
                    w += tmp
                    cur = bf16(w)
                    changed[i] += int(np.count_nonzero(cur != prev))
                    files[i].write(cur.tobytes())
                    prev = cur
    finally:
        for f in files:
            f.close()
    return {
        "dirs": [str(d) for d in dirs],
        "file_bytes": (dirs[0] / MODEL).stat().st_size,
        "tensors": len(shapes),
        "layers": sum(1 for k in shapes if k.endswith("q_proj.weight")),
        "hidden": shapes["model.norm.weight"][0],
        "changed": [1.0] + [c / total for c in changed[1:]],
    }


# ----------------------------------------------------------------------------------------------
# Child side: wvc operations
# ----------------------------------------------------------------------------------------------


def child_commit(a: dict[str, Any]) -> dict[str, Any]:
    """``Repository.commit(path, message[, delta=False])``, timed around the call."""
    import inspect

    import wvc

    repo = wvc.Repository.open(a["repo"])
    kw: dict[str, Any] = {}
    has_kw = "delta" in inspect.signature(repo.commit).parameters
    if a["no_delta"] and has_kw:
        kw["delta"] = False
    res, t = timed(lambda: repo.commit(a["path"], message=a["message"], **kw))
    repo.close()
    return {
        **t,
        "new_stored_size": res.new_stored_size,
        "new_objects": res.new_objects,
        "logical_size": res.logical_size,
        "delta_kw": has_kw,
        "wvc_file": wvc.__file__,
    }


def child_experiment(a: dict[str, Any]) -> dict[str, Any]:
    """Commit ``dirs`` in order into a new repository (untimed); per commit: what was added."""
    import wvc

    repo = wvc.Repository.init(a["repo"])
    rows = []
    before = repo.stats()
    for i, d in enumerate(a["dirs"]):
        res = repo.commit(d, message=f"{i}")
        after = repo.stats()
        rows.append(
            {
                "new_stored_size": res.new_stored_size,
                "new_objects": res.new_objects,
                "chunk_growth": after.chunk_stored_size - before.chunk_stored_size,
                "stored_growth": after.stored_size - before.stored_size,
            }
        )
        before = after
    repo.close()
    return {"commits": rows, "wvc_file": wvc.__file__}


def child_wvc_series(a: dict[str, Any]) -> dict[str, Any]:
    """Commit ``dirs`` in order into a new repository (``delta`` as given), restore HEAD and
    compare it with the newest file (untimed: for stored sizes only)."""
    import wvc

    repo = wvc.Repository.init(a["repo"])
    for i, d in enumerate(a["dirs"]):
        repo.commit(d, message=f"{i}", delta=a["delta"])
    out = Path(a["out"])
    repo.restore("HEAD", out)
    repo.close()
    same = files_identical(out / MODEL, Path(a["dirs"][-1]) / MODEL)
    shutil.rmtree(out)
    return {"identical": same, "wvc_file": wvc.__file__}


def child_noop(a: dict[str, Any]) -> dict[str, Any]:
    """Import wvc and nothing else: the fixed cost of a wvc child process."""
    import wvc

    return {"wvc_file": wvc.__file__}


CHILD_OPS = {
    "train": child_train,
    "synth": child_synth,
    "commit": child_commit,
    "restore": child_restore,
    "experiment": child_experiment,
    "noop": child_noop,
    "sens_pretrain": child_sens_pretrain,
    "sens_train": child_sens_train,
    "wvc_series": child_wvc_series,
}


# ----------------------------------------------------------------------------------------------
# Parent side
# ----------------------------------------------------------------------------------------------


def timed_sync() -> float:
    t0 = time.perf_counter()
    os.sync()
    return time.perf_counter() - t0


def combine(ops: list[dict[str, Any]]) -> dict[str, Any]:
    """One step made of several processes: walls, syncs and CPU summed, peak RSS the largest."""
    wall = sum(o["wall"] for o in ops)
    return {
        "wall": wall,
        "sync": sum(o.get("sync", 0.0) for o in ops),
        "cpu": sum(o.get("cpu", 0.0) for o in ops),
        "rss_mib": max(o["rss_mib"] for o in ops),
        "other_cores": sum(o["other_cores"] * o["wall"] for o in ops) / wall if wall else 0.0,
        **({"seconds": sum(o["seconds"] for o in ops)} if all("seconds" in o for o in ops) else {}),
    }


class Bench(BenchBase):
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        super().__init__(args, work)
        self.t_start = time.perf_counter()
        self.code_root = self.resolve_code(args.code) if args.code else REPO_ROOT
        self.env = child_env(work / "pycache", str(self.code_root))
        self.env.update(GIT_ENV)
        self.env["GIT_CONFIG_GLOBAL"] = str(work / "gitconfig")
        self.env["DVC_SITE_CACHE_DIR"] = str(work / "dvc-site-cache")
        # `wvc init` / `wvc commit --help`: python -m wvc, so that PYTHONPATH picks the code.
        self.wvc_cmd = [args.wvc] if args.wvc else [sys.executable, "-m", "wvc"]
        self.dvc_cmd: str | None = None
        self.want = ""
        self.tools = [t for t in TOOLS if t in args.tools]
        self.results: dict[str, Any] = {
            "machine": machine_info(),
            "options": {
                k: v for k, v in vars(args).items() if k not in ("json", "workdir", "keep")
            },
            "series": {},
            "skipped": {},
            "features": {},
        }

    # --- set-up --------------------------------------------------------------------

    def check_code(self) -> None:
        (self.work / "gitconfig").write_text("")
        out, want = import_check(sys.executable, self.code_root, self.env, self.work)
        got = out.stdout.strip()
        if out.returncode != 0 or str(Path(got).resolve()) != str(want):
            raise SystemExit(f"children import {got or out.stderr[-300:]}, not {want}")
        self.want = str(want)
        rev = git_rev(self.code_root)
        self.results["wvc_rev"] = rev
        self.results["wvc_root"] = str(self.code_root)
        self.results["wvc_source_hash"] = source_hash(self.code_root / "wvc")
        self.say(f"wvc: {want} (git {rev or '-'}); wvc command: {' '.join(self.wvc_cmd)}")
        feats = self.results["features"]
        helptext = subprocess.run(
            [*self.wvc_cmd, "commit", "--help"],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.work,
        ).stdout
        feats["no_delta"] = "--no-delta" in helptext
        feats["max_chain"] = any(
            "WVC_MAX_CHAIN" in p.read_text(errors="replace")
            for p in (self.code_root / "wvc").rglob("*.py")
        )
        self.say(
            f"`wvc commit --no-delta`: {'yes' if feats['no_delta'] else 'NOT YET'}; "
            f"WVC_MAX_CHAIN read by wvc/: {'yes' if feats['max_chain'] else 'NOT YET'}"
        )
        vers: dict[str, str] = {}
        skipped = self.results["skipped"]
        probe = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.__version__)"],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.work,
        )
        feats["torch"] = probe.returncode == 0
        if probe.returncode == 0:
            vers["torch"] = probe.stdout.strip()
        elif {"a", "b"} & set(self.args.series):
            skipped["series a, b"] = "torch is not importable (pip install torch)"
        if "zstd" in self.tools:
            v = self.version([ZSTD, "--version"])
            if v:
                vers["zstd"] = v.strip("* ").split(", by")[0]
            else:
                skipped["zstd"] = "no zstd command (apt-get install zstd)"
        if "dvc" in self.tools:
            beside = Path(sys.executable).parent / "dvc"
            self.dvc_cmd = str(beside) if os.access(beside, os.X_OK) else shutil.which("dvc")
            v = self.version([self.dvc_cmd, "--version"]) if self.dvc_cmd else ""
            if v:
                vers["dvc"] = v
            else:
                skipped["dvc"] = (
                    "DVC is not installed or does not run "
                    "(pip install -e '.[bench]', i.e. pip install 'dvc>=3')"
                )
        if "git-lfs" in self.tools:
            v = self.version(["git", "lfs", "version"]) if shutil.which("git-lfs") else ""
            if v:
                vers["git-lfs"] = v
                vers["git"] = self.version(["git", "--version"]).removeprefix("git version ")
            else:
                skipped["git-lfs"] = "git-lfs is not installed (apt-get install -y git-lfs)"
        self.tools = [t for t in self.tools if t not in skipped]
        self.results["versions"] = vers
        self.say("tools: " + ", ".join(f"{k} {v}" for k, v in vers.items()))
        for what, why in skipped.items():
            self.say(f"SKIPPED {what}: {why}")
        self.results["startup"] = self.startup()

    def version(self, cmd: list[str]) -> str:
        try:
            r = subprocess.run(
                cmd, capture_output=True, text=True, env=self.env, cwd=self.work, timeout=120
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else ""

    def startup(self) -> dict[str, float]:
        """Median wall of a do-nothing process of each tool: its fixed cost per step."""
        cmds: dict[str, list[str]] = {"zstd": [ZSTD, "--version"], "git-lfs": ["git", "--version"]}
        if self.dvc_cmd:
            cmds["dvc"] = [self.dvc_cmd, "--version"]
        out: dict[str, float] = {}
        walls = [self.child("noop", self.env)["wall"] for _ in range(3)]
        out["wvc-nodelta"] = out["wvc-delta"] = median(walls)
        for tool, cmd in cmds.items():
            if tool in self.tools:
                out[tool] = median(
                    [run_measured(cmd, self.log, self.env)["wall"] for _ in range(3)]
                )
        self.say(
            "process start-up (median of 3): " + ", ".join(f"{k} {v:.2f}s" for k, v in out.items())
        )
        return out

    def child(self, op: str, env: dict[str, str], **kw: Any) -> dict[str, Any]:
        res = run_script_child(__file__, op, kw, self.log, env=env, cwd=self.work)
        wf = res.get("wvc_file")
        if wf and str(Path(wf).resolve()) != self.want:
            raise SystemExit(f"a child imported {wf}, not {self.want}")
        return res

    def proc(self, cmd: list[str], cwd: Path | None = None) -> dict[str, Any]:
        """One measured process of a peer tool, then a timed ``sync``."""
        m = run_measured(cmd, self.log, env=self.env, cwd=cwd)
        m.pop("stdout", None)
        m["rss_mib"] = m["rss_kib"] / 1024
        m["sync"] = timed_sync()
        return m

    def quiet(self, cmd: list[str], cwd: Path) -> None:
        """An untimed set-up command (its output goes to children.log)."""
        with open(self.log, "ab") as log:
            log.write(("\n$ (cd " + str(cwd) + ") " + " ".join(cmd) + "\n").encode())
            log.flush()
            r = subprocess.run(cmd, cwd=cwd, env=self.env, stdout=log, stderr=log)
        if r.returncode != 0:
            raise ChildFailed(f"{' '.join(cmd[:3])}... exited {r.returncode}; see {self.log}")

    def fresh(self, key: str) -> Path:
        d = self.work / "stores" / key
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d

    @staticmethod
    def settle(p: Path) -> None:
        """Read ``p`` (a file or directory) into the page cache, then flush dirty pages."""
        if p.is_dir():
            warm_up(p)
        else:
            with open(p, "rb", buffering=0) as f:
                while f.read(8 * MiB):
                    pass
        os.sync()

    def check_identical(self, s: dict[str, Any], got: Path, tool: str) -> bool:
        want = Path(s["dirs"][-1]) / MODEL
        if not files_identical(want, got):
            raise SystemExit(
                f"{LABELS[tool]}: the restored newest checkpoint of series {s['name']} ({got}) "
                f"is NOT byte-identical to {want}"
            )
        return True

    # --- the tools --------------------------------------------------------------------

    def run_wvc(self, s: dict[str, Any], key: str, delta: bool, chain: int | None = None) -> Any:
        store = self.fresh(key)
        env = dict(self.env)
        if chain is not None:
            env["WVC_MAX_CHAIN"] = str(chain)
        self.quiet([*self.wvc_cmd, "init", str(store)], self.work)
        objs = store / ".wvc" / "objects"
        steps = []
        prev = dir_bytes(objs)
        for i, d in enumerate(s["dirs"]):
            self.settle(Path(d))
            r = self.child(
                "commit",
                env,
                repo=str(store),
                path=d,
                message=f"{s['name']} {i}",
                no_delta=not delta,
            )
            r["sync"] = timed_sync()
            cur = dir_bytes(objs)
            r["growth"] = cur - prev
            prev = cur
            steps.append(r)
        stored = dir_bytes(objs)
        stats = self.wvc_stats(store, env)
        out = self.work / "restored" / key
        shutil.rmtree(out, ignore_errors=True)
        self.settle(store)
        rr = self.child("restore", env, repo=str(store), out=str(out))
        rr["sync"] = timed_sync()
        tool = "wvc-delta" if delta else "wvc-nodelta"
        res = self.result(s, steps, rr, stored, self.check_identical(s, out / MODEL, tool))
        res.update(
            wvc_dir_bytes=dir_bytes(store / ".wvc"),
            delta_kw=steps[0]["delta_kw"],
            chain=chain,
            commit_stats=stats,
        )
        shutil.rmtree(out)
        shutil.rmtree(store)
        return res

    def wvc_stats(self, store: Path, env: dict[str, str]) -> list[dict[str, Any]]:
        """Per-commit figures of ``wvc stats --json``, oldest first (untimed); [] if absent."""
        r = subprocess.run(
            [*self.wvc_cmd, "stats", "--json"], capture_output=True, text=True, env=env, cwd=store
        )
        try:
            return list(reversed(json.loads(r.stdout)["commits"]))
        except (ValueError, KeyError, TypeError):
            return []

    def run_zstd(self, s: dict[str, Any]) -> dict[str, Any]:
        d = self.fresh("zstd")
        steps = []
        dst = d
        for i, ck in enumerate(s["dirs"]):
            src = Path(ck) / MODEL
            dst = d / f"{i:02d}.{MODEL}.zst"
            self.settle(src)
            steps.append(self.proc([ZSTD, "-1", "-q", "-f", str(src), "-o", str(dst)]))
            steps[-1]["growth"] = dst.stat().st_size
        stored = dir_bytes(d)
        out = self.work / "restored" / "zstd" / MODEL
        out.parent.mkdir(parents=True, exist_ok=True)
        self.settle(dst)
        rr = self.proc([ZSTD, "-d", "-q", "-f", str(dst), "-o", str(out)])
        res = self.result(s, steps, rr, stored, self.check_identical(s, out, "zstd"))
        shutil.rmtree(out.parent)
        shutil.rmtree(d)
        return res

    def commit_each(
        self,
        s: dict[str, Any],
        ws: Path,
        store: Path,
        commands: Callable[[int], list[list[str]]],
    ) -> list[dict[str, Any]]:
        """Copy each checkpoint into ``ws`` (untimed: a training job writes there), run
        ``commands(i)`` as one timed step; each step's ``growth`` of ``store``."""
        steps = []
        prev = 0
        for i, ck in enumerate(s["dirs"]):
            target = ws / MODEL
            if target.exists():
                target.unlink()
            shutil.copyfile(Path(ck) / MODEL, target)
            self.settle(target)
            step = combine([self.proc(cmd, ws) for cmd in commands(i)])
            cur = dir_bytes(store) if store.exists() else 0
            step["growth"] = cur - prev
            prev = cur
            steps.append(step)
        return steps

    def run_dvc(self, s: dict[str, Any]) -> dict[str, Any]:
        assert self.dvc_cmd
        ws = self.fresh("dvc")
        dvc = self.dvc_cmd
        self.quiet(["git", "init", "-q"], ws)
        self.quiet([dvc, "init", "-q"], ws)
        self.quiet([dvc, "config", "core.analytics", "false"], ws)
        self.quiet([dvc, "config", "core.check_update", "false"], ws)
        self.quiet(["git", "commit", "-q", "-m", "dvc init"], ws)
        cache = ws / ".dvc" / "cache"
        steps = self.commit_each(
            s,
            ws,
            cache,
            lambda i: [
                [dvc, "add", "-q", MODEL],
                ["git", "add", f"{MODEL}.dvc", ".gitignore"],
                ["git", "commit", "-q", "-m", f"{s['name']} {i}"],
            ],
        )
        stored = dir_bytes(cache)
        (ws / MODEL).unlink()
        self.settle(cache)
        rr = self.proc([dvc, "checkout", "-q", f"{MODEL}.dvc"], ws)
        res = self.result(s, steps, rr, stored, self.check_identical(s, ws / MODEL, "dvc"))
        res["git_dir_bytes"] = dir_bytes(ws / ".git")
        shutil.rmtree(ws)
        return res

    def run_lfs(self, s: dict[str, Any]) -> dict[str, Any]:
        ws = self.fresh("git-lfs")
        self.quiet(["git", "init", "-q"], ws)
        self.quiet(["git", "lfs", "install", "--local"], ws)
        self.quiet(["git", "lfs", "track", "*.safetensors"], ws)
        self.quiet(["git", "add", ".gitattributes"], ws)
        self.quiet(["git", "commit", "-q", "-m", "lfs"], ws)
        lfs = ws / ".git" / "lfs" / "objects"
        steps = self.commit_each(
            s,
            ws,
            lfs,
            lambda i: [["git", "add", MODEL], ["git", "commit", "-q", "-m", f"{s['name']} {i}"]],
        )
        stored = dir_bytes(lfs)
        (ws / MODEL).unlink()
        self.settle(lfs)
        rr = self.proc(["git", "checkout", "--", MODEL], ws)
        res = self.result(s, steps, rr, stored, self.check_identical(s, ws / MODEL, "git-lfs"))
        res["git_dir_bytes"] = dir_bytes(ws / ".git")
        shutil.rmtree(ws)
        return res

    def result(
        self,
        s: dict[str, Any],
        steps: list[dict[str, Any]],
        rr: dict[str, Any],
        stored: int,
        identical: bool,
    ) -> dict[str, Any]:
        newest = (Path(s["dirs"][-1]) / MODEL).stat().st_size
        ops = [*steps, rr]
        wall = sum(o["wall"] for o in ops)
        res: dict[str, Any] = {
            "stored": stored,
            "commit_seconds": sum(x["wall"] + x["sync"] for x in steps),
            "restore_seconds": rr["wall"] + rr["sync"],
            "restore_bytes": newest,
            "identical": identical,
            "commit_rss_mib": max(x["rss_mib"] for x in steps),
            "restore_rss_mib": rr["rss_mib"],
            "growth": [x["growth"] for x in steps],
            # Wall-weighted: short steps' jiffy-granular load figures average out.
            "other_cores": sum(o["other_cores"] * o["wall"] for o in ops) / wall if wall else 0.0,
            "steps": steps,
            "restore": rr,
        }
        if all("seconds" in x for x in steps):
            res["commit_inproc_seconds"] = sum(x["seconds"] for x in steps)
            res["new_stored_size"] = [x.get("new_stored_size") for x in steps]
        if "seconds" in rr:
            res["restore_inproc_seconds"] = rr["seconds"]
        return res

    def run_tool(self, tool: str, s: dict[str, Any]) -> dict[str, Any]:
        try:
            if tool.startswith("wvc"):
                return self.run_wvc(s, tool, delta=tool == "wvc-delta")  # type: ignore[no-any-return]
            return {"zstd": self.run_zstd, "dvc": self.run_dvc, "git-lfs": self.run_lfs}[tool](s)
        except ChildFailed as e:
            if tool not in ("dvc", "git-lfs"):
                raise
            shutil.rmtree(self.work / "stores" / tool, ignore_errors=True)
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-8:])
            self.say(f"   {LABELS[tool]} FAILED: {e}\n{tail}")
            return {"failed": str(e), "log_tail": tail, "other_cores": 0.0}

    # --- series ------------------------------------------------------------------------

    def measure(self, name: str, s: dict[str, Any]) -> None:
        s["name"] = name
        s["raw"] = sum((Path(d) / MODEL).stat().st_size for d in s["dirs"])
        self.results["series"][name] = s
        self.say(
            f"\n== series {name}: {len(s['dirs'])} checkpoints, {human(s['file_bytes'])} each, "
            f"raw {human(s['raw'])}"
        )
        runs: dict[str, list[dict[str, Any]]] = {}
        for tool in self.tools:
            self.attempt(f"{name} {tool}", runs, lambda add, t=tool: add(t, self.run_tool(t, s)))
            self.say(f"   {self.line(s, LABELS[tool], runs[tool][-1])}")
        for n in self.args.chain_sweep:
            key = f"chain:{n}"
            self.attempt(
                f"{name} WVC_MAX_CHAIN={n}",
                runs,
                lambda add, n=n, key=key: add(key, self.run_wvc(s, f"chain{n}", True, n)),
            )
            self.say(f"   {self.line(s, f'wvc (delta) WVC_MAX_CHAIN={n}', runs[key][-1])}")
        s["tools"] = {k: v[-1] for k, v in runs.items() if not k.startswith("chain:")}
        s["chain"] = {k.split(":")[1]: v[-1] for k, v in runs.items() if k.startswith("chain:")}

    @staticmethod
    def line(s: dict[str, Any], label: str, r: dict[str, Any]) -> str:
        if "failed" in r:
            return f"{label}: FAILED ({r['failed']})"
        txt = (
            f"{label}: stored {human(r['stored'])} ({100 * r['stored'] / s['raw']:.1f} % of raw), "
            f"commit {s['raw'] / r['commit_seconds'] / MB:,.0f} MB/s"
        )
        if "commit_inproc_seconds" in r:
            txt += f" ({s['raw'] / r['commit_inproc_seconds'] / MB:,.0f} in-process)"
        txt += f", restore newest {r['restore_bytes'] / r['restore_seconds'] / MB:,.0f} MB/s"
        if "restore_inproc_seconds" in r:
            txt += f" ({r['restore_bytes'] / r['restore_inproc_seconds'] / MB:,.0f} in-process)"
        return txt + f", byte-identical, other load {r['other_cores']:.2f}"

    def run_sensitivity(self) -> None:
        """``--sensitivity``: one pre-trained state, then per (LR, every) a saved series of
        fp32 checkpoints and their bf16 casts, committed with and without deltas."""
        a = self.args
        model = self.model_config()
        common = {"model": model, "batch": a.batch, "seed": a.seed, "threads": a.threads}
        key = {**common, "pretrain_steps": a.pretrain_steps, "pretrain_lr": a.pretrain_lr}
        state = self.work / f"sens-pretrain-{a.pretrain_steps}.pt"
        combos = [(lr, every) for lr in a.sens_lrs for every in a.sens_every]
        self.say(
            f"\n== sensitivity: {a.pretrain_steps} pre-training steps at {a.pretrain_lr:g} "
            f"(saved to {state}), then {len(combos)} series of {a.checkpoints} checkpoints "
            f"(progress in {self.log})"
        )
        g = self.child(
            "sens_pretrain",
            self.env,
            path=str(state),
            key=key,
            pretrain_steps=a.pretrain_steps,
            pretrain_lr=a.pretrain_lr,
            **common,
        )
        self.say(
            f"   {g['params']:,} parameters; pre-training "
            + ("reused " + str(state) if g["reused"] else f"{g['seconds']:.0f}s")
            + "; loss per 25 steps "
            + " ".join(f"{x:.2f}" for x in g["loss"])
        )
        sens: dict[str, Any] = {
            "pretrain": {**key, "seconds": g["seconds"], "reused": g["reused"], "loss": g["loss"]},
            "params": g["params"],
            "checkpoints": a.checkpoints,
            "max_chain_env": os.environ.get("WVC_MAX_CHAIN"),
            "rows": [],
        }
        self.results["sensitivity"] = sens
        root = self.work / "series" / "sens"
        for lr, every in combos:
            shutil.rmtree(root, ignore_errors=True)
            t = self.child(
                "sens_train",
                self.env,
                path=str(state),
                root=str(root),
                lr=lr,
                every=every,
                checkpoints=a.checkpoints,
                **common,
            )
            procs = [t]
            row: dict[str, Any] = {"lr": lr, "every": every, "train_seconds": t["seconds"]}
            for dt in ("fp32", "bf16"):
                s = t["series"][dt]
                raw = sum((Path(d) / MODEL).stat().st_size for d in s["dirs"])
                row[dt] = {
                    "raw": raw,
                    "file_bytes": s["file_bytes"],
                    "changed": s["changed"],
                    "loss": s["loss"],
                }
                for delta in (True, False):
                    store = self.fresh(f"sens-{dt}-{'delta' if delta else 'nodelta'}")
                    r = self.child(
                        "wvc_series",
                        self.env,
                        repo=str(store),
                        dirs=s["dirs"],
                        delta=delta,
                        out=str(self.work / "restored" / "sens"),
                    )
                    if not r["identical"]:
                        raise SystemExit(
                            f"sensitivity lr {lr:g} every {every} {dt}: the restored newest "
                            "checkpoint is NOT byte-identical"
                        )
                    procs.append(r)
                    row[dt]["delta" if delta else "nodelta"] = dir_bytes(store / ".wvc" / "objects")
                    shutil.rmtree(store)
            wall = sum(p["wall"] for p in procs)
            row["wall"] = wall
            row["other_cores"] = sum(p["other_cores"] * p["wall"] for p in procs) / wall
            sens["rows"].append(row)
            shutil.rmtree(root, ignore_errors=True)
            f, b = row["fp32"], row["bf16"]
            self.say(
                f"   lr {lr:g} every {every}: loss {f['loss'][0]:.3f} -> {f['loss'][-1]:.3f}; "
                f"changed (median) bf16 {100 * median(b['changed'][1:]):.1f} % fp32 "
                f"{100 * median(f['changed'][1:]):.1f} %; stored % of raw bf16 "
                f"{100 * b['delta'] / b['raw']:.1f} (no delta {100 * b['nodelta'] / b['raw']:.1f})"
                f", fp32 {100 * f['delta'] / f['raw']:.1f} (no delta "
                f"{100 * f['nodelta'] / f['raw']:.1f}); training {t['seconds']:.0f}s, all "
                f"{wall:.0f}s, other load {row['other_cores']:.2f}"
            )

    def frozen_experiment(self, s: dict[str, Any]) -> None:
        """Commit the frozen-only and the trainable-only files as series of their own."""
        out = {}
        for part in ("frozen", "trainable"):
            repo = self.work / "stores" / f"b-{part}-only"
            shutil.rmtree(repo, ignore_errors=True)
            r = self.child("experiment", self.env, repo=str(repo), dirs=s[f"{part}_dirs"])
            out[part] = r["commits"]
            shutil.rmtree(repo)
        s["experiment"] = out
        later = out["frozen"][1:]
        self.say(
            f"   frozen tensors ({s['frozen_tensors']}, {human(s['frozen_bytes'])} per "
            f"checkpoint), committed alone: new chunk bytes after the first commit "
            f"{sum(x['chunk_growth'] for x in later):,} B, all new objects "
            f"{sum(x['stored_growth'] for x in later):,} B "
            f"({sum(x['new_objects'] for x in later)} objects)"
        )

    def model_config(self) -> dict[str, Any]:
        a = self.args
        return {
            k: getattr(a, k)
            for k in ("vocab", "hidden", "layers", "heads", "intermediate", "seq_len")
        }

    def run(self) -> None:
        want = set(self.args.series)
        base = self.work / "series"
        a = self.args
        if a.sensitivity:
            if not self.results["features"]["torch"]:
                raise SystemExit("--sensitivity needs torch")
            self.run_sensitivity()
            self.results["total_seconds"] = time.perf_counter() - self.t_start
            return
        if want & {"a", "b"} and self.results["features"]["torch"]:
            model = self.model_config()
            steps = a.checkpoints * a.every
            pre = (
                f"{a.pretrain_steps} pre-training steps (untimed, not saved; warm-up to "
                f"{a.pretrain_lr:g}, held) + "
                if a.pretrain_steps
                else ""
            )
            self.say(
                f"\n== training the small decoder: {pre}{steps} steps (series a) + {steps} "
                f"fine-tuning steps (series b), batch {a.batch} x {a.seq_len} tokens, "
                f"{a.threads} threads (progress in {self.log})"
            )
            t0 = time.perf_counter()
            g = self.child(
                "train",
                self.env,
                root=str(base),
                model=model,
                checkpoints=a.checkpoints,
                every=a.every,
                batch=a.batch,
                lr=a.lr,
                pretrain_steps=a.pretrain_steps,
                pretrain_lr=a.pretrain_lr,
                ft_lr=a.ft_lr,
                trainable_blocks=a.trainable_blocks,
                threads=a.threads,
                seed=a.seed,
            )
            info = {k: v for k, v in g.items() if k != "series"}
            info["model"] = model
            self.results["training"] = info
            if a.pretrain_steps:
                self.say(
                    f"   pre-training {g['pretrain_seconds']:.0f}s, loss (per 25 steps) "
                    + " ".join(f"{x:.2f}" for x in g["pretrain_loss"])
                )
            self.say(
                f"   {g['params']:,} parameters in {g['tensors']} tensors; training "
                f"{g['train_seconds']:.0f}s + fine-tuning {g['ft_seconds']:.0f}s "
                f"({time.perf_counter() - t0:.0f}s with start-up); loss "
                + " ".join(f"{x:.2f}" for x in g["series"]["a-fp32"]["loss"])
                + " | fine-tune "
                + " ".join(f"{x:.2f}" for x in g["series"]["b-fp32"]["loss"])
            )
            names = ["a-fp32", "a-bf16"] if "a" in want else []
            names += ["b-fp32"] if "b" in want else []
            for name in names:
                self.measure(name, g["series"][name])
                if name == "b-fp32":
                    self.frozen_experiment(g["series"][name])
            shutil.rmtree(base, ignore_errors=True)
        if "c" in want:
            self.say(
                f"\n== generating series c: {a.checkpoints} x {human(a.synthetic_size)} bf16 "
                f"(untimed)"
            )
            t0 = time.perf_counter()
            g = self.child(
                "synth",
                self.env,
                root=str(base / "c-bf16"),
                size=a.synthetic_size,
                checkpoints=a.checkpoints,
                rel_lr=a.synthetic_lr,
            )
            g["dtype"] = "bf16"
            self.say(
                f"   {g['tensors']} tensors ({g['layers']} layers, hidden {g['hidden']}); "
                f"{time.perf_counter() - t0:.0f}s; bf16 values changed per version: "
                + " ".join(f"{100 * x:.1f}%" for x in g["changed"][1:])
            )
            self.measure("c-bf16", g)
            shutil.rmtree(base, ignore_errors=True)
        self.results["total_seconds"] = time.perf_counter() - self.t_start


# ----------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------


def _mbps(nbytes: int, secs: float | None) -> str:
    return f"{nbytes / secs / MB:,.0f}" if secs else "-"


def series_title(name: str, s: dict[str, Any], res: dict[str, Any]) -> str:
    n = len(s["dirs"])
    raw = f"{n} checkpoints of {s['file_bytes']:,} B, raw {s['raw']:,} B ({human(s['raw'])})"
    changed = s.get("changed", [])[1:]
    ch = (
        f"; elements changed per checkpoint (bit pattern): {_pct(min(changed))} to "
        f"{_pct(max(changed))} %"
        if changed
        else ""
    )
    tr = res.get("training", {})
    if name.startswith("a-"):
        m = tr.get("model", {})
        o = res["options"]
        n = len(s["dirs"])
        sched = (
            f"after {o['pretrain_steps']} pre-training steps (not saved; LR warm-up to "
            f"{o['pretrain_lr']:g} over {max(1, o['pretrain_steps'] // 10)} steps, then held; "
            f"loss {tr['pretrain_loss'][0]:.2f} -> {tr['pretrain_loss'][-1]:.2f}), "
            f"{n * o['every']} saved steps with the LR cosine from {o['lr']:g} to 10 % of it"
            if o.get("pretrain_steps")
            else f"from scratch, LR warm-up to {o['lr']:g} then cosine to 10 % of it"
        )
        what = (
            f"small decoder ({tr.get('params', 0):,} parameters: vocab {m.get('vocab')}, hidden "
            f"{m.get('hidden')}, {m.get('layers')} layers) trained on CPU {sched}, a checkpoint "
            f"every {o['every']} steps (steps {s['steps'][0]}-{s['steps'][-1]}), {s['dtype']}; "
            f"loss {s['loss'][0]:.2f} -> {s['loss'][-1]:.2f}"
        )
    elif name.startswith("b-"):
        what = (
            f"the last a checkpoint fine-tuned with {len(s['trainable'])} trainable tensors "
            f"({s['trainable_bytes']:,} B) and {s['frozen_tensors']} frozen "
            f"({s['frozen_bytes']:,} B per checkpoint), fp32; loss {s['loss'][0]:.2f} -> "
            f"{s['loss'][-1]:.2f}"
        )
    else:
        what = (
            f"synthetic LLaMA-like bf16 ({s['tensors']} tensors, {s['layers']} layers, hidden "
            f"{s['hidden']}), relative update {res['options']['synthetic_lr']:g} x N(0,1) per "
            "version on fp32 masters"
        )
    return f"### Series {name}: {what}\n\n{raw}{ch}."


def series_table(s: dict[str, Any], res: dict[str, Any]) -> str:
    hdr = [
        "tool",
        "stored bytes",
        "% of raw",
        "commit MB/s",
        "commit MB/s in-process",
        "restore newest MB/s",
        "restore newest in-process",
        "peak RSS MiB commit / restore",
        "start-up s",
        "other load",
    ]
    lines = ["| " + " | ".join(hdr) + " |", "|---" + "|---:" * (len(hdr) - 1) + "|"]
    raw = s["raw"]
    for tool in TOOLS:
        r = s.get("tools", {}).get(tool)
        if r is None:
            continue
        if "failed" in r:
            lines.append(f"| {LABELS[tool]} | failed: {r['failed']} |" + " |" * (len(hdr) - 2))
            continue
        lines.append(
            "| "
            + " | ".join(
                [
                    LABELS[tool],
                    f"{r['stored']:,}",
                    f"{100 * r['stored'] / raw:.1f}",
                    _mbps(raw, r["commit_seconds"]),
                    _mbps(raw, r.get("commit_inproc_seconds")),
                    _mbps(r["restore_bytes"], r["restore_seconds"]),
                    _mbps(r["restore_bytes"], r.get("restore_inproc_seconds")),
                    f"{r['commit_rss_mib']:.0f} / {r['restore_rss_mib']:.0f}",
                    f"{res.get('startup', {}).get(tool, 0):.2f}",
                    f"{r['other_cores']:.2f}",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def delta_summary(s: dict[str, Any]) -> str:
    """What ``wvc stats --json`` says the delta run stored, summed over its commits."""
    cs = s.get("tools", {}).get("wvc-delta", {}).get("commit_stats") or []
    if not cs or "delta_objects" not in cs[0]:
        return ""
    tot = {k: sum(c.get(k, 0) for c in cs) for k in cs[0] if isinstance(cs[0][k], int)}
    per = ", ".join(f"{c['delta_objects']}/{c['standalone_objects']}" for c in cs)
    return (
        f"wvc (delta), from `wvc stats --json`: {tot['delta_objects']} objects stored as deltas "
        f"({tot['delta_raw_size']:,} raw B -> {tot['delta_stored_size']:,} B), "
        f"{tot['standalone_objects']} standalone ({tot['standalone_size']:,} B), "
        f"{tot['deduped_size']:,} B deduplicated; delta/standalone objects per commit: {per}."
    )


def chain_table(s: dict[str, Any]) -> str:
    if not s.get("chain"):
        return ""
    lines = [
        "| WVC_MAX_CHAIN | stored bytes | % of raw | commit MB/s | commit MB/s in-process | "
        "restore newest MB/s | restore newest in-process | other load |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    raw = s["raw"]
    for n, r in sorted(s["chain"].items(), key=lambda kv: int(kv[0])):
        lines.append(
            f"| {n} | {r['stored']:,} | {100 * r['stored'] / raw:.1f} | "
            f"{_mbps(raw, r['commit_seconds'])} | {_mbps(raw, r.get('commit_inproc_seconds'))} | "
            f"{_mbps(r['restore_bytes'], r['restore_seconds'])} | "
            f"{_mbps(r['restore_bytes'], r.get('restore_inproc_seconds'))} | "
            f"{r['other_cores']:.2f} |"
        )
    return "\n".join(lines)


def frozen_table(s: dict[str, Any]) -> str:
    """Series b, per checkpoint: what each store grew by, beside the frozen-only experiment."""
    ex = s.get("experiment")
    if not ex:
        return ""
    tools = [t for t in TOOLS if t in s.get("tools", {}) and "failed" not in s["tools"][t]]
    hdr = ["checkpoint"] + [f"{LABELS[t]}: store grew by" for t in tools]
    hdr += [
        "frozen-only file in wvc: new chunk bytes",
        "trainable-only file in wvc: new chunk bytes",
    ]
    lines = ["| " + " | ".join(hdr) + " |", "|---:" * len(hdr) + "|"]
    for i in range(len(s["dirs"])):
        cells = [str(i)] + [f"{s['tools'][t]['growth'][i]:,}" for t in tools]
        cells += [f"{ex['frozen'][i]['chunk_growth']:,}", f"{ex['trainable'][i]['chunk_growth']:,}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets_report(res: dict[str, Any]) -> list[str]:
    return [x for name, s in res["series"].items() for x in series_targets(name, s)]


def series_targets(name: str, s: dict[str, Any]) -> list[str]:
    """MET / MISS lines for one series' wvc (delta) figures."""
    out: list[str] = []

    def line(ok: bool | None, text: str) -> None:
        out.append(f"- {'MET ' if ok else 'MISS' if ok is not None else 'n/a '} {text}")

    r = s.get("tools", {}).get("wvc-delta")
    if r and "failed" not in r:
        pct = 100 * r["stored"] / s["raw"]
        t = TARGET_STORED_PCT.get(name)
        if t is not None:
            line(pct <= t, f"{name}: wvc (delta) stored {pct:.1f} % of raw; target <= {t:.0f} %")
        else:
            line(None, f"{name}: wvc (delta) stored {pct:.1f} % of raw (no target set)")
        n = len(s["dirs"])
        inproc = r["restore_bytes"] / r["restore_inproc_seconds"] / MB
        proc = r["restore_bytes"] / r["restore_seconds"] / MB
        line(
            inproc >= TARGET_RESTORE_MBPS,
            f"{name}: restore of the newest of {n} checkpoints {inproc:,.0f} MB/s in-process "
            f"({proc:,.0f} MB/s as a whole process incl. start-up and sync); target >= "
            f"{TARGET_RESTORE_MBPS:.0f} MB/s",
        )
    ex = s.get("experiment")
    if ex:
        frozen = sum(x["chunk_growth"] for x in ex["frozen"][1:])
        trainable = sum(x["chunk_growth"] for x in ex["trainable"][1:])
        line(
            frozen == TARGET_FROZEN_BYTES,
            f"{name}: frozen tensors stored {frozen:,} B after the first checkpoint "
            f"(trainable ones {trainable:,} B; zstd, DVC and Git LFS store the "
            f"{s['frozen_bytes']:,} frozen bytes again in every checkpoint); target "
            f"{TARGET_FROZEN_BYTES} B",
        )
        if trainable == 0:
            out.append(
                "  - WARNING: the trainable-only files added no chunk bytes either: "
                "`Repository.stats().chunk_stored_size` may not count delta objects."
            )
    return out


def notes(res: dict[str, Any]) -> list[str]:
    f = res["features"]
    out = []
    api = [
        s["tools"]["wvc-nodelta"].get("delta_kw")
        for s in res["series"].values()
        if "delta_kw" in s.get("tools", {}).get("wvc-nodelta", {})
    ]
    if api and not all(api):
        out.append(
            "- CAVEAT: this wvc's `Repository.commit` has no `delta` parameter"
            + ("" if f.get("no_delta") else " (and `wvc commit` no `--no-delta`)")
            + ': the "wvc (no delta)" and "wvc (delta)" rows are the same code, measured twice.'
        )
    elif api and not f.get("no_delta"):
        out.append(
            "- `wvc commit --help` shows no `--no-delta` yet; the no-delta rows used "
            "`Repository.commit(..., delta=False)`, which this wvc has."
        )
    if res["options"].get("chain_sweep") and not f.get("max_chain"):
        out.append(
            "- CAVEAT: wvc/ does not mention WVC_MAX_CHAIN yet: the chain-sweep rows are all "
            "the default setting."
        )
    for what, why in res.get("skipped", {}).items():
        out.append(f"- SKIPPED {what}: {why}")
    loads = [
        r["other_cores"]
        for s in res["series"].values()
        for r in [*s.get("tools", {}).values(), *s.get("chain", {}).values()]
    ]
    if loads:
        out.append(
            f"- other load during the measurements (wall-weighted per tool and series): median "
            f"{median(loads):.2f}, max {max(loads):.2f} of {res['machine']['nproc']} cores"
            + (" -- WARNING: the machine was not idle." if median(loads) > 0.25 else ".")
        )
    return out + run_caveats(res)


def _pct(x: float) -> str:
    """A fraction as % with 2 decimals, more where that would round to 100.00 but is not 1."""
    if x >= 1 or f"{100 * x:.2f}" != "100.00":
        return f"{100 * x:.2f}"
    text = f"{100 * x:.4f}"
    return ">99.9999" if text == "100.0000" else text


def _pct_range(xs: list[float]) -> str:
    return f"{_pct(median(xs))} ({_pct(min(xs))} to {_pct(max(xs))})"


def sensitivity_report(res: dict[str, Any]) -> str:
    """``--sensitivity``: one markdown table, its exact settings in the header."""
    sv, m, o = res["sensitivity"], res["machine"], res["options"]
    p = sv["pretrain"]
    md = p["model"]
    n = sv["checkpoints"]
    chain = sv["max_chain_env"] or "unset (wvc's default)"
    first = sv["rows"][0]
    out = [
        "\n## Sensitivity: stored size against learning rate and checkpoint interval\n",
        f"{machine_line(m)}, wvc {res.get('wvc_rev') or res.get('wvc_root')}, {m['date']}; "
        f"torch {res.get('versions', {}).get('torch', '?')}.",
        "",
        f"Model: {sv['params']:,} parameters (vocab {md['vocab']}, hidden {md['hidden']}, "
        f"{md['layers']} layers, {md['heads']} heads, MLP {md['intermediate']}), batch "
        f"{p['batch']} x {md['seq_len']} tokens, seed {p['seed']}, {o['threads']} torch threads; "
        "AdamW (betas 0.9/0.95, weight decay 0.1 on matrices, 0 on norms), gradient norm "
        f"clipped to 1. Pre-training (once, not saved as checkpoints): {p['pretrain_steps']} "
        f"steps from scratch, LR linear warm-up to {p['pretrain_lr']:g} over "
        f"{max(1, p['pretrain_steps'] // 10)} steps then held; loss (mean of each 25 steps) "
        + " ".join(f"{x:.2f}" for x in p["loss"])
        + f". Its state (weights, AdamW moments, token stream) is the start of every row: "
        f"{n} checkpoints, one every `every` steps ({n} x every steps), LR cosine from `lr` "
        "(first step) to 10 % of it (`lr * (0.1 + 0.45 (1 + cos(pi s / steps)))`); fp32 master "
        "weights saved as fp32 files and as their bf16 casts "
        f"({first['fp32']['file_bytes']:,} B / {first['bf16']['file_bytes']:,} B per file). "
        "Changed: % of elements whose bit pattern differs from the previous checkpoint, median "
        f"(min to max) over the {n - 1} consecutive pairs. Stored: bytes of `.wvc/objects` after "
        f"committing the {n} files in order into a new repository, % of the {n} files' bytes; "
        "delta = `Repository.commit(dir)` (XOR deltas against the parent, WVC_MAX_CHAIN "
        f"{chain}), no delta = `Repository.commit(dir, delta=False)`; the newest checkpoint "
        "restored byte-identical in every case. Other load: cores busy with other work "
        "(wall-weighted over the row's processes; sizes do not depend on it).",
        "",
        "| lr | every | loss first -> last ckpt | bf16 changed % | fp32 changed % | "
        "bf16 stored % (delta) | bf16 stored % (no delta) | fp32 stored % (delta) | "
        "fp32 stored % (no delta) | training s | other load |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sv["rows"]:
        f, b = r["fp32"], r["bf16"]
        out.append(
            f"| {r['lr']:g} | {r['every']} | {f['loss'][0]:.3f} -> {f['loss'][-1]:.3f} | "
            f"{_pct_range(b['changed'][1:])} | {_pct_range(f['changed'][1:])} | "
            f"{100 * b['delta'] / b['raw']:.1f} | {100 * b['nodelta'] / b['raw']:.1f} | "
            f"{100 * f['delta'] / f['raw']:.1f} | {100 * f['nodelta'] / f['raw']:.1f} | "
            f"{r['train_seconds']:.0f} | {r['other_cores']:.2f} |"
        )
    loads = [r["other_cores"] for r in sv["rows"]]
    out += [
        "",
        f"Targets (series a, for reference): bf16 <= {TARGET_STORED_PCT['a-bf16']:.0f} %, fp32 "
        f"<= {TARGET_STORED_PCT['a-fp32']:.0f} % of raw with deltas.",
        "",
        f"Other load: median {median(loads):.2f}, max {max(loads):.2f} of {m['nproc']} cores.",
        *run_caveats(res),
        "",
        f"total time {res['total_seconds']:.0f}s",
    ]
    return "\n".join(out)


def report(res: dict[str, Any], args: argparse.Namespace) -> str:
    if "sensitivity" in res:
        return sensitivity_report(res)
    m = res["machine"]
    vers = ", ".join(f"{k} {v}" for k, v in res.get("versions", {}).items())
    out = [
        "\n## Results\n",
        f"{machine_line(m)}, wvc {res.get('wvc_rev') or res.get('wvc_root')}, {m['date']}; "
        f"{vers}. MB/s = 10^6 raw "
        "(checkpoint file) bytes per second. Commit MB/s: all checkpoints' raw bytes / the "
        "seconds of every commit step (whole processes, start-up included, + a timed `sync`); "
        "restore newest: the newest file's bytes / the seconds of its restore (same rule), "
        "checked byte-identical. In-process (wvc only): seconds timed around "
        "`Repository.commit` / `.restore` in the child. Page cache warm. "
        "Stored: wvc `.wvc/objects`, zstd the .zst files, DVC `.dvc/cache`, Git LFS "
        "`.git/lfs/objects`.",
    ]
    for name, s in res["series"].items():
        out += ["", series_title(name, s, res), "", series_table(s, res)]
        tl = series_targets(name, s)
        if tl:
            out += ["", "Targets (wvc with deltas):", "", *tl]
        nd, d = s.get("tools", {}).get("wvc-nodelta"), s.get("tools", {}).get("wvc-delta")
        if nd and d and "failed" not in nd and "failed" not in d:
            out += [
                "",
                f"wvc delta against no delta: stored {100 * d['stored'] / s['raw']:.1f} % vs "
                f"{100 * nd['stored'] / s['raw']:.1f} % of raw "
                f"({100 * (d['stored'] / nd['stored'] - 1):+.0f} %).",
            ]
        ks = delta_summary(s)
        if ks:
            out += ["", ks]
        ft = frozen_table(s)
        if ft:
            out += [
                "",
                "Per checkpoint: bytes each store grew by (wvc: all objects; zstd / DVC / LFS: "
                "the new file), and the bytes wvc added for files holding only the frozen / "
                "only the trainable tensors of the same checkpoints, committed as series of "
                "their own (`Repository.stats().chunk_stored_size` growth):",
                "",
                ft,
            ]
        ct = chain_table(s)
        if ct:
            out += ["", f"wvc (delta) with WVC_MAX_CHAIN=N, series {name}:", "", ct]
    out += ["", "What each tool's commit / restore step times:", ""]
    out += [f"- {LABELS[t]}: {TIMED[t]}" for t in TOOLS]
    out += ["", "### Targets, all series", "", *targets_report(res)]
    out += ["", "### Notes", "", *notes(res)]
    out += ["", f"total benchmark time {res['total_seconds']:.0f}s"]
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        xs = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N,N,... got {text!r}") from None
    if not xs or min(xs) < 1:
        raise argparse.ArgumentTypeError("chain lengths must be >= 1")
    return xs


def _float_list(text: str) -> list[float]:
    try:
        xs = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,X,... got {text!r}") from None
    if not xs or min(xs) <= 0:
        raise argparse.ArgumentTypeError("learning rates must be > 0")
    return xs


def _choices(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        xs = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in xs if x not in allowed]
        if bad or not xs:
            raise argparse.ArgumentTypeError(f"choose among {', '.join(allowed)}")
        return xs

    return parse


def main() -> None:
    if run_if_child(CHILD_OPS, sys.argv):
        return
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: small model, 4 checkpoints, "
        "64 MiB synthetic (options given explicitly still win)",
    )
    ap.add_argument(
        "--series",
        type=_choices(SERIES),
        default=list(SERIES),
        help="which series: a (trained, fp32 + bf16), b (fine-tune, frozen layers), "
        "c (synthetic bf16); comma-separated (default a,b,c)",
    )
    ap.add_argument(
        "--tools",
        type=_choices(TOOLS),
        default=list(TOOLS),
        help="comma-separated subset of " + ",".join(TOOLS),
    )
    ap.add_argument("--checkpoints", type=int, help="checkpoints per series (default 10)")
    ap.add_argument("--every", type=int, help="training steps between checkpoints (default 25)")
    ap.add_argument("--vocab", type=int, help="model vocabulary (default 8192)")
    ap.add_argument("--hidden", type=int, help="model width (default 256)")
    ap.add_argument("--layers", type=int, help="decoder blocks (default 6)")
    ap.add_argument("--heads", type=int, help="attention heads (default 4)")
    ap.add_argument("--intermediate", type=int, help="MLP width (default 768)")
    ap.add_argument("--seq-len", type=int, help="tokens per sequence (default 128)")
    ap.add_argument("--batch", type=int, help="sequences per step (default 8)")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak LR, series a (default 1e-3)")
    ap.add_argument(
        "--pretrain-steps",
        type=int,
        default=0,
        metavar="P",
        help="series a (and --sensitivity): first train P steps, untimed and not saved "
        "(LR warm-up to --pretrain-lr over P/10 steps, then held); the saved steps then "
        "follow a cosine from --lr to 10 %% of it (default 0: from scratch, warm-up + cosine)",
    )
    ap.add_argument(
        "--pretrain-lr", type=float, help="peak LR of the pre-training steps (default --lr)"
    )
    ap.add_argument("--ft-lr", type=float, default=3e-4, help="peak LR, series b (default 3e-4)")
    ap.add_argument(
        "--sensitivity",
        action="store_true",
        help="instead of the series: pre-train once (--pretrain-steps, default 300), then "
        "per --sens-lrs x --sens-every save the checkpoints and commit them with wvc with and "
        "without deltas; print one table",
    )
    ap.add_argument(
        "--sens-lrs",
        type=_float_list,
        default=[1e-3, 3e-4, 1e-4],
        metavar="LR,LR,...",
        help="--sensitivity: the saved phase's peak LRs (default 1e-3,3e-4,1e-4)",
    )
    ap.add_argument(
        "--sens-every",
        type=_int_list,
        default=[10, 25],
        metavar="N,N,...",
        help="--sensitivity: the checkpoint intervals in steps (default 10,25)",
    )
    ap.add_argument(
        "--trainable-blocks",
        type=int,
        default=2,
        help="last blocks trainable in series b (+ final norm + lm_head; default 2)",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--synthetic-size", type=parse_size, help="series c checkpoint size (default 1GiB)"
    )
    ap.add_argument(
        "--synthetic-lr",
        type=float,
        default=1e-3,
        help="series c relative update per version (default 1e-3)",
    )
    ap.add_argument(
        "--chain-sweep",
        type=_int_list,
        default=[],
        metavar="N,N,...",
        help="repeat the wvc (delta) run of each series with WVC_MAX_CHAIN=N",
    )
    ap.add_argument(
        "--code",
        metavar="REV_OR_DIR",
        help="measure this wvc (a git revision, checked out into a temporary worktree, or a "
        "checkout directory) instead of the checkout this script is in",
    )
    ap.add_argument(
        "--wvc", help="the wvc command for `wvc init` / `--help` (default: python -m wvc)"
    )
    add_run_options(ap)
    ap.set_defaults(retries=None)
    args = ap.parse_args()
    if args.retries is None:  # quick: never wait for a quiet machine
        args.retries = 0 if args.quick else 1
    for k, v in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.checkpoints < 2:
        ap.error("--checkpoints must be >= 2")
    if args.pretrain_steps < 0:
        ap.error("--pretrain-steps must be >= 0")
    if args.pretrain_lr is None:
        args.pretrain_lr = args.lr
    if args.sensitivity:
        if not args.pretrain_steps:
            args.pretrain_steps = 300
        args.series, args.tools, args.chain_sweep = ["a"], ["wvc-delta", "wvc-nodelta"], []
    if not 0 < args.trainable_blocks <= args.layers:
        ap.error("--trainable-blocks must be between 1 and --layers")
    if args.hidden % (2 * args.heads):
        ap.error("--hidden must be a multiple of 2 x --heads")
    work = make_workdir(args.workdir, "wvc-bench-storage-")
    c = args.checkpoints
    # Series c: its checkpoints + the largest store + a restore; a/b: fp32 + bf16 + b's three
    # files per checkpoint (~4.5 x the fp32 size), and a store as large.
    params = 2 * args.vocab * args.hidden + args.layers * (
        4 * args.hidden**2 + 3 * args.hidden * args.intermediate
    )
    need = (2 * c + 2) * args.synthetic_size if "c" in args.series else 0
    need += 9 * c * 4 * params if {"a", "b"} & set(args.series) else 0
    if args.sensitivity:  # fp32 + bf16 checkpoints and one store at a time, the state
        need = 3 * c * 4 * params + 5 * 4 * params
    b = Bench(args, work)
    run_session(
        b,
        args,
        title="wvc storage benchmark",
        need=need,
        free=shutil.disk_usage(work).free,
        leftovers=[
            "series",
            "stores",
            "restored",
            "children.log",
            "rss.txt",
            "pycache",
            "gitconfig",
            "dvc-site-cache",
            "sens-pretrain-*.pt",
        ],
        code_root=b.code_root,
        report=report,
    )


if __name__ == "__main__":
    main()
