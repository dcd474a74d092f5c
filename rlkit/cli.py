"""Command line: ``rlkit train | eval | collect | pretrain | probe | envs | presets | encoders``.

User mistakes raise ``RLKitError``; ``main`` prints them as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlkit.checkpoint import write_text_atomic
from rlkit.config import MAX_SEED
from rlkit.errors import RLKitError

EXIT_USER_ERROR = 2
STOCHASTIC_EPSILON = 0.05  # epsilon of --stochastic evaluation for value-based agents (Nature DQN's eval value)
# (policy-gradient agents sample from their policy under --stochastic)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are RLKitErrors (one line, exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise RLKitError(f"{self.prog}: {message} (see {self.prog} --help)")


def at_least(low: int, high: int | None = None) -> Any:
    """argparse type: an int >= ``low`` (and <= ``high``), else a one-line usage error naming the option."""

    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in "invalid int value: 'x'"
    return parse


def fraction(text: str) -> float:
    """argparse type: a probability in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value:g}")
    return value


fraction.__name__ = "float"
seed_number = at_least(0, MAX_SEED)
"""argparse type of ``--seed``: an int in [0, 2**31 - 1], what every seeded library takes."""


def require_output_dir(path: str | None, option: str) -> None:
    """A one-line error before any work when an output directory option names an existing file."""
    if path and Path(path).exists() and not Path(path).is_dir():
        raise RLKitError(f"{option} {path} is a file; pass a directory (it is created if missing).")


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads if threads > 0 else (os.cpu_count() or 1))


def _probe_env(env_id: str, env_kwargs: dict, mode: str = "train") -> tuple[Any, Any, dict]:
    """Observation space, action space and resolved settings of ``env_id`` (one env, then closed)."""
    from rlkit.envs import make_vec_env

    envs = make_vec_env(env_id, 1, mode=mode, env_kwargs=env_kwargs)
    try:
        return envs.single_observation_space, envs.single_action_space, envs.settings_dict
    finally:
        envs.close()


def requested_device_type(overrides: list[str]) -> str:
    """``cuda`` or ``cpu``: the device a run will use (a ``device=`` override, else auto), which picks the
    default preset of an env family."""
    device = "auto"
    for item in overrides:
        key, _, value = item.partition("=")
        if key.strip() == "device":
            device = value.strip()
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if device.startswith("cuda") else "cpu"


ENCODER_FLAGS = {"encoder_path": "encoder", "freeze_encoder": "freeze", "encoder_lr_scale": "encoder-lr-scale"}
ARCHITECTURE_FIELDS = ("encoder", "encoder_kwargs", "dueling", "lstm_hidden", "lstm_layers", "squash",
                       "normalize_observations", "normalize_rewards")
"""Config fields that shape an agent's networks: ``--init-from`` takes them from the checkpoint's config."""


def checkpoint_step(meta: dict[str, Any]) -> int | None:
    """The env step a checkpoint was saved at (None where its metadata lacks it)."""
    counters = meta.get("counters")
    return counters.get("global_step") if isinstance(counters, dict) else None


def init_source(algo: str, target: str) -> tuple[Path, dict[str, Any]]:
    """The checkpoint ``--init-from`` names (a run directory: its last checkpoint) and its metadata."""
    from rlkit.checkpoint import read_metadata

    path = resolve_checkpoint(target, "last")
    meta = read_metadata(path)
    source_algo = checkpoint_algo(path, meta)
    if source_algo != algo:
        raise RLKitError(
            f"{path} holds a {source_algo} agent, not {algo}; use `rlkit train {source_algo} --init-from {target}`."
        )
    return path, meta


def checkpoint_algo(path: Path, meta: dict[str, Any]) -> str:
    """The algorithm of an agent checkpoint's metadata, checked to come with its config; a one-line error for
    another rlkit checkpoint (a pretraining run's) or damaged metadata."""
    algo = meta.get("algo")
    if isinstance(algo, str) and isinstance(meta.get("config"), dict):
        return algo
    if "method" in meta:
        raise RLKitError(f"{path} is a pretraining checkpoint ({meta['method']}), not an agent; pass a checkpoint of "
                         "`rlkit train`, or start an agent from the pretraining run's encoder.safetensors with "
                         "`rlkit train ALGO --encoder FILE`.")
    raise RLKitError(f"{path} holds no agent (its metadata has no algo and config); pass a checkpoint written by "
                     "`rlkit train`.")


def load_agent_state(agent: Any, tensors: dict[str, Any], meta: dict[str, Any], checkpoint: Path, fix: str) -> None:
    """``agent.load_state_dict``, with a one-line error (ending in ``fix``) for a checkpoint whose tensors do not
    fit the agent's networks or that lacks an entry the agent restores."""
    try:
        agent.load_state_dict(tensors, meta)
    except RuntimeError as exc:  # torch: missing, unexpected or differently shaped weights
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = (lines[1] if len(lines) > 1 else lines[0] if lines else "")[:200]
        raise RLKitError(f"{checkpoint} does not fit the network this config builds ({detail}); {fix}.") from None
    except KeyError as exc:
        raise RLKitError(f"{checkpoint} lacks {exc.args[0]!r}, which a {meta.get('algo')} checkpoint holds; the file "
                         "is damaged or from another rlkit version: use another checkpoint.") from None


