"""Vision checks: AtariARI's label-entropy filter and duplicate removal in the probe, resume guards,
BatchNorm recalibration under SyncBatchNorm, the all-reduce device, frame layout, damaged manifests."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from test_pretrain import make_dataset
from torch import nn

from rlkit.cli import main
from rlkit.errors import RLKitError
from rlkit.vision.data import ChunkWriter, FrameDataset, assign_splits

SMALL = ["encoder=nature_cnn_small", "batch_size=8", "torch_threads=1", "eval_frames=8", "checkpoint_every=1"]


def make_labelled_dataset(path: Path, labels: dict[str, np.ndarray], frames: int = 48, episodes: int = 6,
                          duplicates: int = 0, seed: int = 0) -> Path:
    """Random 4x84x84 frames with the given label columns; the first ``duplicates`` frames of the first test
    episode are byte-identical copies of train frames."""
    rng = np.random.default_rng(seed)
    per = frames // episodes
    split = assign_splits(list(range(episodes)), seed)
    obs = rng.integers(0, 256, (frames, 4, 84, 84), dtype=np.uint8)
    train_rows = [i for i in range(frames) if split[i // per] == "train"]
    test_start = min(i for i in range(frames) if split[i // per] == "test")
    obs[test_start : test_start + duplicates] = obs[train_rows[:duplicates]]
    names = list(labels)
    writer = ChunkWriter(path, 10, {"env_id": "synthetic", "labels": names, "color": False})
    for i in range(frames):
        writer.add(obs=obs[i], labels=np.array([labels[n][i] for n in names]), episode=i // per, step=i % per,
                   action=np.int64(0), reward=np.float32(0))
    writer.close({"obs_shape": [4, 84, 84], "obs_dtype": "uint8",
                  "episodes": [{"id": e, "frames": per, "split": split[e]} for e in range(episodes)]})
    return path


def _varied_and_flat_labels(frames: int = 48) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    rare = np.zeros(frames, np.int64)
    rare[0] = 1  # one frame in 48: entropy 0.101 nats
    return {"varied": rng.integers(0, 4, frames), "const": np.full(frames, 7), "rare": rare,
            "also_varied": rng.integers(0, 3, frames)}


def test_label_entropy_in_nats_and_atariari_threshold():
    from rlkit.vision.metrics import ENTROPY_THRESHOLD, informative_labels, label_entropy

    assert ENTROPY_THRESHOLD == 0.6
    assert label_entropy(np.array([3, 3, 5, 5])) == pytest.approx(math.log(2))
    assert label_entropy(np.full(10, 9)) == 0.0
    labels = np.stack([np.array([0, 1, 2, 3] * 4), np.array([0] * 15 + [1])], axis=1)
    kept, entropy = informative_labels(["x", "y"], labels)
    assert kept == ["x"] and entropy["x"] == pytest.approx(math.log(4)) and entropy["y"] < 0.6
    assert informative_labels(["x", "y"], labels, threshold=0)[0] == ["x", "y"]
    with pytest.raises(RLKitError, match="every label of somewhere") as info:
        informative_labels(["y"], labels[:, 1:], source="somewhere")
    assert "\n" not in str(info.value)


def test_probe_drops_low_entropy_labels_and_test_frames_duplicating_train(tmp_path):
    from rlkit.vision.probe import run_probe

    data_dir = make_labelled_dataset(tmp_path / "d", _varied_and_flat_labels(), duplicates=3)
    printed: list[str] = []
    record = run_probe("random", data_dir, "nature_cnn_small", out=tmp_path / "p", print_fn=printed.append,
                       max_epochs=2)
    assert record["dropped_labels"] == ["const", "rare"]
    assert record["labels"] == ["varied", "also_varied"]
    assert record["entropy"]["const"] == 0.0 and record["entropy"]["rare"] == pytest.approx(
        -(math.log(1 / 48) / 48 + 47 / 48 * math.log(47 / 48)))
    assert record["entropy"]["varied"] > 0.6 and record["entropy_threshold"] == 0.6
    scores = record["scores"]["encoder"]
    assert set(scores) == {"varied", "also_varied"}
    assert record["mean_f1"]["encoder"] == pytest.approx(np.mean([scores[n]["f1_weighted"] for n in scores]))
    assert record["test_duplicates_removed"] == 3
    saved = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert saved["dropped_labels"] == ["const", "rare"] and saved["test_duplicates_removed"] == 3
    text = "\n".join(printed)
    assert "dropped 2 low-entropy label(s)" in text and "const 0.000" in text and "removed 3 of 8 test frames" in text
    every = run_probe("random", data_dir, "nature_cnn_small", out=tmp_path / "q", print_fn=printed.append,
                      max_epochs=1, entropy_threshold=0)
    assert every["dropped_labels"] == [] and set(every["scores"]["encoder"]) == set(_varied_and_flat_labels())


def test_probe_with_no_label_or_no_test_frame_left_is_a_one_line_error(tmp_path):
    from rlkit.vision.probe import run_probe

    flat = {k: v for k, v in _varied_and_flat_labels().items() if k in ("const", "rare")}
    with pytest.raises(RLKitError, match="every label of .* has a value entropy below 0.6") as info:
        run_probe("random", make_labelled_dataset(tmp_path / "flat", flat), "nature_cnn_small", out=tmp_path / "p",
                  print_fn=print)
    assert "\n" not in str(info.value)
    copied = make_labelled_dataset(tmp_path / "copied", _varied_and_flat_labels(), duplicates=8)
    with pytest.raises(RLKitError, match="all 8 test frames .* are byte-identical") as info:
        run_probe("random", copied, "nature_cnn_small", out=tmp_path / "p", print_fn=print)
    assert "\n" not in str(info.value)


def test_supervised_mean_f1_leaves_low_entropy_labels_out(tmp_path):
    from rlkit.vision.supervised import SupervisedConfig, SupervisedPretrainer

    data_dir = make_labelled_dataset(tmp_path / "d", _varied_and_flat_labels())
    config = SupervisedConfig(encoder="nature_cnn_small", batch_size=8, eval_frames=8)
    trainer = SupervisedPretrainer(config, FrameDataset(data_dir, "train"), FrameDataset(data_dir, "val"),
                                   torch.device("cpu"))
    trainer.train_step(0)
    printed: list[str] = []
    run = SimpleNamespace(print=printed.append, dir=None)
    metrics = trainer.evaluate(run, final=True)
    kept = [metrics[f"eval/{n}/f1_macro"] for n in ("varied", "also_varied")]
    assert metrics["eval/mean_f1_macro"] == pytest.approx(np.mean(kept))
    assert "eval/const/f1_macro" in metrics  # still reported per label
    assert any("const" in line and "not in the mean" in line for line in printed)


def test_resume_refuses_another_dataset_and_trajectory_changing_overrides(tmp_path):
    from rlkit.vision.data import manifest_hash
    from rlkit.vision.pretrain import run_pretrain

    data_a, data_b = make_dataset(tmp_path / "a"), make_dataset(tmp_path / "b", seed=1)
    run_dir = tmp_path / "run"
    run_pretrain("supervised", str(data_a), SMALL + ["steps=1"], run_dir)
    with pytest.raises(RLKitError) as info:
        run_pretrain(None, str(data_b), ["steps=2"], resume=run_dir)
    message = str(info.value)
    assert "\n" not in message and str(data_b) in message and str(data_a.resolve()) in message
    assert manifest_hash(data_a)[:12] in message and manifest_hash(data_b)[:12] in message
    assert "resume without --data" in message
    for override in ("seed=7", "batch_size=4", "encoder=nature_cnn", "encoder_kwargs.features_dim=32", "lr=0.5",
                     "head_norm=false", "target=regress"):
        field = override.split("=")[0].split(".")[0]
        with pytest.raises(RLKitError, match=f"cannot change {field}=.* \\(the run has ") as info:
            run_pretrain(None, None, ["steps=2", override], resume=run_dir)
        assert "\n" not in str(info.value)
    # the same dataset (by path) and the run's own values are fine; steps and intervals may change
    result = run_pretrain(None, str(data_a), ["steps=2", "seed=0", "eval_every=1", "log_every=1"], resume=run_dir)
    assert result["step"] == 2
    with open(data_a / "manifest.json", "a") as manifest:  # the dataset at the run's path collected again
        manifest.write("\n")
    with pytest.raises(RLKitError, match="no longer holds the dataset"):
        run_pretrain(None, None, ["steps=3"], resume=run_dir)


def test_run_record_holds_the_absolute_data_path_so_resume_works_from_elsewhere(tmp_path, monkeypatch):
    from rlkit.vision.pretrain import run_pretrain

    make_dataset(tmp_path / "d")
    monkeypatch.chdir(tmp_path)
    run_pretrain("supervised", "d", SMALL + ["steps=1"], tmp_path / "run")
    record = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert record["data"] == str((tmp_path / "d").resolve())
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert run_pretrain(None, None, ["steps=2"], resume=tmp_path / "run")["step"] == 2


def test_supervised_head_norm_recalibrates_after_sync_batchnorm_conversion(tmp_path, monkeypatch):
    """Multi-GPU runs convert BatchNorm to SyncBatchNorm; rank 0 must still recalibrate the head's statistics,
    on its own (SyncBatchNorm's forward, which would wait for the other ranks, is never called)."""
    from rlkit.vision.supervised import SupervisedConfig, SupervisedPretrainer

    data = FrameDataset(make_dataset(tmp_path / "d"), "train")
    trainer = SupervisedPretrainer(SupervisedConfig(encoder="nature_cnn_small", batch_size=8), data, None,
                                   torch.device("cpu"))
    for step in range(2):
        trainer.train_step(step)
    nn.SyncBatchNorm.convert_sync_batchnorm(trainer.model)
    norm = trainer.model["head"][0]
    assert isinstance(norm, nn.SyncBatchNorm)

    def collective(*args, **kwargs):
        raise AssertionError("SyncBatchNorm.forward called: rank 0 would wait for the other ranks")

    monkeypatch.setattr(nn.SyncBatchNorm, "forward", collective)
    trainer.calibrate_head_norm()
    with torch.no_grad():
        trainer.model.eval()
        features = trainer.model["encoder"](data.batch(np.arange(len(data)))[0])
    torch.testing.assert_close(norm.running_mean, features.mean(0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(norm.running_var, features.var(0), rtol=1e-3, atol=1e-6)
    assert "forward" not in vars(norm) and not norm.training  # restored


def test_loss_average_all_reduces_on_the_trainers_device(monkeypatch):
    """An nccl process group has no CPU collectives: the losses must be packed on the trainer's device."""
    import torch.distributed as dist

    from rlkit.vision.pretrain import _average

    seen = []

    def all_reduce(tensor, *args, **kwargs):  # two ranks with equal values
        seen.append(tensor.device)
        tensor.mul_(2)

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    losses, stop = _average({"a": 1.0, "b": 3.0}, True, 2, torch.device("cpu"))
    assert seen == [torch.device("cpu")] and losses == {"a": 1.0, "b": 3.0} and stop is True


def test_cpu_data_parallel_names_per_process_batch_norms():
    from rlkit.vision.pretrain import per_process_batch_norms
    from rlkit.vision.supervised import GlobalBatchNorm1d

    modules = {"model": nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), GlobalBatchNorm1d(2))}
    assert per_process_batch_norms(modules) == ["model.1"]
    assert per_process_batch_norms({"model": nn.Sequential(GlobalBatchNorm1d(2))}) == []


@pytest.mark.parametrize(
    "space_shape, obs_shape",
    [((4, 84, 84), (4, 84, 84)), ((6, 84, 84), (6, 84, 84)), ((84, 84, 6), (6, 84, 84)),
     ((84, 84, 3), (3, 84, 84)), ((84, 84, 1), (1, 84, 84))],
)
def test_collect_frame_layout_comes_from_the_observation_space(space_shape, obs_shape):
    from rlkit.vision.collect import _frame

    obs = np.arange(np.prod(space_shape), dtype=np.int64).astype(np.uint8).reshape(space_shape)
    env = SimpleNamespace(observation_space=gym.spaces.Box(0, 255, space_shape, np.uint8))
    for source in (env, None):
        frame = _frame(source, obs)
        assert frame.shape == obs_shape
        expected = obs if space_shape == obs_shape else obs.transpose(2, 0, 1)
        np.testing.assert_array_equal(frame, expected)


def test_chunk_frames_of_another_shape_than_the_manifest_are_a_one_line_error(tmp_path, capsys):
    from rlkit.checkpoint import save_arrays
    from rlkit.vision.data import memmap_safetensors

    data_dir = make_dataset(tmp_path / "d", frames=30, episodes=3)
    chunk = data_dir / "chunk_000001.safetensors"
    arrays = {key: np.asarray(value) for key, value in memmap_safetensors(chunk).items()}
    save_arrays(chunk, {**arrays, "obs": arrays["obs"][:, :, :64, :64]})
    with pytest.raises(RLKitError, match=r"frames of shape \[4, 64, 64\], the manifest says \[4, 84, 84\]"):
        FrameDataset(data_dir, "train")
    assert main(["probe", "--encoder", "random", "--encoder-name", "nature_cnn", "--data", str(data_dir),
                 "--epochs", "1", "--no-baseline", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "chunk_000001.safetensors" in err


@pytest.mark.parametrize("content, problem", [(b"\x89PNG\xff\xfe\x00\x01binary", "not UTF-8"),
                                              (b"[]", "JSON list, not a manifest object"),
                                              (b'"text"', "JSON str, not a manifest object")])
def test_manifest_that_is_not_utf8_json_object_is_a_one_line_error(tmp_path, capsys, content, problem):
    data_dir = make_dataset(tmp_path / "d", frames=30, episodes=3)
    (data_dir / "manifest.json").write_bytes(content)
    assert main(["pretrain", "mae", "--data", str(data_dir), "--steps", "1", "--batch-size", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert str(data_dir / "manifest.json") in err and problem in err
