"""``rlkit pretrain METHOD``: train an encoder on a frame dataset and save it with a card.

Methods register in ``PRETRAINERS`` (supervised in ``vision/supervised.py``, gan in ``vision/gan.py``, mae in
``vision/mae.py``). One loop drives them all: TensorBoard, progress, atomic checkpoints + resume, final
``encoder.safetensors`` with its JSON card.

Data parallel: ``torchrun --nproc_per_node=2 -m rlkit.vision.pretrain METHOD --data DIR ...`` (or ``rlkit
pretrain ... --ddp 2``). Every step draws one *global* batch from a generator seeded by (seed, step); rank r
takes rows ``[r*B/W, (r+1)*B/W)`` and, after backward, the gradients are averaged over ranks (all-reduce), so
W processes at global batch B take the same steps as one process at batch B (up to float summation order).
BatchNorm statistics are per process on CPU (gloo has no SyncBatchNorm; the run prints a note naming such
layers, GlobalBatchNorm1d excepted); on GPUs (nccl) BatchNorm layers are converted to SyncBatchNorm. GAN terms
computed over the whole batch (minibatch standard deviation, feature matching, the reconstruction, uniformity,
contrastive and temporal terms) are refused with more than one process. Because batches are a function of the
step, a resume continues exactly; it refuses another dataset and changes of the fields that define the run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from rlkit.checkpoint import (
    load_checkpoint,
    load_optimizer_tensors,
    optimizer_tensors,
    save_checkpoint,
    write_text_atomic,
)
from rlkit.errors import RLKitError
from rlkit.registry import PRETRAINERS
from rlkit.run import SignalStop
from rlkit.vision.data import FrameDataset, manifest_hash, read_manifest


@dataclasses.dataclass
class PretrainConfig:
    """Fields every pretraining method has (``--set key=value``)."""

    encoder: str = "nature_cnn"
    """registered encoder to train (see `rlkit encoders`)"""
    encoder_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    """constructor arguments of the encoder, e.g. encoder_kwargs.features_dim=256"""
    steps: int = 2000
    """optimizer steps"""
    batch_size: int = 64
    """global batch size (split over data-parallel processes)"""
    lr: float = 1e-3
    """Adam learning rate"""
    seed: int = 0
    """seed of initialisation and batch sampling"""
    log_every: int = 20
    """steps between TensorBoard loss points"""
    eval_every: int = 500
    """steps between evaluations on the val split (0: only the final one)"""
    eval_frames: int = 2000
    """val frames used by periodic evaluations (the final one uses all)"""
    checkpoint_every: int = 500
    """steps between checkpoints (last.safetensors; 0: only at the end and on a stop)"""
    torch_threads: int = 0
    """CPU threads (0: all cores)"""
    device: str = "auto"
    """auto | cpu | cuda"""


def _local_batch_norm(norm: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """``norm`` in training mode on this process's batch alone, its running statistics a cumulative average."""
    norm.num_batches_tracked += 1
    return F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias, True,
                        1.0 / float(norm.num_batches_tracked), norm.eps)