def build_train_config(algo: str, args: argparse.Namespace) -> tuple[Any, str | None, Path | None]:
    """(config, preset, the ``--init-from`` checkpoint or None) of a new run from the command line."""
    from rlkit.config import apply_overrides, build_config, default_preset, load_preset
    from rlkit.envs import env_family, env_spec
    from rlkit.registry import AGENTS

    agent_cls = AGENTS.get(algo)
    if not args.env:
        raise RLKitError(f"rlkit train {algo} needs --env ID (see `rlkit envs`).")
    env_spec(args.env)
    family = env_family(args.env)
    preset = args.preset or default_preset(algo, family, requested_device_type(args.set or []))
    values: dict[str, Any] = load_preset(algo, preset) if preset else {}
    values = apply_overrides(values, args.set or [], agent_cls.Config)
    values["env_id"] = args.env
    if args.seed is not None:
        values["seed"] = args.seed
    if args.total_steps is not None:
        values["total_steps"] = args.total_steps
    flags = {
        "encoder_path": args.encoder,
        "freeze_encoder": args.freeze or None,
        "encoder_lr_scale": args.encoder_lr_scale,
    }
    for key, value in flags.items():
        if value is None:
            continue
        if key not in {f.name for f in dataclasses.fields(agent_cls.Config)}:
            raise RLKitError(f"--{ENCODER_FLAGS[key]} does not apply to {algo}; it has no pretrained-encoder support.")
        values[key] = value
    chosen = apply_overrides({}, args.set or [], agent_cls.Config)
    if values.get("encoder_path"):
        # The file's card names the architecture: a preset's encoder gives way, the user's own --set does not.
        for key in ("encoder", "encoder_kwargs"):
            if key not in chosen:
                values.pop(key, None)
    init_path = None
    if args.init_from:
        if values.get("encoder_path"):
            raise RLKitError("--init-from starts from a whole trained agent; drop --encoder (encoder_path).")
        init_path, meta = init_source(algo, args.init_from)
        fields = {f.name for f in dataclasses.fields(agent_cls.Config)}
        for key in ARCHITECTURE_FIELDS:
            if key in fields and key in meta["config"] and key not in chosen:
                values[key] = meta["config"][key]
    config = build_config(agent_cls.Config, values, source=f"{algo} config")
    return config, preset, init_path


def cmd_train(args: argparse.Namespace) -> int:
    from rlkit.checkpoint import load_checkpoint, read_metadata
    from rlkit.config import apply_overrides, build_config, config_help
    from rlkit.registry import AGENTS
    from rlkit.run import Run, read_run_config, run_name

    lineage, init_path = None, None
    if args.resume:
        if args.encoder or args.freeze or args.encoder_lr_scale is not None:
            raise RLKitError("--encoder, --freeze, --encoder-lr-scale are for new runs; a resume keeps its encoder.")
        if args.init_from:
            raise RLKitError("--init-from starts a new run; a resume continues from its own checkpoint. Drop one.")
        saved = read_run_config(args.resume)
        if "method" in saved:
            raise RLKitError(f"{args.resume} is a pretraining run ({saved['method']}); resume it with "
                             f"`rlkit pretrain --resume {args.resume}`.")
        if not isinstance(saved["config"], dict):
            raise RLKitError(f"{args.resume}/config.yaml has a damaged config (not a mapping of fields); restore it "
                             "or start a new run.")
        lineage = saved.get("init_from")
        algo = saved["algo"]
        if args.algo and args.algo != algo:
            raise RLKitError(f"{args.resume} is a {algo} run, not {args.algo}; drop ALGO or use `rlkit train {algo}`.")
        agent_cls = AGENTS.get(algo)
        check_resume_flags(args, saved, apply_overrides({}, args.set or [], agent_cls.Config))
        try:
            build_config(agent_cls.Config, saved["config"], source=f"{algo} config")
        except RLKitError as exc:
            raise RLKitError(
                f"{args.resume}/config.yaml names algorithm {algo} but its config does not fit {algo} ({exc})."
            ) from None
        values = apply_overrides(saved["config"], args.set or [], agent_cls.Config)
        if args.total_steps is not None:
            values["total_steps"] = args.total_steps
        config = build_config(agent_cls.Config, values, source=f"{algo} config")  # errors name the --set
        run_dir = Path(args.resume)
        checkpoint = run_dir / "checkpoints" / "last.safetensors"
        if not checkpoint.is_file():
            others = sorted(path.name for path in checkpoint.parent.glob("*.safetensors"))
            if others:
                raise RLKitError(f"{run_dir} has no checkpoints/last.safetensors to resume from (only "
                                 f"{', '.join(others)}); start a new run in another --run-dir.")
            raise RLKitError(f"{run_dir} has no checkpoints/last.safetensors to resume from (its run saved none); "
                             f"start it again with the same command and --run-dir {run_dir}.")
        reached = checkpoint_step(read_metadata(checkpoint)) or 0
        previous_config: str | None = (run_dir / "config.yaml").read_text()
        if reached >= config.total_steps:
            raise RLKitError(f"{run_dir} is already at step {reached} of total_steps {config.total_steps}; "
                             f"pass --total-steps above {reached} to train it further.")
        preset = saved.get("preset")
        check_stop_at_return(config)
    else:
        if not args.algo and args.help:
            print(args.train_parser.format_help().rstrip())
            print(f"\nalgorithms: {', '.join(AGENTS.names())}; `rlkit train ALGO --help` lists ALGO's config fields.")
            return 0
        if not args.algo:
            raise RLKitError("rlkit train needs ALGO (e.g. dqn) or --resume RUN_DIR; see `rlkit train --help`.")
        agent_cls = AGENTS.get(args.algo)
        require_output_dir(args.run_dir, "--run-dir")
        if args.help:
            resolved, preset, _ = build_train_config(args.algo, args) if args.env else (None, None, None)
            print(args.train_parser.format_help().rstrip())
            if resolved is not None:  # the fields as this env's preset (and any --set) resolve them
                print(f"\n{args.algo} config fields for {args.env} (preset {preset or 'none'}, --set applied):")
                print(config_help(agent_cls.Config, resolved))
            else:
                print(f"\n{args.algo} config fields (class defaults; the preset for --env overrides some of them: add "
                      "--env ID to see them resolved, `rlkit presets` lists the presets):")
                print(config_help(agent_cls.Config))
            return 0
        algo = args.algo
        config, preset, init_path = build_train_config(algo, args)
        check_stop_at_return(config)
        if args.seeds:
            return train_group(algo, config, args)
        run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / run_name(config.env_id, algo, config.seed)
        saved_any = any((run_dir / "checkpoints").glob("*.safetensors"))  # a run that never saved may start again
        if (run_dir / "config.yaml").exists() and saved_any:
            raise RLKitError(f"{run_dir} already holds a run; resume it (--resume {run_dir}) or use another --run-dir.")
        checkpoint, reached, previous_config = None, 0, None

    _set_threads(config.torch_threads)
    try:
        observation_space, action_space, env_settings = _probe_env(config.env_id, config.env_kwargs)
    except RLKitError as exc:
        if args.preset and not args.resume and str(exc).startswith("bad env_kwargs"):
            raise RLKitError(f"preset {args.preset} sets env_kwargs {config.env_kwargs}, which {config.env_id} does "
                             "not take; drop --preset or choose one for this env from `rlkit presets`.") from None
        raise
    if checkpoint is None:
        from rlkit.agents.base import resolve_encoder_config

        config = resolve_encoder_config(config, observation_space)
    agent = agent_cls(config, observation_space, action_space)
    pretrained = checkpoint is None and agent.load_pretrained_encoder()
    if checkpoint is not None:
        tensors, meta = load_checkpoint(checkpoint)
        load_agent_state(agent, tensors, meta, checkpoint,
                         "resume without changing network settings (dueling, encoder, encoder_kwargs, ...)")
        agent.restore_buffer(checkpoint.parent)
        best_file = checkpoint.parent / "best.safetensors"
        if best_file.is_file():  # a best saved after last.safetensors (then the run was killed) still counts
            try:
                saved_best = read_metadata(best_file).get("counters", {}).get("best_eval")
            except RLKitError:
                saved_best = None
            if isinstance(saved_best, (int, float)) and saved_best > agent.best_eval:
                agent.best_eval = float(saved_best)
    elif init_path is not None:
        tensors, meta = load_checkpoint(init_path)
        agent.warm_start(tensors, meta, str(init_path))
        lineage = {
            "checkpoint": str(init_path.resolve()),
            "env_id": meta["config"].get("env_id"),
            "global_step": checkpoint_step(meta),
        }
    record = {"algo": algo, "preset": preset, "config": dataclasses.asdict(config), "env_settings": env_settings}
    if lineage:
        record["init_from"] = lineage
    with Run(run_dir, record) as run:
        if checkpoint is None:
            run.print(f"run directory: {run.dir}")
            run.print(
                f"{algo} on {config.env_id} (preset {preset or 'none'}), {config.total_steps} steps, seed {config.seed}"
            )
            if agent.precision != "fp32":
                run.print(f"encoder arithmetic: {agent.precision} autocast (precision={config.precision})")
            if pretrained:
                how = "frozen" if config.freeze_encoder else f"fine-tuned at lr x {config.encoder_lr_scale:g}"
                run.print(f"encoder {config.encoder} {config.encoder_kwargs} from {config.encoder_path}, {how}")
            elif getattr(config, "freeze_encoder", False) and not lineage:
                run.print("encoder frozen at its random initialisation (no --encoder given): a random-features "
                          "baseline; pass --encoder PATH to freeze a pretrained one")
            if lineage:
                run.print(
                    f"weights from {lineage['checkpoint']} ({lineage['env_id']}, step {lineage['global_step']}); "
                    f"optimizer, schedules and counters start afresh"
                )
        else:
            run.print(f"resuming {run.dir} at step {agent.global_step}")
            report_schedule_jumps(run, config, saved["config"].get("total_steps"), agent.global_step)
        try:
            agent.learn(run)
        except RLKitError:
            if previous_config is not None and agent.global_step == reached:  # refused before training a step:
                write_text_atomic(run_dir / "config.yaml", previous_config)  # the run keeps its own config
            raise
        run.print(f"run directory: {run.dir}")
    return 0


