"""A run: its directory, config.yaml, stdout.log, TensorBoard writer, progress display and signal handling.

Layout: ``runs/<env>__<algo>__<seed>__<timestamp>/`` with ``config.yaml``, ``events.out.tfevents.*``,
``checkpoints/`` (``last``, ``best``, periodic), ``eval/`` and ``stdout.log``.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from rlkit.checkpoint import write_text_atomic
from rlkit.errors import RLKitError


def run_name(env_id: str, algo: str, seed: int) -> str:
    return f"{env_id.replace('/', '-')}__{algo}__{seed}__{time.strftime('%Y%m%d-%H%M%S')}"


def read_run_config(run_dir: str | Path, command: str = "train") -> dict[str, Any]:
    """The saved ``config.yaml`` of a run (``algo`` + ``config`` mapping) made by ``rlkit COMMAND`` (train or
    pretrain; a pretraining run also records its ``method``)."""
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if not run_dir.is_dir():
        raise RLKitError(f"run directory {run_dir} does not exist; pass a directory made by `rlkit {command}`.")
    if not path.is_file():
        raise RLKitError(f"{run_dir} has no config.yaml, so it is not an rlkit run directory.")
    try:
        data = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise RLKitError(f"{path} is not text (binary or damaged); restore it or start a new run.") from None
    except yaml.YAMLError as exc:
        raise RLKitError(f"{path} is not valid YAML ({type(exc).__name__}); restore it or start a new run.") from None
    if not isinstance(data, dict) or "algo" not in data or "config" not in data:
        raise RLKitError(f"{path} is not an rlkit run config (needs 'algo' and 'config').")
    if command == "pretrain" and "method" not in data:
        raise RLKitError(f"{run_dir} is a `rlkit train` run ({data['algo']}), not a pretraining run; resume it with "
                         f"`rlkit train --resume {run_dir}`.")
    return data


class Progress:
    """A live tqdm bar on a terminal; plain periodic lines otherwise."""

    def __init__(self, total: int, initial: int, print_fn: Any, interval_s: float = 30.0) -> None:
        self.total, self.print_fn, self.interval_s = total, print_fn, interval_s
        self.tty = sys.stderr.isatty()
        self.bar = None
        self.start_time = time.time()
        self.last_print = self.start_time
        self.last_step = initial
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, smoothing=0.05)
        self.step = initial

    def update(self, step: int, stats: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.update(step - self.step)
            self.bar.set_postfix({k: v for k, v in stats.items()}, refresh=False)
        self.step = step
        now = time.time()
        if self.bar is None and now - self.last_print >= self.interval_s:
            sps = (step - self.last_step) / max(now - self.last_print, 1e-9)
            self.last_print, self.last_step = now, step
            eta = (self.total - step) / max(sps, 1e-9)
            parts = " ".join(f"{k}={v}" for k, v in stats.items())
            percent = 100 * step / self.total
            self.print_fn(f"step {step}/{self.total} ({percent:.1f}%) sps={sps:.0f} {parts} eta={eta / 60:.1f}min")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class SignalStop:
    """SIGINT, SIGTERM and SIGHUP set ``stop_requested`` (the loop then saves and stops at the end of its step).
    A second one only says that the checkpoint is on its way (the first is announced at the loop's next check,
    which can be seconds later, so a second press is likely and must not lose the save); a third raises
    KeyboardInterrupt, giving up on the checkpoint. ``install_signal_handlers`` / ``restore_signal_handlers``
    bracket the work; subclasses provide ``print``."""

    quiet = False
    """True where this process prints nothing (data-parallel ranks other than 0)"""

    def __init__(self) -> None:
        self._stop = False
        self._signals = 0
        self._unannounced_signal: str | None = None
        self._previous_handlers: dict[int, Any] = {}

    def print(self, message: str) -> None:
        raise NotImplementedError

    @property
    def stop_requested(self) -> bool:
        """Whether a signal asked the run to stop. The first read after the signal prints that it arrived:
        printing in the handler itself could interrupt a write to the same stream (a crash)."""
        if self._unannounced_signal is not None:
            name, self._unannounced_signal = self._unannounced_signal, None
            self.print(f"received {name}: saving a checkpoint and stopping")
        return self._stop

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals += 1
        if self._signals >= 3:  # third Ctrl-C: give up on the clean stop
            raise KeyboardInterrupt
        if self._stop:  # second: the stop is under way. os.write, not print: the handler may interrupt a print
            if not self.quiet:
                os.write(2, b"stopping: finishing the step and saving a checkpoint; "
                            b"a third Ctrl-C aborts without saving\n")
            return
        self._stop = True
        self._unannounced_signal = signal.Signals(signum).name

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                self._previous_handlers[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread
                pass

    def restore_signal_handlers(self) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers.clear()


class Run(SignalStop):
    """Owns a run directory and its writers. Use as a context manager."""

    def __init__(self, run_dir: Path, record: dict[str, Any]) -> None:
        """``record`` (algo, preset, config, env settings) is written as config.yaml; a resume rewrites it
        with the overrides it was given (e.g. a longer total_steps)."""
        super().__init__()
        self.dir = Path(run_dir)
        self.record = record
        self.checkpoint_dir = self.dir / "checkpoints"
        self.eval_dir = self.dir / "eval"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.dir / ".lock", "w")  # held while this process owns the run directory
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RLKitError(f"{self.dir} is in use by another rlkit process; wait for it to end, or use another "
                             "--run-dir.") from None
        self.checkpoint_dir.mkdir(exist_ok=True)
        self.eval_dir.mkdir(exist_ok=True)
        self.write_config()
        self._log = open(self.dir / "stdout.log", "a", buffering=1)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.dir), flush_secs=30)

    def write_config(self) -> None:
        write_text_atomic(self.dir / "config.yaml", yaml.safe_dump(self.record, sort_keys=False))

    def print(self, message: str) -> None:
        """Print a line and append it to stdout.log (above a live progress bar)."""
        try:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stdout)
            sys.stdout.flush()
        except ImportError:  # pragma: no cover
            print(message, flush=True)
        self._log.write(message + "\n")

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)

    def progress(self, total: int, initial: int) -> Progress:
        return Progress(total, initial, self.print)

    def __enter__(self) -> Run:
        self.install_signal_handlers()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore_signal_handlers()
        self.writer.close()
        self._log.close()
        self._lock.close()  # releases the lock