@contextlib.contextmanager
def recalibrated_batch_norms(module: nn.Module) -> Iterator[list[_BatchNorm]]:
    """Precise BatchNorm: inside the block, every BatchNorm of ``module`` that tracks running statistics
    (BatchNorm1d/2d, GlobalBatchNorm1d, SyncBatchNorm) starts them afresh and, on each forward pass, normalises
    with the batch and adds it to a cumulative average. It runs the functional batch norm of this process only,
    with no collective, so data-parallel rank 0 can recalibrate alone (SyncBatchNorm would wait for the other
    ranks). Their training mode and forward are restored on exit; yields the norms (empty: nothing to do)."""
    norms = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    training = [m.training for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.train()
        m.forward = types.MethodType(_local_batch_norm, m)
    try:
        yield norms
    finally:
        for m, was_training in zip(norms, training):
            del m.forward
            m.train(was_training)


def per_process_batch_norms(modules: dict[str, nn.Module]) -> list[str]:
    """Names of the BatchNorm layers whose statistics data parallel on CPU keeps per process (all but
    GlobalBatchNorm1d, which all-reduces them)."""
    from rlkit.vision.supervised import GlobalBatchNorm1d

    return [f"{key}.{name}" for key, module in modules.items() for name, m in module.named_modules()
            if isinstance(m, _BatchNorm) and not isinstance(m, GlobalBatchNorm1d)]


class Pretrainer:
    """Base of a pretraining method. Subclasses build ``modules`` / ``optimizers`` in ``build`` and implement
    ``update`` (one step on the local part of a batch), ``evaluate`` and ``encoder``."""

    Config: type = PretrainConfig
    name = "base"
    needs_labels = False
    resume_changeable = frozenset({"steps", "log_every", "eval_every", "eval_frames", "checkpoint_every",
                                   "torch_threads", "device"})
    """config fields a resume may change: the length of the run, its logging / evaluation / checkpoint intervals
    and where it runs; every other field (seed, batch_size, encoder, encoder_kwargs, lr, the method's settings)
    defines the trajectory the checkpoint is part of."""

    def __init__(
        self, config: Any, data: FrameDataset, val: FrameDataset | None, device: torch.device,
        rank: int = 0, world: int = 1,
    ) -> None:
        self.config, self.data, self.val, self.device = config, data, val, device
        self.rank, self.world = rank, world
        self.observation_space = data.observation_space()
        self.step = 0
        self.modules: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        if self.needs_labels and not data.label_names:
            raise RLKitError(f"{self.name} pretraining needs labels, but {data.dir} has none (frames only).")
        torch.manual_seed(config.seed)
        self.build()
        for module in self.modules.values():
            module.to(device)
            if world > 1 and device.type == "cuda":
                nn.SyncBatchNorm.convert_sync_batchnorm(module)
        if world > 1:  # identical start everywhere (same seed gives it already; this makes it certain)
            import torch.distributed as dist

            for module in self.modules.values():
                for tensor in list(module.parameters()) + list(module.buffers()):
                    dist.broadcast(tensor.data, 0)

    # -- to implement ----------------------------------------------------------------------------------------
    def build(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def extras(self, step: int, batch_size: int, rng: np.random.Generator, gen: torch.Generator) -> dict[str, Any]:
        """Random inputs of a global batch besides the frames (augmentation shifts, noise, masks)."""
        return {}

    def update(self, obs: torch.Tensor, labels: torch.Tensor, extras: dict[str, Any]) -> dict[str, float]:
        raise NotImplementedError  # pragma: no cover

    def evaluate(self, run: Any, final: bool) -> dict[str, float]:
        raise NotImplementedError  # pragma: no cover

    def encoder(self) -> nn.Module:
        raise NotImplementedError  # pragma: no cover

    # -- shared ------------------------------------------------------------------------------------------------
    def sync_gradients(self, module: nn.Module) -> None:
        """Average ``module``'s gradients over data-parallel processes (one flat all-reduce)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        grads = [p.grad for p in module.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def global_batch(self, step: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Dataset indices and extras of step ``step``'s global batch (a pure function of seed and step)."""
        size = self.config.batch_size
        rng = np.random.default_rng([self.config.seed, step])
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)
        indices = rng.integers(len(self.data), size=size)
        return indices, self.extras(step, size, rng, gen)

    def local(self, value: Any) -> Any:
        """This process's rows of a global-batch array."""
        per = self.config.batch_size // self.world
        return value[self.rank * per : (self.rank + 1) * per]

    def train_step(self, step: int) -> dict[str, float]:
        indices, extras = self.global_batch(step)
        obs, labels = self.data.batch(self.local(indices))
        extras = {k: self.local(v) for k, v in extras.items()}
        for module in self.modules.values():
            module.train()
        return self.update(obs.to(self.device), labels.to(self.device), extras)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors: dict[str, torch.Tensor] = {}
        meta: dict[str, Any] = {"method": self.name, "step": self.step, "config": dataclasses.asdict(self.config),
                                "optimizers": {}, "rng": {"torch": None}}
        for name, module in self.modules.items():
            tensors.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
        for name, optimizer in self.optimizers.items():
            optim_tensors, optim_meta = optimizer_tensors(optimizer, prefix=f"optim_{name}")
            tensors.update(optim_tensors)
            meta["optimizers"][name] = optim_meta
        tensors["rng.torch"] = torch.get_rng_state()
        return tensors, meta

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        if meta.get("method") != self.name:
            raise RLKitError(f"checkpoint is for pretraining method {meta.get('method')!r}, not {self.name}.")
        for name, module in self.modules.items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        for name, optimizer in self.optimizers.items():
            load_optimizer_tensors(optimizer, tensors, meta["optimizers"][name], prefix=f"optim_{name}")
        torch.set_rng_state(tensors["rng.torch"])
        self.step = int(meta["step"])

    def eval_indices(self, dataset: FrameDataset, final: bool) -> np.ndarray:
        n = len(dataset)
        if final or n <= self.config.eval_frames:
            return np.arange(n)
        return np.linspace(0, n - 1, self.config.eval_frames).astype(np.int64)


def _import_methods() -> None:
    import rlkit.vision.gan  # noqa: F401
    import rlkit.vision.mae  # noqa: F401
    import rlkit.vision.supervised  # noqa: F401


def method_class(method: str) -> type[Pretrainer]:
    _import_methods()
    return PRETRAINERS.get(method)


def build_pretrain_config(method: str, overrides: list[str], values: dict[str, Any] | None = None) -> Any:
    from rlkit.config import apply_overrides, build_config

    cls = method_class(method)
    values = apply_overrides(dict(values or {}), overrides, cls.Config)
    return build_config(cls.Config, values, source=f"{method} config")


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RLKitError("device=cuda but no CUDA GPU is visible; use device=cpu.")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def default_run_dir(method: str, data_dir: str | Path, seed: int) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{Path(data_dir).resolve().name}__pretrain-{method}__{seed}__{stamp}"


class _Quiet(SignalStop):
    """Stands in for a Run on data-parallel ranks other than 0: no output, but the same signal handling, so a
    Ctrl-C or SIGTERM (which torchrun and a terminal send to every rank) stops all ranks together at the end of
    a step, and rank 0 saves the checkpoint."""

    dir = None
    quiet = True

    def print(self, message: str) -> None:
        pass

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        pass

    def __enter__(self) -> _Quiet:
        self.install_signal_handlers()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore_signal_handlers()


def _average(
    values: dict[str, float], stop: bool, world: int, device: torch.device
) -> tuple[dict[str, float], bool]:
    """Mean of per-process losses (equal local batches: the global-batch loss) and any-rank stop. The all-reduce
    runs on ``device``, the trainer's (an nccl process group has no CPU collectives)."""
    if world == 1:
        return values, stop
    import torch.distributed as dist

    keys = sorted(values)
    packed = torch.tensor([values[k] for k in keys] + [float(stop)], dtype=torch.float64, device=device)
    dist.all_reduce(packed)
    totals = packed.tolist()
    return {k: totals[i] / world for i, k in enumerate(keys)}, totals[-1] > 0


def check_resume_config(run_dir: str | Path, saved: Any, resumed: Any, changeable: frozenset[str]) -> None:
    """One-line error when ``--set`` / flags on a resume change a field outside ``changeable``."""
    changed = [f"{field.name}={getattr(resumed, field.name)!r} (the run has {getattr(saved, field.name)!r})"
               for field in dataclasses.fields(saved)
               if field.name not in changeable and getattr(resumed, field.name) != getattr(saved, field.name)]
    if changed:
        raise RLKitError(f"--resume {run_dir} cannot change {', '.join(changed)}: the checkpoint belongs to the run "
                         f"as configured; drop those overrides (a resume may change {', '.join(sorted(changeable))}) "
                         "or start a new run.")


def run_pretrain(
    method: str | None,
    data_dir: str | Path | None,
    overrides: list[str] | None = None,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    rank: int = 0,
    world: int = 1,
    local_rank: int = 0,
) -> dict[str, Any]:
    """Train (or resume) a pretraining run; returns ``{"run_dir", "metrics", "losses", "step"}``."""
    from rlkit.run import Run, read_run_config

    tensors = meta = None
    saved: dict[str, Any] = {}
    if resume:
        saved = read_run_config(resume, command="pretrain")
        if method and method != saved.get("method"):
            raise RLKitError(f"{resume} is a {saved.get('method')} run, not {method}; drop METHOD.")
        method, data_dir = saved["method"], data_dir or saved["data"]
        config = build_pretrain_config(method, overrides or [], saved["config"])
        check_resume_config(resume, build_pretrain_config(method, [], saved["config"]), config,
                            method_class(method).resume_changeable)
        run_dir = Path(resume)
        checkpoint = run_dir / "checkpoints" / "last.safetensors"
        if not checkpoint.is_file():
            raise RLKitError(f"{run_dir} has no checkpoints/last.safetensors to resume from; start a new run.")
        tensors, meta = load_checkpoint(checkpoint)
    else:
        if not method:
            raise RLKitError("rlkit pretrain needs METHOD (supervised, gan, mae) or --resume RUN_DIR.")
        if not data_dir:
            raise RLKitError("rlkit pretrain needs --data DIR (a dataset written by `rlkit collect`).")
        config = build_pretrain_config(method, overrides or [])
        if getattr(config, "instance_noise_steps", None) == 0:  # fix the GAN's noise horizon for later resumes
            config = dataclasses.replace(config, instance_noise_steps=config.steps)
        run_dir = Path(run_dir) if run_dir else default_run_dir(method, data_dir, config.seed)
        if rank == 0 and (run_dir / "config.yaml").exists():
            raise RLKitError(f"{run_dir} already holds a run; resume it (--resume {run_dir}) or use another --run-dir.")
    manifest = read_manifest(data_dir)
    data_sha256 = manifest_hash(data_dir)
    if saved.get("manifest_sha256") and data_sha256 != saved["manifest_sha256"]:
        trained_on = f"({saved['data']}, manifest sha256 {saved['manifest_sha256'][:12]})"
        if str(data_dir) == str(saved["data"]):
            raise RLKitError(f"{data_dir} no longer holds the dataset {resume} was trained on {trained_on}: its "
                             f"manifest sha256 is now {data_sha256[:12]}; restore that dataset, or start a new run.")
        raise RLKitError(f"{data_dir} (manifest sha256 {data_sha256[:12]}) is not the dataset {resume} was trained on "
                         f"{trained_on}; resume without --data to use that one, or start a new run on {data_dir}.")
    if config.batch_size % world:
        raise RLKitError(f"batch_size {config.batch_size} must be divisible by the {world} data-parallel processes.")
    if config.steps < 1 or config.batch_size < 1:
        raise RLKitError("steps and batch_size must be at least 1.")
    if config.torch_threads > 0 or world == 1:
        torch.set_num_threads(config.torch_threads if config.torch_threads > 0 else (os.cpu_count() or 1))
    device = _device(config.device, local_rank)
    data = FrameDataset(data_dir, "train")
    if len(data) == 0:
        raise RLKitError(f"{data_dir} has no train frames; collect more steps (or more episodes).")
    val = FrameDataset(data_dir, "val")
    trainer = method_class(method)(config, data, val if len(val) else None, device, rank=rank, world=world)
    if tensors is not None:
        trainer.load_state(tensors, meta)
    record = {"algo": f"pretrain-{method}", "method": method, "data": str(Path(data_dir).resolve()),
              "manifest_sha256": data_sha256, "world_size": world, "config": dataclasses.asdict(config)}
    context: Any = Run(run_dir, record) if rank == 0 else _Quiet()
    run: Any = context.__enter__()
    losses: dict[str, float] = {}
    metrics: dict[str, float] = {}
    try:
        if tensors is None:
            run.print(f"run directory: {run_dir}")
            run.print(f"pretrain {method} on {data_dir} ({len(data)} train frames, {manifest['env_id']}), "
                      f"encoder {trainer.config.encoder}, {config.steps} steps, batch {config.batch_size}"
                      + (f" over {world} processes" if world > 1 else ""))
        else:
            run.print(f"resuming {run_dir} at step {trainer.step}")
        local_norms = per_process_batch_norms(trainer.modules) if world > 1 and device.type != "cuda" else []
        if local_norms:
            run.print(f"note: BatchNorm statistics are per process under CPU data parallel (gloo has no "
                      f"SyncBatchNorm), so {len(local_norms)} BatchNorm layer(s) ({local_norms[0]}, ...) train "
                      f"differently from one process at batch {config.batch_size}")
        progress = run.progress(config.steps, trainer.step) if rank == 0 else None
        start = time.time()
        while trainer.step < config.steps:
            step_losses = trainer.train_step(trainer.step)
            trainer.step += 1
            losses, stop = _average(step_losses, run.stop_requested, world, device)
            if rank == 0:
                if trainer.step % config.log_every == 0 or trainer.step == config.steps:
                    run.log_scalars({f"losses/{k}": v for k, v in losses.items()}, trainer.step)
                    run.log_scalars({"charts/sps": trainer.step / max(time.time() - start, 1e-9)}, trainer.step)
                progress.update(trainer.step, {k: f"{v:.4g}" for k, v in list(losses.items())[:3]})
                periodic = (config.eval_every > 0 and trainer.step % config.eval_every == 0
                            and trainer.step < config.steps)
                if periodic:
                    run.log_scalars(trainer.evaluate(run, final=False), trainer.step)
                if (config.checkpoint_every > 0 and trainer.step % config.checkpoint_every == 0) or stop:
                    save_checkpoint(run.checkpoint_dir / "last.safetensors", *trainer.state())
            if stop:
                if progress is not None:
                    progress.close()
                run.print(f"stopped at step {trainer.step}; resume with rlkit pretrain --resume {run_dir}")
                return {"run_dir": run_dir, "metrics": {}, "losses": losses, "step": trainer.step}
        if progress is not None:
            progress.close()
        if rank == 0:
            save_checkpoint(run.checkpoint_dir / "last.safetensors", *trainer.state())
            metrics = trainer.evaluate(run, final=True)
            run.log_scalars(metrics, trainer.step)
            from rlkit.vision.io import save_encoder

            card = {
                "method": method,
                "data": record["data"],
                "manifest_sha256": data_sha256,
                "env_id": manifest["env_id"],
                "steps": trainer.step,
                "config": dataclasses.asdict(config),
                "world_size": world,
                "metrics": metrics,
            }
            path = Path(run_dir) / "encoder.safetensors"
            card = save_encoder(path, trainer.encoder(), card)
            write_text_atomic(path.with_suffix(".json"), json.dumps(card, indent=1))
            write_text_atomic(Path(run_dir) / "metrics.json", json.dumps(metrics, indent=1))
            run.print(f"wrote {path} (card {path.with_suffix('.json')})")
    finally:
        context.__exit__(None, None, None)
    return {"run_dir": run_dir, "metrics": metrics, "losses": losses, "step": trainer.step}


def distributed_main(argv: list[str] | None = None) -> int:
    """Entry of ``torchrun -m rlkit.vision.pretrain``: one data-parallel process (gloo on CPU, nccl on GPU)."""
    import torch.distributed as dist

    args = make_parser().parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    overrides = pretrain_overrides(args)
    if world > 1:
        backend = "nccl" if torch.cuda.is_available() and "device=cpu" not in overrides else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend)
    code = 2
    try:
        run_pretrain(args.method, args.data, overrides, args.run_dir, args.resume, rank, world, local_rank)
        if world > 1:
            dist.barrier()  # every rank has finished and the encoder is written
        code = 0
    except RLKitError as exc:
        if rank == 0:
            print(f"error: {exc}", file=sys.stderr)
    if world > 1:
        leave_process_group(code)
    return code