def report_schedule_jumps(run: Any, config: Any, saved_total: int, step: int) -> None:
    """Say how each schedule spanning ``total_steps`` moves at ``step`` when a resume changes ``total_steps``:
    the learning rate (``lr_schedule``), prioritized replay's beta, PPO's annealed clip range."""
    if saved_total == config.total_steps:
        return
    from rlkit.agents.optim import OptimizerConfig, scheduled_lr
    from rlkit.agents.schedules import linear_schedule

    def report(what: str, moving: str, value_at: Callable[[int], float]) -> None:
        run.print(f"{what} total_steps, now {config.total_steps} (was {saved_total}): {moving} moves from "
                  f"{value_at(saved_total):.3g} to {value_at(config.total_steps):.3g} at this step")

    if isinstance(config, OptimizerConfig) and config.lr_schedule != "constant":
        report(f"lr_schedule={config.lr_schedule} spans", "the learning rate",
               lambda total: scheduled_lr(dataclasses.replace(config, total_steps=total), step))
    if getattr(config, "prioritized", False):
        report("prioritized replay's beta anneals to 1 over", "it",
               lambda total: linear_schedule(config.per_beta_start, 1.0, total, step))
    if getattr(config, "anneal_clip", False) and config.clip_range > 0:
        report("anneal_clip spans", "the clip range",
               lambda total: linear_schedule(config.clip_range, 0.0, total, step))


