"""Training: configuration, data, the loop, run files, resume after SIGKILL, the CLI."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from geoportal.checkpoint import load_model, read_checkpoint  # noqa: E402
from geoportal.errors import ConfigError, InvalidInputError, MissingInputError  # noqa: E402
from geoportal.samples import SampleSetMeta, write_sample_set_meta  # noqa: E402
from geoportal.training import TrainingConfig, config_from_text, parse_config, train  # noqa: E402
from geoportal.training.data import (  # noqa: E402
    EpochBatches,
    SampleDataset,
    index_samples,
    stratified_split,
)
from geoportal.training.loop import resolve_precision  # noqa: E402
from geoportal.training.metrics import scores  # noqa: E402
from geoportal.training.synthetic import make_sample_set  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TINY = {"model": {"args": {"width": 8, "depth": 2}}, "batch_size": 16}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # Tiny models gain nothing from two threads, and on a loaded 2-core machine
    # OpenMP threads waiting on each other make every op many times slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def patch_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_set(
        tmp_path_factory.mktemp("samples") / "patches", bands=3, n_classes=3, per_class=30, seed=1
    )


@pytest.fixture(scope="module")
def seg_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_set(
        tmp_path_factory.mktemp("samples") / "tiles",
        mode="segmentation",
        bands=6,
        n_classes=3,
        patch_size=20,
        tiles=24,
        seed=2,
    )


def tiny(**more: object) -> dict:
    config = json.loads(json.dumps(TINY))
    config.update(more)
    return config


# -- configuration ------------------------------------------------------------------------------


def test_epochs_alone_is_a_complete_config():
    config = parse_config({"epochs": 5})
    assert config.epochs == 5
    assert config.model.architecture is None  # picked from the samples' mode
    assert config.optimizer.name == "adamw" and config.device == "auto"
    # A full dump parses back to the same configuration.
    assert config_from_text(config.to_yaml()) == config


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"epochs": 3, "learning_rate": 0.1}, "learning_rate", "unknown key"),
        ({"epochs": "many"}, "epochs", "integer"),
        ({"optimizer": {"name": "rmsprop"}}, "optimizer.name", "sgd"),
        ({"schedule": {"name": "exp"}}, "schedule.name", "onecycle"),
        ({"loss": {"class_weights": "inverse"}}, "loss.class_weights", "balanced"),
        ({"data": {"val_fraction": 1.5}}, "data.val_fraction", "less than 1"),
    ],
)
def test_config_errors_name_the_field(data, field, words):
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.field == field
    assert words in str(info.value)


def test_model_shorthand_and_yaml_text():
    config = config_from_text("model: fcn\nepochs: 2\n")
    assert config.model.architecture == "fcn"
    with pytest.raises(ConfigError) as info:
        config_from_text("epochs: [1, 2")
    assert info.value.field == "config"


# -- data ---------------------------------------------------------------------------------------


def test_dataset_normalises_and_augments_deterministically(patch_set):
    samples = index_samples(patch_set)
    assert len(samples) == 90 and samples.class_counts().tolist() == [30, 30, 30]
    plain = SampleDataset(samples)
    key = next(iter(EpochBatches(len(samples), 90, shuffle=False, seed=0)))
    x, y = plain[key]
    assert x.dtype == torch.float32 and x.shape == (90, 3, 9, 9)
    assert abs(float(x.mean())) < 1.0 and y.tolist() == samples.label.tolist()
    aug = SampleDataset(samples, augment=True)
    a1, _ = aug[key]
    a2, _ = aug[key]
    torch.testing.assert_close(a1, a2)  # same key, same augmentation
    assert not torch.equal(a1, x)
    # Every augmented patch is one of the 8 symmetries of the original.
    for i in range(5):
        variants = [torch.rot90(x[i], k, (1, 2)) for k in range(4)]
        variants += [v.flip(-1) for v in variants]
        assert any(torch.equal(a1[i], v) for v in variants)


def test_epoch_order_depends_only_on_seed_and_epoch():
    a = EpochBatches(50, 8, shuffle=True, seed=3)
    b = EpochBatches(50, 8, shuffle=True, seed=3)
    a.set_epoch(4)
    b.set_epoch(4)
    assert [k.rows.tolist() for k in a] == [k.rows.tolist() for k in b]
    b.set_epoch(5)
    assert [k.rows.tolist() for k in a] != [k.rows.tolist() for k in b]


def test_split_is_stratified_and_errors_on_empty_class(patch_set, tmp_path):
    train_set, val_set = stratified_split(index_samples(patch_set), 0.2, seed=0)
    assert val_set is not None
    assert val_set.class_counts().tolist() == [6, 6, 6]
    assert train_set.class_counts().tolist() == [24, 24, 24]
    small = make_sample_set(tmp_path / "small", bands=3, per_class=2, seed=4)
    with pytest.raises(InvalidInputError) as info:
        stratified_split(index_samples(small), 0.2, seed=0)
    assert info.value.field == "data.val_fraction"
    assert "without validation samples" in str(info.value)


def test_selection_csv_is_a_training_input(patch_set, tmp_path):
    storage = tmp_path / "storage"
    folder = storage / "users" / "alice" / "samples" / "set"
    folder.parent.mkdir(parents=True)
    os.symlink(patch_set, folder)
    manifest = storage / "users" / "alice" / "samples" / "balanced" / "selection.csv"
    manifest.parent.mkdir()
    rows = [("water/part-00000.npy", i, "water", 0) for i in range(0, 30, 2)]
    rows += [("forest/part-00000.npy", i, "forest", 1) for i in range(10)]
    rows += [("cropland/part-00000.npy", i, "3", 2) for i in range(5, 15)]  # class by code
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "index", "class", "cluster"])
        writer.writerows(rows)
    manifest.with_suffix(".json").write_text(
        json.dumps({"samples": "users/alice/samples/set", "count": len(rows)})
    )
    selection = index_samples(manifest)
    assert len(selection) == 35
    assert selection.class_counts().tolist() == [15, 10, 10]
    x, y = SampleDataset(selection)[next(iter(EpochBatches(35, 35, shuffle=False, seed=0)))]
    direct = np.load(patch_set / "cropland" / "part-00000.npy", mmap_mode="r")[5]
    assert y[25] == 2 and x.shape == (35, 3, 9, 9)
    meta = SampleSetMeta.model_validate_json((patch_set / "dataset.json").read_text())
    mean, std = np.array(meta.normalisation.mean), np.array(meta.normalisation.std)
    expected = (direct - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(x[25].numpy(), expected, rtol=1e-5, atol=1e-5)
    result = train(tiny(epochs=1), tmp_path / "run", samples=manifest)
    assert result.metrics["train_samples"] + result.metrics["val_samples"] == 35


def test_metrics_scores():
    m = np.array([[5, 1, 0], [0, 4, 0], [0, 0, 0]])
    s = scores(m, ["a", "b", "c"])
    assert s["accuracy"] == pytest.approx(0.9)
    assert s["per_class"]["a"]["f1"] == pytest.approx(2 * 5 / (6 + 5))
    assert s["per_class"]["b"]["iou"] == pytest.approx(4 / 5)
    assert s["per_class"]["c"]["f1"] is None  # absent class: left out of the means
    assert s["mean_f1"] == pytest.approx((10 / 11 + 8 / 9) / 2)


# -- the loop -----------------------------------------------------------------------------------


def test_patch_training_writes_the_run(patch_set, tmp_path):
    seen: list[tuple[float, str]] = []
    batches: list[tuple[int, int, int]] = []
    run = tmp_path / "users" / "alice" / "models" / "r1"
    result = train(
        tiny(epochs=3, schedule={"name": "onecycle"}, loss={"class_weights": "balanced"}),
        run,
        samples=patch_set,
        progress=lambda p, m: seen.append((p, m)),
        on_batch=lambda e, b, n, loss: batches.append((e, b, n)),
    )
    assert sorted(p.name for p in run.iterdir()) == [
        "best.pt", "config.yaml", "last.pt", "learning_curve.png", "metrics.json",
    ]  # fmt: skip
    assert [round(p) for p, _ in seen] == [33, 67, 100]
    assert batches[-1] == (3, 4, 4)  # 72 training samples, batch 16, last partial batch dropped
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["completed_epochs"] == 3 and metrics["architecture"] == "patch_cnn"
    last = metrics["history"][-1]
    assert set(last["val"]["per_class"]) == {"water", "forest", "cropland"}
    assert {"f1", "iou"} <= set(last["val"]["per_class"]["water"])
    assert last["val"]["accuracy"] > 0.6  # the generated classes are separable
    assert (run / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    model, info = load_model(result.best)
    assert info.architecture == "patch_cnn" and info.kind == "patch" and info.patch_size == 9
    assert info.bands == ["band 1", "band 2", "band 3"] and len(info.normalisation.mean) == 3
    assert [c.name for c in info.classes] == ["water", "forest", "cropland"]
    assert info.epoch == metrics["best_epoch"]
    with torch.no_grad():
        assert model.dense_forward(torch.randn(1, 3, 20, 20)).shape == (1, 3, 12, 12)


@pytest.mark.parametrize(
    ("arch", "args"), [("unet", {"base_channels": 4, "depth": 2}), ("fcn", {"width": 4})]
)
def test_segmentation_training(seg_set, tmp_path, arch, args):
    result = train(
        {"epochs": 1, "batch_size": 4, "model": {"architecture": arch, "args": args},
         "optimizer": {"name": "sgd", "lr": 0.05}, "schedule": {"name": "step", "step_size": 1}},
        tmp_path / arch,
        samples=seg_set,
    )  # fmt: skip
    metrics = result.metrics
    assert metrics["mode"] == "segmentation" and metrics["bands"] == [
        f"band {i}" for i in range(1, 7)
    ]
    assert metrics["history"][0]["val"]["per_class"]["water"]["support"] > 0  # pixel counts
    _, info = load_model(result.best)
    assert info.kind == "segmentation" and info.patch_size == 20 and info.in_channels == 6


def test_default_architecture_follows_the_samples(seg_set, tmp_path):
    config = {"epochs": 1, "batch_size": 4, "model": {"args": {"base_channels": 4, "depth": 2}}}
    result = train(config, tmp_path / "r", samples=seg_set)
    assert result.metrics["architecture"] == "unet"


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"model": {"architecture": "resnet9000"}}, "model.architecture"),
        ({"model": {"architecture": "unet"}}, "model.architecture"),  # segmentation net, patches
        ({"bands": 6}, "bands"),
        ({"num_classes": 5}, "num_classes"),
        ({"loss": {"class_weights": [1.0, 2.0]}}, "loss.class_weights"),
        ({"batch_size": 500}, "batch_size"),
        ({"model": {"args": {"patch_size": 7}}}, "model.args.patch_size"),
        ({"model": {"args": {"nonsense": 1}}}, "model.args"),
    ],
)
def test_bad_input_names_the_field(patch_set, tmp_path, config, field):
    with pytest.raises(InvalidInputError) as info:
        train({"epochs": 1, **config}, tmp_path / "run", samples=patch_set)
    assert info.value.field == field


def test_missing_and_empty_samples(tmp_path, patch_set):
    with pytest.raises(MissingInputError) as info:
        train({"epochs": 1}, tmp_path / "run")
    assert info.value.field == "data.samples"
    empty = tmp_path / "empty"
    meta = SampleSetMeta.model_validate_json((patch_set / "dataset.json").read_text())
    write_sample_set_meta(empty, meta)
    with pytest.raises(InvalidInputError) as info:
        train({"epochs": 1}, tmp_path / "run", samples=empty)
    assert info.value.field == "samples" and "empty" in str(info.value)
    assert not (tmp_path / "run").exists()  # bad input leaves no run behind


def test_changed_config_on_existing_run_is_refused(patch_set, tmp_path):
    train(tiny(epochs=1), tmp_path / "run", samples=patch_set)
    with pytest.raises(ConfigError) as info:
        train(tiny(epochs=1, seed=9), tmp_path / "run", samples=patch_set)
    assert info.value.field == "run"
    # The same config again: the run is complete, nothing more is trained.
    again = train(tiny(epochs=1), tmp_path / "run", samples=patch_set)
    assert again.resumed_from_epoch == 1 and again.metrics["completed_epochs"] == 1


def test_precision_fallbacks():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == (None, False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dtype, scaler = resolve_precision("fp16", cpu)
    assert not scaler and dtype in (None, torch.bfloat16)
    assert any("fp16" in str(w.message) for w in caught)


def test_bf16_training_on_cpu(patch_set, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # CPUs without bf16 fall back
        result = train(tiny(epochs=1, precision="bf16"), tmp_path / "bf16", samples=patch_set)
    assert result.metrics["precision"] in ("bfloat16", "fp32")
    assert result.metrics["history"][0]["train"]["loss"] is not None


# -- resume after kill -9 -----------------------------------------------------------------------

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    from geoportal.training import train

    samples, run, mark = sys.argv[1], sys.argv[2], sys.argv[3]
    config = json.loads(sys.argv[4])

    def hook(epoch, batch, batches, loss):
        if mark != "-" and epoch == 3 and batch == 2:
            open(mark, "w").close()
            time.sleep(300)  # killed here, in the middle of epoch 3

    result = train(config, run, samples=samples, on_batch=hook)
    print(json.dumps({"resumed": result.resumed_from_epoch}))
    """
)


