"""The main job end to end on data made here: ``wvc demo [DIR]`` or ``python -m wvc.demo [DIR]``.

Writes a small transformer-like safetensors model, "trains" it for two steps
(only some layers change, as in a partial fine-tune), commits both with a
loss as metadata, shows history and storage figures, and restores the first
step, checking it is byte-identical to what was committed.
"""

from __future__ import annotations

import filecmp
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import ml_dtypes
import numpy as np

from .formats.safetensors import build_header
from .repository import Repository

Echo = Callable[[str], None]


def make_model(seed: int = 0, layers: int = 4, hidden: int = 256) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(ml_dtypes.bfloat16)

    model = {"embed_tokens.weight": w(1000, hidden)}
    for i in range(layers):
        p = f"layers.{i}."
        model[p + "attn.qkv.weight"] = w(3 * hidden, hidden)
        model[p + "attn.out.weight"] = w(hidden, hidden)
        model[p + "mlp.up.weight"] = w(4 * hidden, hidden)
        model[p + "mlp.down.weight"] = w(hidden, 4 * hidden)
        model[p + "norm.weight"] = np.ones(hidden, dtype=ml_dtypes.bfloat16)
    return model


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    from .dtypes import DType

    specs = {k: (DType.from_numpy(v.dtype), tuple(v.shape), v.nbytes) for k, v in tensors.items()}
    with open(path, "wb") as f:
        f.write(build_header(specs, {"format": "pt"}))
        for v in tensors.values():
            f.write(np.ascontiguousarray(v).tobytes())


def train_step(
    model: dict[str, np.ndarray], seed: int, layers: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """Nudge the weights of ``layers`` a little; everything else stays bit-identical."""
    rng = np.random.default_rng(seed)
    out = dict(model)
    for name, value in model.items():
        if any(name.startswith(f"layers.{i}.") for i in layers) and value.ndim == 2:
            step = rng.standard_normal(value.shape, dtype=np.float32) * 1e-3
            out[name] = (value.astype(np.float32) + step).astype(ml_dtypes.bfloat16)
    return out


def run(path: str | None = None, echo: Echo = print) -> None:
    base = Path(path) if path else Path(tempfile.mkdtemp(prefix="wvc-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    repo = Repository.init(base / "repo")
    echo(f"repository: {repo.dir}")
    ckpts = base / "checkpoints"
    model = make_model()
    steps = [(100, 2.31, model), (200, 1.97, train_step(model, seed=1, layers=(2, 3)))]
    for step, loss, weights in steps:
        d = ckpts / f"step-{step}"
        d.mkdir(parents=True, exist_ok=True)
        write_safetensors(d / "model.safetensors", weights)
        (d / "config.json").write_text('{"hidden_size": 256, "num_layers": 4}\n')
        res = repo.commit(d, f"step {step}", {"loss": loss, "step": step})
        echo(
            f"committed step {step}: {res.id[:12]}  {res.logical_size / 1e6:.1f} MB logical, "
            f"{res.new_stored_size / 1e6:.2f} MB new stored"
        )
    for e in repo.log():
        echo(f"  {e.id[:12]}  {e.message:<10} loss={e.meta['loss']}")
    st = repo.stats()
    echo(
        f"stored {st.stored_size / 1e6:.2f} MB for {st.logical_size / 1e6:.2f} MB of checkpoints "
        f"({st.total_ratio:.2f}x smaller)"
    )
    out = base / "restored-step-100"
    repo.restore("HEAD~1", out)
    same = all(
        filecmp.cmp(ckpts / "step-100" / n, out / n, shallow=False)
        for n in ("model.safetensors", "config.json")
    )
    echo(f"restored HEAD~1 to {out}: {'byte-identical' if same else 'DIFFERENT'}")
    fsck = repo.fsck()
    echo(f"fsck: {'ok' if fsck.ok else 'PROBLEMS'} ({fsck.objects_checked} objects verified)")
    repo.close()
    if not same or not fsck.ok:
        raise SystemExit(1)


if __name__ == "__main__":
    run(sys.argv[1] if len(sys.argv) > 1 else None)