def check_resume_flags(args: argparse.Namespace, saved: dict[str, Any], overrides: dict[str, Any]) -> None:
    """One-line errors for ``rlkit train --resume`` flags the resumed run cannot honour: it keeps its env, seed,
    preset and directory (``--total-steps`` and the other ``--set`` fields may change). ``overrides``: the ``--set``
    fields."""
    run, config = args.resume, saved["config"]
    kept = (("--env", args.env, "env_id", config.get("env_id")), ("--seed", args.seed, "seed", config.get("seed")),
            ("--set env_id", overrides.get("env_id"), "env_id", config.get("env_id")),
            ("--set seed", overrides.get("seed"), "seed", config.get("seed")),
            ("--preset", args.preset, "preset", saved.get("preset")))
    for flag, given, name, own in kept:
        if given is not None and given != own:
            raise RLKitError(f"{run} was trained with {name} {own}, and a resume keeps it: drop {flag} ({given}), or "
                             "start a new run.")
    if args.run_dir and Path(args.run_dir).resolve() != Path(run).resolve():
        raise RLKitError(f"a resume continues in the run's own directory {run}: drop --run-dir ({args.run_dir}).")
    if args.seeds:
        raise RLKitError(f"a resume continues one run ({run}, seed {config.get('seed')}): drop --seeds "
                         f"({args.seeds}), and resume each seed's run directory on its own.")


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' or '0-4' -> list of distinct seeds in [0, MAX_SEED] (else a one-line error)."""
    span = "-" in text and "," not in text  # "0-4": the first and the last seed
    try:
        named = [int(x) for x in text.split("-")] if span else [int(x) for x in text.split(",") if x.strip()]
        if span:
            low, high = named
    except ValueError:
        raise RLKitError(f"--seeds {text!r} is not a list of integers; write e.g. 0,1,2 or 0-4.") from None
    outside = [seed for seed in named if not 0 <= seed <= MAX_SEED]
    if outside:
        raise RLKitError(f"--seeds {text!r}: seed {outside[0]} is out of range; seeds are in [0, {MAX_SEED}].")
    seeds = list(range(low, high + 1)) if span else named
    if not seeds or len(set(seeds)) != len(seeds):
        raise RLKitError(f"--seeds {text!r} must name distinct seeds, e.g. --seeds 0,1,2.")
    return seeds