def _run_script(samples: Path, run: Path, mark: str, config: dict) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(samples), str(run), mark, json.dumps(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_resume_after_sigkill_ends_where_an_uninterrupted_run_ends(patch_set, tmp_path):
    config = tiny(epochs=5, model={"args": {"width": 8, "depth": 2, "dropout": 0.3}})
    reference = _run_script(patch_set, tmp_path / "reference", "-", config)
    mark = tmp_path / "killed-here"
    victim = _run_script(patch_set, tmp_path / "run", str(mark), config)
    deadline = time.monotonic() + 240
    while not mark.exists():
        assert victim.poll() is None, victim.communicate()
        assert time.monotonic() < deadline, "the training never reached epoch 3"
        time.sleep(0.1)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    run = tmp_path / "run"
    assert read_checkpoint(run / "last.pt")["info"].epoch == 2
    assert json.loads((run / "metrics.json").read_text())["completed_epochs"] == 2

    resumed = _run_script(patch_set, run, "-", config)
    out, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"resumed": 2}
    out, err = reference.communicate(timeout=240)
    assert reference.returncode == 0, err

    metrics = json.loads((run / "metrics.json").read_text())
    expected = json.loads((tmp_path / "reference" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4, 5]
    assert read_checkpoint(run / "last.pt")["info"].epoch == 5
    for got, want in zip(metrics["history"], expected["history"], strict=True):
        assert got["train"]["loss"] == pytest.approx(want["train"]["loss"], rel=1e-5)
        assert got["val"]["loss"] == pytest.approx(want["val"]["loss"], rel=1e-5)
        assert got["lr"] == pytest.approx(want["lr"])
    assert metrics["best_epoch"] == expected["best_epoch"]
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_train_and_errors(patch_set, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from geoportal.cli import app

    monkeypatch.setenv("GEOPORTAL_STORAGE", str(tmp_path / "storage"))
    monkeypatch.setenv("GEOPORTAL_USER", "alice")
    config = tmp_path / "train.yaml"
    config.write_text("epochs: 1\nbatch_size: 16\nmodel:\n  args: {width: 8, depth: 2}\n")
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(config), "--run", "cli", "--samples", str(patch_set)])
    assert result.exit_code == 0, result.output
    assert "epoch 1/1" in result.output
    run = tmp_path / "storage" / "users" / "alice" / "models" / "cli"
    assert (run / "best.pt").exists()
    assert (
        TrainingConfig.model_validate(
            __import__("yaml").safe_load((run / "config.yaml").read_text())
        ).epochs
        == 1
    )
    config.write_text("epochs: 1\noptimizer: {name: rmsprop}\n")
    result = runner.invoke(app, ["train", str(config), "--run", "bad", "--samples", str(patch_set)])
    assert result.exit_code == 2
    assert "optimizer.name" in result.output
    result = runner.invoke(app, ["train", str(config), "--run", "../escape"])
    assert result.exit_code == 2