def leave_process_group(code: int) -> NoReturn:
    """End a data-parallel process at once, without tearing the process group down.

    Tearing gloo down (``destroy_process_group``, or the C++ destructors at interpreter exit) has aborted one
    rank with "terminate called without an active exception" after every rank had passed the final barrier
    and the encoder was written (CI, torch 2.13). Nothing is left to release but sockets and memory, which
    the operating system reclaims, so the process flushes its output and exits with ``code``.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def pretrain_overrides(args: argparse.Namespace) -> list[str]:
    """--set items plus the --encoder / --steps / --batch-size shortcuts."""
    overrides = list(args.set or [])
    if args.encoder:
        overrides.append(f"encoder={args.encoder}")
    if args.steps is not None:
        overrides.append(f"steps={args.steps}")
    if args.batch_size is not None:
        overrides.append(f"batch_size={args.batch_size}")
    return overrides


def add_pretrain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("method", nargs="?", help="supervised | gan | mae")
    parser.add_argument("--data", metavar="DIR", help="dataset directory written by `rlkit collect`")
    parser.add_argument("--encoder", help="encoder to train (see `rlkit encoders`)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    parser.add_argument("--run-dir", help="run directory (default runs/<data>__pretrain-<method>__<seed>__<time>)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a pretraining run from its last checkpoint")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rlkit.vision.pretrain")
    add_pretrain_arguments(parser)
    return parser


if __name__ == "__main__":
    sys.exit(distributed_main())