def train_group(algo: str, config: Any, args: argparse.Namespace) -> int:
    """One run per seed, each its own process (at most ``--workers`` at once), in one group directory."""
    import subprocess
    import time

    import yaml

    seeds = parse_seeds(args.seeds)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    default_group = Path("runs") / f"{config.env_id.replace('/', '-')}__{algo}__group__{stamp}"
    group = Path(args.run_dir) if args.run_dir else default_group
    if group.exists() and any(group.iterdir()):
        raise RLKitError(f"{group} already exists and is not empty; pick another --run-dir.")
    group.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "rlkit.cli", "train", algo, "--env", config.env_id]
    if args.preset:
        base += ["--preset", args.preset]
    for item in args.set or []:
        base += ["--set", item]
    if args.total_steps is not None:
        base += ["--total-steps", str(args.total_steps)]
    if args.encoder:
        base += ["--encoder", str(Path(args.encoder).resolve())]
    if args.init_from:
        base += ["--init-from", str(Path(args.init_from).resolve())]
    if args.freeze:
        base += ["--freeze"]
    if args.encoder_lr_scale is not None:
        base += ["--encoder-lr-scale", str(args.encoder_lr_scale)]
    parallel = min(args.workers, len(seeds))
    if parallel > 1 and config.torch_threads == 0:
        # Each process would otherwise take every core; oversubscribed, torch's spinning threads stall each other.
        base += ["--set", f"torch_threads={max(1, (os.cpu_count() or 1) // parallel)}"]
    commands = {seed: base + ["--seed", str(seed), "--run-dir", str(group / f"seed_{seed}")] for seed in seeds}
    write_text_atomic(
        group / "group.yaml",
        yaml.safe_dump({"algo": algo, "env_id": config.env_id, "seeds": seeds, "command": base}, sort_keys=False),
    )
    print(f"group directory: {group} ({len(seeds)} seeds, {args.workers} at a time)")
    pending, running, failed = list(seeds), {}, []

    def stop_like_ctrl_c(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous_sigterm = signal.signal(signal.SIGTERM, stop_like_ctrl_c)  # SIGTERM stops the seeds as Ctrl-C does
    try:
        while pending or running:
            while pending and len(running) < args.workers:
                seed = pending.pop(0)
                log = open(group / f"seed_{seed}.log", "w")
                # Its own session: a Ctrl-C at the terminal reaches only this process, which forwards it once
                # (a second SIGINT would abort the seed's checkpoint save).
                running[seed] = (subprocess.Popen(commands[seed], stdout=log, stderr=subprocess.STDOUT,
                                                  start_new_session=True), log)
                print(f"seed {seed}: started (log {group / f'seed_{seed}.log'})")
            for seed, (proc, log) in list(running.items()):
                if proc.poll() is not None:
                    log.close()
                    del running[seed]
                    status = "done" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
                    if proc.returncode != 0:
                        failed.append(seed)
                    print(f"seed {seed}: {status}")
            time.sleep(0.5)
    except KeyboardInterrupt:
        for proc, _ in running.values():
            proc.send_signal(signal.SIGINT)
        broken = [seed for seed, (proc, _) in running.items() if proc.wait() != 0]
        if broken:
            raise RLKitError(f"stopped, but seeds {broken} exited with an error while saving; see their logs in "
                             f"{group}.") from None
        print(f"stopped; each seed saved its checkpoint: resume with rlkit train --resume {group}/seed_N")
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
    print(f"group directory: {group}")
    if failed:
        raise RLKitError(f"seeds {failed} failed; see their logs in {group}.")
    return 0


def check_stop_at_return(config: Any) -> None:
    """A one-line error for ``stop_at_return`` without the periodic evaluations that check it."""
    if getattr(config, "stop_at_return", None) is not None and config.eval_every == 0:
        raise RLKitError(f"stop_at_return={config.stop_at_return:g} is checked at the periodic evaluations, and "
                         "eval_every=0 turns them off; set eval_every (e.g. --set eval_every=10000).")


def resolve_checkpoint(target: str, which: str = "best") -> Path:
    """A run directory (its best, else last checkpoint) or a checkpoint file."""
    path = Path(target)
    if path.is_dir():
        directory = path / "checkpoints"
        if which.isdigit():
            order = [f"step_{int(which):09d}"]
        else:
            order = ["best", "last"] if which == "best" else [which.removesuffix(".safetensors")]
        for name in order:
            candidate = directory / f"{name}.safetensors"
            if candidate.is_file():
                return candidate
        saved = sorted(p.stem for p in directory.glob("*.safetensors") if p.stem != "replay")
        hint = f"saved: {', '.join(saved)}" if saved else "train it first"
        raise RLKitError(f"{path} has no checkpoint {' or '.join(order)} under checkpoints/; {hint}.")
    if not path.exists():
        raise RLKitError(f"{path} does not exist; pass a run directory or a .safetensors checkpoint.")
    return path


def format_table(summary: dict[str, float]) -> str:
    """A two-line table of evaluation statistics (then the means of the env's episode metrics, e.g. success)."""
    columns = ["episodes", "mean", "std", "median", "iqm", "min", "max", "mean_length", "human_normalized_mean"]
    names = {"mean_length": "mean len", "human_normalized_mean": "human-norm"}
    present = [c for c in columns if c in summary] + [c for c in summary if c not in columns]
    widths = [max(10, len(names.get(c, c))) for c in present]
    header = "  ".join(f"{names.get(c, c):>{w}s}" for c, w in zip(present, widths))
    values = "  ".join(
        f"{summary[c]:>{w}d}" if c == "episodes" else f"{summary[c]:>{w}.2f}" for c, w in zip(present, widths)
    )
    return f"{header}\n{values}"


def _load_for_eval(args: argparse.Namespace) -> tuple[Any, Any, Path, dict]:
    """(agent, config-like object with env_id/env_kwargs, checkpoint path, description) for ``rlkit eval``."""
    from types import SimpleNamespace

    given = args.sb3 or args.target
    if args.checkpoint and given and Path(given).is_file():
        raise RLKitError(f"--checkpoint picks a checkpoint of a run directory, and {given} is a file already; "
                         "drop --checkpoint, or pass the run directory.")
    if args.sb3:
        from rlkit.sb3 import SB3Agent

        if not args.env:
            raise RLKitError("--sb3 needs --env ID: the env the SB3 model was trained on, e.g. --env ALE/Pong-v5.")
        agent = SB3Agent(args.sb3)
        config = SimpleNamespace(env_id=args.env, env_kwargs={}, seed=0, eval_epsilon=0.0)
        observation_space, action_space, _ = _probe_env(args.env, {}, mode="eval")
        agent.check_env(observation_space, action_space, args.env)
        return agent, config, Path(args.sb3), {**agent.describe(), "step": None, "config": None}
    if not args.target:
        raise RLKitError("rlkit eval needs RUN_DIR or CHECKPOINT (or --sb3 MODEL.zip --env ID).")
    return load_agent(args.target, args.checkpoint or "best", args.env)


def load_agent(target: str, which: str = "best", env_id: str | None = None) -> tuple[Any, Any, Path, dict]:
    """(agent, config, checkpoint path, description) of a run directory or checkpoint, built for its env in
    evaluation mode; ``env_id`` (if given) must be the env it was trained on."""
    from rlkit.checkpoint import load_checkpoint
    from rlkit.config import build_config
    from rlkit.registry import AGENTS

    checkpoint = resolve_checkpoint(target, which)
    tensors, meta = load_checkpoint(checkpoint)
    algo = checkpoint_algo(checkpoint, meta)
    agent_cls = AGENTS.get(algo)
    try:
        config = build_config(agent_cls.Config, meta["config"], source="checkpoint config")
    except RLKitError as exc:
        raise RLKitError(
            f"{checkpoint} says it holds a {algo} agent but its config does not fit {algo} ({exc}); "
            "the file is corrupt or from another rlkit version."
        ) from None
    if env_id and env_id != config.env_id:
        raise RLKitError(
            f"{checkpoint} was trained on {config.env_id}, not {env_id}; use it on {config.env_id} (drop --env)."
        )
    _set_threads(config.torch_threads)
    observation_space, action_space, _ = _probe_env(config.env_id, config.env_kwargs, mode="eval")
    agent = agent_cls(config, observation_space, action_space)
    load_agent_state(agent, tensors, meta, checkpoint, "the file is damaged or from another rlkit version")
    info = {"algo": algo, "step": checkpoint_step(meta), "config": dataclasses.asdict(config)}
    return agent, config, checkpoint, info


def eval_env_override(config: Any, items: list[str], agent: Any) -> Any:
    """A copy of ``config`` whose ``env_kwargs`` carry the ``--env-kwarg KEY=VALUE`` items (e.g.
    ``repeat_action_probability=0``); the env must still give the observations and actions the agent was built for."""
    import copy

    from rlkit.config import parse_value

    env_kwargs = dict(config.env_kwargs or {})
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise RLKitError(
                f"bad --env-kwarg {item!r}: write it as KEY=VALUE, e.g. --env-kwarg repeat_action_probability=0."
            )
        env_kwargs[key.strip()] = parse_value(text)
    observation_space, action_space, _ = _probe_env(config.env_id, env_kwargs, mode="eval")
    expected = getattr(agent, "observation_space", None), getattr(agent, "action_space", None)
    if None not in expected and (observation_space, action_space) != expected:
        raise RLKitError(
            f"with {' '.join(items)} {config.env_id} gives observations {observation_space} and actions "
            f"{action_space}, the agent was trained on {expected[0]} and {expected[1]}; change settings that keep "
            "the spaces."
        )
    config = copy.copy(config)
    config.env_kwargs = env_kwargs
    return config


def cmd_eval(args: argparse.Namespace) -> int:
    from rlkit.evaluation import AgentActor, evaluate
    from rlkit.stats import human_normalized

    require_output_dir(args.out, "--out")
    agent, config, checkpoint, info = _load_for_eval(args)
    if args.env_kwarg:
        config = eval_env_override(config, args.env_kwarg, agent)
    seed = args.seed if args.seed is not None else config.seed + 2_000_003
    if args.epsilon is not None:
        epsilon = args.epsilon
    elif args.stochastic:
        epsilon = max(getattr(config, "eval_epsilon", 0.0), STOCHASTIC_EPSILON)
    else:
        epsilon = getattr(config, "eval_epsilon", 0.0)
    deterministic = not args.stochastic
    result = evaluate(
        AgentActor(agent, deterministic=deterministic, epsilon=epsilon),
        config.env_id,
        args.episodes,
        seed=seed,
        env_kwargs=config.env_kwargs,
        num_envs=min(args.episodes, 10),
    )
    summary = result.summary()
    normalized = human_normalized(config.env_id, summary["mean"])
    if normalized is not None:
        summary["human_normalized_mean"] = normalized
    step = info["step"]
    print(f"{config.env_id}  {info['algo']}  {checkpoint.name} (step {step})  seed {seed}  epsilon {epsilon}"
          f"{'  stochastic' if args.stochastic else ''}")
    print(format_table(summary))
    if args.out:
        out_dir = Path(args.out)
    elif args.sb3 or not (checkpoint.parent.name == "checkpoints"
                          and (checkpoint.parent.parent / "config.yaml").is_file()):  # not a run's: beside it
        out_dir = checkpoint.parent / f"{checkpoint.stem}_eval"
    else:  # a run's checkpoint: the run's eval/
        out_dir = checkpoint.parent.parent / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "env_id": config.env_id,
        "algo": info["algo"],
        "checkpoint": str(checkpoint),
        "step": step,
        "seed": seed,
        "epsilon": epsilon,
        "deterministic": deterministic,
        "env_kwargs": dict(config.env_kwargs or {}),
        **summary,
        "returns": result.returns,
        "lengths": result.lengths,
        "metrics": result.metrics,
        "config": info["config"],
    }
    write_text_atomic(out_dir / "eval.json", json.dumps(record, indent=2))
    print(f"wrote {out_dir / 'eval.json'}")
    if args.video:
        from rlkit.video import record_video

        run_label = checkpoint.parent.parent.name if checkpoint.parent.name == "checkpoints" else checkpoint.stem
        paths = record_video(
            agent,
            config,
            out_dir,
            seed=seed,
            epsilon=epsilon,
            step=step or 0,
            episodes=args.video_episodes,
            label=run_label,
            gif=args.gif,
            deterministic=deterministic,
        )
        for path in paths:
            print(f"wrote {path}")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    import numpy as np

    from rlkit.vision.collect import collect

    if not args.env:
        raise RLKitError("rlkit collect needs --env ID, e.g. --env ALE/Pong-v5.")
    if not args.out:
        raise RLKitError("rlkit collect needs --out DIR (the dataset directory to create).")
    require_output_dir(args.out, "--out")
    policy, name = None, "random"
    if args.policy != "random":
        from rlkit.evaluation import AgentActor

        agent, config, checkpoint, _ = load_agent(args.policy, "best", args.env)
        actor = AgentActor(agent, epsilon=args.epsilon, rng=np.random.default_rng(args.seed + 17))

        def policy(obs: np.ndarray, episode_start: bool) -> int:  # a recurrent agent keeps its state in `actor`
            return int(actor(obs[None], np.array([episode_start]))[0])

        name = f"{checkpoint} (epsilon {args.epsilon})"
    collect(
        args.env, args.steps, args.out, policy=policy, policy_name=name, seed=args.seed, color=args.color,
        chunk_size=args.chunk_size, episode_steps=args.episode_steps,
    )
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    import subprocess

    from rlkit.vision.pretrain import default_run_dir, method_class, pretrain_overrides, run_pretrain

    require_output_dir(args.run_dir, "--run-dir")
    if args.method and not args.resume:
        method_class(args.method)  # unknown method: one-line error before anything else
        if not args.data:
            raise RLKitError("rlkit pretrain needs --data DIR (a dataset written by `rlkit collect`).")
        from rlkit.vision.data import read_manifest

        read_manifest(args.data)
    if args.ddp and args.ddp > 1:
        run_dir = args.run_dir
        if not run_dir and not args.resume:
            from rlkit.vision.pretrain import build_pretrain_config

            seed = build_pretrain_config(args.method, pretrain_overrides(args)).seed
            run_dir = str(default_run_dir(args.method, args.data, seed))
        argv = [args.method] if args.method else []
        for flag, value in (("--data", args.data), ("--run-dir", run_dir), ("--resume", args.resume)):
            if value:
                argv += [flag, str(value)]
        for item in pretrain_overrides(args):
            argv += ["--set", item]
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.ddp}",
                   "-m", "rlkit.vision.pretrain", *argv]
        print("launching: " + " ".join(command[2:]))
        return subprocess.call(command)
    run_pretrain(args.method, args.data, pretrain_overrides(args), args.run_dir, args.resume)
    return 0