def test_docs_hold_the_current_config_reference():
    from geoportal.training.config import config_reference

    text = (REPO / "docs" / "training.md").read_text()
    start, end = "<!-- config-reference:start -->\n", "\n<!-- config-reference:end -->"
    embedded = text.split(start, 1)[1].split(end, 1)[0]
    assert embedded == config_reference(), "regenerate the table in docs/training.md"


def test_loader_workers_give_the_same_training(patch_set, tmp_path):
    inline = train(tiny(epochs=2), tmp_path / "inline", samples=patch_set)
    workers = train(tiny(epochs=2, data={"workers": 1}), tmp_path / "workers", samples=patch_set)
    for a, b in zip(inline.metrics["history"], workers.metrics["history"], strict=True):
        assert a["train"]["loss"] == pytest.approx(b["train"]["loss"], rel=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_training_with_mixed_precision(seg_set, tmp_path, precision):
    result = train(
        {"epochs": 2, "batch_size": 4, "device": "cuda", "precision": precision,
         "model": {"architecture": "unet", "args": {"base_channels": 8}}, "data": {"workers": 1}},
        tmp_path / precision,
        samples=seg_set,
    )  # fmt: skip
    assert result.metrics["device"] == "cuda"
    assert (
        result.metrics["precision"]
        == {"fp32": "fp32", "bf16": "bfloat16", "fp16": "float16"}[precision]
    )
    assert all(h["train"]["loss"] is not None for h in result.metrics["history"])
    _, info = load_model(result.best)
    assert info.kind == "segmentation"


def test_validation_only_at_the_end(patch_set, tmp_path):
    result = train(tiny(epochs=2, validate_while_training=False), tmp_path / "r", samples=patch_set)
    history = result.metrics["history"]
    assert history[0]["val"] is None and history[1]["val"] is not None
    assert result.metrics["best_epoch"] == 2
    assert read_checkpoint(result.best)["info"].epoch == 2