def encoder_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> encoder kwargs (values parsed as in ``--set``); a malformed one is a one-line error."""
    from rlkit.config import parse_value

    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise RLKitError(f"bad --set {item!r}: write it as key=value, e.g. --set features=layer3.")
        overrides[key.strip()] = parse_value(text)
    return overrides


def cmd_probe(args: argparse.Namespace) -> int:
    from rlkit.vision.probe import run_probe

    if not args.encoder:
        raise RLKitError("rlkit probe needs --encoder PATH|random (an encoder.safetensors from `rlkit pretrain`).")
    if not args.data:
        raise RLKitError("rlkit probe needs --data DIR (a dataset with labels, written by `rlkit collect`).")
    require_output_dir(args.out, "--out")
    import torch

    torch.set_num_threads(args.threads if args.threads > 0 else (os.cpu_count() or 1))
    overrides = encoder_overrides(args.set)
    run_probe(args.encoder, args.data, args.encoder_name, out=args.out, seed=args.seed, overrides=overrides,
              baseline=not args.no_baseline, max_epochs=args.epochs, patience=args.patience)
    return 0


def cmd_envs(args: argparse.Namespace) -> int:
    from rlkit.envs import list_envs

    for family, ids in list_envs().items():
        print(f"{family} ({len(ids)}):")
        print("  " + "  ".join(ids))
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from rlkit.config import preset_info, preset_names

    for full in preset_names():
        algo, name = full.split("-", 1)
        info = preset_info(full)
        on = f" on {info['default_device']}" if info["default_device"] else ""
        default = f" [default for {', '.join(info['default_for'])}{on}]" if info["default_for"] else ""
        print(f"{algo:8s} {name:14s} {info['description']}{default}")
    return 0


def cmd_encoders(args: argparse.Namespace) -> int:
    import gymnasium as gym
    import numpy as np
    import torch

    from rlkit.registry import ENCODERS
    from rlkit.vision.encoders import forward_flops, make_encoder

    spaces = {
        "image": gym.spaces.Box(0, 255, (4, 84, 84), np.uint8),  # an Atari frame stack
        "vector": gym.spaces.Box(-1.0, 1.0, (8,), np.float32),  # e.g. LunarLander's state
    }
    print("parameters and forward FLOPs of one observation (batch 1); image input 4x84x84 uint8, vector 8 float32")
    for name, cls in ENCODERS.items():
        space = spaces[getattr(cls, "example_input", "image")]
        encoder = make_encoder(name, space)
        params = sum(p.numel() for p in encoder.parameters())
        flops = forward_flops(encoder, torch.as_tensor(space.sample()[None]))
        shape = "x".join(map(str, space.shape))
        print(
            f"{name:18s} params {params:>10,d}  features {encoder.features_dim:4d}  MFLOPs {flops / 1e6:8.2f}  "
            f"input {shape} {space.dtype}"
        )
    return 0


METRIC_HELP = ("evaluation key: mean (return, default), median, iqm, or an env's episode metric such as success, "
               "spl (navigation) or route_completion (driving)")


def cmd_plot(args: argparse.Namespace) -> int:
    from matplotlib.backend_bases import FigureCanvasBase

    from rlkit.plotting import plot_groups, plot_run
    from rlkit.results import find_runs

    formats = FigureCanvasBase.get_supported_filetypes()
    if not Path(args.output).name:
        raise RLKitError(f"-o {args.output} names no file; pass an image path, e.g. -o curves.png.")
    suffix = Path(args.output).suffix.lstrip(".").lower()
    if suffix and suffix not in formats:  # no suffix: matplotlib writes a png
        raise RLKitError(f"-o {args.output}: unknown image format {suffix!r}; end it with one of "
                         f"{', '.join('.' + name for name in sorted(formats))}.")
    single = len(args.targets) == 1 and len(find_runs(args.targets[0])) == 1
    if single and args.metric == "mean":
        out = plot_run(find_runs(args.targets[0])[0], args.output, title=args.title)
    else:
        out = plot_groups(args.targets, args.output, title=args.title, metric=args.metric)
    print(f"wrote {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from rlkit.results import compare_table, format_compare

    print(format_compare(compare_table(args.targets, reps=args.reps, metric=args.metric)))
    return 0


def make_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="rlkit", description="Reinforcement learning and control toolkit.")
    sub = parser.add_subparsers(dest="command", parser_class=ArgumentParser)

    train = sub.add_parser("train", help="train an agent", add_help=False)
    train.add_argument("algo", nargs="?", help="algorithm, e.g. dqn or ppo (all are listed below)")
    train.add_argument("--env", help="environment id, e.g. ALE/Pong-v5 (see `rlkit envs`)")
    train.add_argument("--preset", help="preset name (see `rlkit presets`); default depends on the env family")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field (repeatable)")
    train.add_argument("--seed", type=seed_number)
    train.add_argument("--total-steps", type=int)
    train.add_argument("--run-dir", help="run directory (default runs/<env>__<algo>__<seed>__<time>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    train.add_argument("--init-from", metavar="RUN_DIR|CHECKPOINT",
                       help="start a new run from a trained agent's weights (a run: its last checkpoint)")
    train.add_argument("--seeds", help="train one run per seed into a group directory, e.g. 0,1,2 or 0-4")
    train.add_argument("--workers", type=at_least(1), default=1,
                       help="seeds trained in parallel processes (with --seeds)")
    train.add_argument("--encoder", metavar="PATH", help="start from a pretrained encoder file (encoder_path)")
    train.add_argument("--freeze", action="store_true", help="keep the encoder fixed (freeze_encoder=true)")
    train.add_argument("--encoder-lr-scale", type=float, metavar="X", help="encoder lr = lr x X (encoder_lr_scale)")
    train.add_argument("-h", "--help", action="store_true", help="show config fields of ALGO")
    train.set_defaults(func=cmd_train, train_parser=train)

    ev = sub.add_parser("eval", help="evaluate a run or checkpoint over full episodes")
    ev.add_argument("target", nargs="?", metavar="RUN_DIR|CHECKPOINT")
    ev.add_argument("--sb3", metavar="MODEL.zip", help="evaluate a Stable-Baselines3 DQN/PPO/A2C model (needs --env)")
    ev.add_argument("--episodes", type=at_least(1), default=10)
    ev.add_argument("--seed", type=seed_number)
    ev.add_argument("--env", help="env id: required with --sb3; otherwise checked against the checkpoint's env")
    mode = ev.add_mutually_exclusive_group()
    mode.add_argument("--deterministic", action="store_true", help="greedy actions (default)")
    mode.add_argument("--stochastic", action="store_true",
                      help=f"sample from the policy (PPO, A2C, REINFORCE); epsilon-greedy with epsilon "
                           f"{STOCHASTIC_EPSILON} (value-based agents)")
    ev.add_argument("--epsilon", type=fraction,
                    help="exploration during evaluation (default: the config's eval_epsilon)")
    ev.add_argument("--checkpoint", help="of a RUN_DIR: best (default, else last) | last | STEP (a periodic "
                                         "checkpoint's env step)")
    ev.add_argument("--env-kwarg", action="append", metavar="KEY=VALUE",
                    help="evaluate with a changed env setting, e.g. repeat_action_probability=0 (repeatable)")
    ev.add_argument("--video", action="store_true", help="write an mp4 of each of the first K episodes")
    ev.add_argument("--video-episodes", type=at_least(1), default=1, metavar="K", help="episodes recorded with --video")
    ev.add_argument("--gif", action="store_true", help="write GIF instead of mp4")
    ev.add_argument("--out", help="output directory (default: the run's eval/)")
    ev.set_defaults(func=cmd_eval)

    plot = sub.add_parser("plot", help="learning curves of runs or groups (mean and 95%% CI over seeds)")
    plot.add_argument("targets", nargs="+", metavar="RUN_OR_GROUP")
    plot.add_argument("-o", "--output", default="curve.png")
    plot.add_argument("--title")
    plot.add_argument("--metric", default="mean", help=METRIC_HELP)
    plot.set_defaults(func=cmd_plot)

    compare = sub.add_parser("compare", help="final scores of runs or groups: mean, median, IQM with 95%% CIs")
    compare.add_argument("targets", nargs="+", metavar="RUN_OR_GROUP")
    compare.add_argument("--reps", type=at_least(1), default=2000, help="bootstrap replicates")
    compare.add_argument("--metric", default="mean", help=METRIC_HELP)
    compare.set_defaults(func=cmd_compare)

    col = sub.add_parser("collect", help="write frames (+ ground-truth labels) of an env to a dataset directory")
    col.add_argument("--env", help="environment id, e.g. ALE/Pong-v5")
    col.add_argument("--steps", type=at_least(1), default=10_000, help="frames to write")
    col.add_argument("--policy", default="random", metavar="random|RUN_DIR", help="uniform random or a trained run")
    col.add_argument("--epsilon", type=fraction, default=0.05, help="exploration of a RUN_DIR policy")
    col.add_argument("--out", metavar="DIR", help="dataset directory to create")
    col.add_argument("--seed", type=seed_number, default=0)
    col.add_argument("--color", action="store_true", help="also store full-colour frames")
    col.add_argument("--chunk-size", type=at_least(1), default=1000, help="frames per chunk file")
    col.add_argument("--episode-steps", type=at_least(1), help="cut episodes after this many frames (more episodes)")
    col.set_defaults(func=cmd_collect)

    from rlkit.vision.pretrain import add_pretrain_arguments

    pre = sub.add_parser("pretrain", help="pretrain an encoder on collected frames (supervised, gan, mae)")
    add_pretrain_arguments(pre)
    pre.add_argument("--ddp", type=at_least(1), metavar="N",
                     help="data-parallel over N processes (torch.distributed.run)")
    pre.set_defaults(func=cmd_pretrain)

    probe = sub.add_parser("probe", help="AtariARI linear probes of a frozen encoder vs a random one")
    probe.add_argument("--encoder", metavar="PATH|random", help="encoder.safetensors, or random (with --encoder-name)")
    probe.add_argument("--data", metavar="DIR", help="dataset with labels (rlkit collect)")
    probe.add_argument("--encoder-name", help="architecture of a random encoder (e.g. nature_cnn)")
    probe.add_argument("--out", metavar="DIR", help="where probe.json goes (default: next to the encoder)")
    probe.add_argument("--seed", type=seed_number, default=0)
    probe.add_argument("--epochs", type=at_least(1), default=100, help="most probe epochs (early stopping on val)")
    probe.add_argument("--patience", type=at_least(1), default=10,
                       help="epochs without val improvement before stopping")
    probe.add_argument("--no-baseline", action="store_true", help="skip the random-encoder column")
    probe.add_argument("--threads", type=at_least(0), default=0, help="torch CPU threads (0: all cores)")
    probe.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="encoder option for both columns that keeps the weights (e.g. features=layer3 for dcgan)")
    probe.set_defaults(func=cmd_probe)

    sub.add_parser("envs", help="list environment ids by family").set_defaults(func=cmd_envs)
    sub.add_parser("presets", help="list presets").set_defaults(func=cmd_presets)
    sub.add_parser("encoders", help="list encoders").set_defaults(func=cmd_encoders)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The ``rlkit`` command: user mistakes print one ``error:`` line and exit 2; Ctrl-C before a run installs
    its own handler (while importing, evaluating, collecting, probing) prints ``interrupted`` and exits 130."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `rlkit presets | head`: the reader left; stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 141


def _main(argv: list[str] | None) -> int:
    from gymnasium.error import DependencyNotInstalled

    import rlkit

    parser = make_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help()
            return EXIT_USER_ERROR
        rlkit.load_plugins()
        from rlkit.allocator import tune_allocator

        tune_allocator()  # keep freed tensor memory in the heap: fewer page faults per update (rlkit/allocator.py)
        return args.func(args)
    except RLKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (ImportError, DependencyNotInstalled) as exc:
        print(f"error: a dependency is missing ({exc}); install it and retry.", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
