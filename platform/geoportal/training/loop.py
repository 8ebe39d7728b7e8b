"""The training loop: build everything from a :class:`TrainingConfig` and train, resumably.

:func:`train` indexes the samples, splits off validation, builds the
architecture for the samples' bands and classes, then runs epochs of
training and validation. After each epoch it writes ``best.pt`` (when the
monitored metric improved), ``metrics.json``, the learning curve and finally
``last.pt`` with the optimiser, scheduler, gradient-scaler and RNG state. A run
started again on the same folder continues from ``last.pt`` and ends at the
configured epoch count; because batches and augmentations derive from
``(seed, epoch, batch)`` and the RNG state is restored, it reaches the same
weights as a run that was never interrupted.
"""

from __future__ import annotations

import logging
import math
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as nnf

from geoportal.checkpoint import ModelInfo, read_checkpoint, save_checkpoint
from geoportal.errors import InvalidInputError, MissingInputError, ResourceUnavailableError
from geoportal.hostmemory import keep_freed_memory
from geoportal.models import KINDS, build_model
from geoportal.settings import Device
from geoportal.training.config import DEFAULT_ARCHITECTURE, TrainingConfig, parse_config
from geoportal.training.data import (
    EpochBatches,
    SampleDataset,
    SampleIndex,
    check_compatible,
    index_samples,
    make_loader,
    stratified_split,
)
from geoportal.training.metrics import ConfusionMatrix, scores
from geoportal.training.runs import RunFolder

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
BatchHook = Callable[[int, int, int, float], None]
"""on_batch(epoch (1-based), batch (1-based), batches per epoch, batch loss)."""


@dataclass(frozen=True)
class TrainingResult:
    """Where a finished run's files are and how it ended."""

    run_dir: Path
    best: Path
    last: Path
    metrics: dict[str, Any]
    resumed_from_epoch: int


# -- devices and precision ----------------------------------------------------------------------


def resolve_device(device: Device | str) -> torch.device:
    """``auto`` → CUDA when torch sees a GPU, else the CPU.

    Raises:
        ResourceUnavailableError: ``cuda`` was asked for but there is no GPU.
    """
    device = Device(device)
    if device == Device.cuda or (device == Device.auto and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ResourceUnavailableError(
                "device 'cuda' was requested but torch sees no GPU; use device: auto or cpu",
                field="device",
            )
        return torch.device("cuda")
    return torch.device("cpu")


def cpu_supports_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX); else bf16 is emulated."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # pragma: no cover - older torch
        return False


def resolve_precision(requested: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """The autocast dtype (None: fp32) and whether gradients need scaling (fp16).

    Unsupported combinations fall back with a warning rather than fail, so one
    configuration runs on a GPU node and on a laptop.
    """
    if requested == "fp32":
        return None, False
    if device.type == "cuda":
        if requested == "bf16" and not torch.cuda.is_bf16_supported():
            warnings.warn(
                "this GPU lacks bf16; training in fp16 instead", RuntimeWarning, stacklevel=2
            )
            return torch.float16, True
        return (torch.bfloat16, False) if requested == "bf16" else (torch.float16, True)
    if requested == "fp16":
        if cpu_supports_bf16():
            warnings.warn(
                "fp16 autocast is for GPUs; using bf16 on this CPU", RuntimeWarning, stacklevel=2
            )
            return torch.bfloat16, False
        warnings.warn("fp16 autocast is for GPUs; training in fp32", RuntimeWarning, stacklevel=2)
        return None, False
    if not cpu_supports_bf16():
        warnings.warn(
            "this CPU has no native bf16 (AVX512-BF16/AMX); training in fp32",
            RuntimeWarning,
            stacklevel=2,
        )
        return None, False
    return torch.bfloat16, False


# -- building blocks ---------------------------------------------------------------------------


def make_optimizer(config: TrainingConfig, params: Any) -> torch.optim.Optimizer:
    o = config.optimizer
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    raise InvalidInputError(  # pragma: no cover - the config's Literal refuses it first
        f"unknown optimizer '{o.name}'; choose sgd, adam or adamw", field="optimizer.name"
    )


def make_scheduler(
    config: TrainingConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> tuple[Any, bool]:
    """The LR scheduler and whether it steps per batch (onecycle) rather than per epoch."""
    s = config.schedule
    if s.name == "none":
        return None, False
    if s.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, s.step_size, s.gamma), False
    if s.name == "cosine":
        return (
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs, eta_min=s.min_lr),
            False,
        )
    return (
        torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=config.optimizer.lr,
            total_steps=config.epochs * max(steps_per_epoch, 1),
            pct_start=s.pct_start,
        ),
        True,
    )


def class_weights(config: TrainingConfig, dataset: SampleDataset) -> torch.Tensor | None:
    """Loss weights: none, ``balanced`` (inverse frequency in the training set) or a list."""
    spec = config.loss.class_weights
    k = len(dataset.meta.classes)
    if spec is None:
        return None
    if isinstance(spec, list):
        if len(spec) != k:
            raise InvalidInputError(
                f"loss.class_weights has {len(spec)} values but the samples have {k} classes",
                field="loss.class_weights",
            )
        return torch.tensor(spec, dtype=torch.float32)
    if dataset.mode == "segmentation":
        counts = np.zeros(k, np.int64)
        for start in range(0, len(dataset), 256):
            _, masks = dataset.read(np.arange(start, min(start + 256, len(dataset))))
            assert masks is not None
            counts += np.bincount(masks[masks >= 0].ravel(), minlength=k)[:k]
    else:
        counts = dataset.samples.class_counts()
    total = counts.sum()
    weights = np.where(counts > 0, total / (k * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def _architecture(config: TrainingConfig, mode: str) -> tuple[str, dict[str, Any]]:
    name = config.model.architecture or DEFAULT_ARCHITECTURE[mode]
    if name not in KINDS:
        known = ", ".join(sorted(KINDS))
        raise InvalidInputError(
            f"unknown architecture '{name}'; choose one of: {known}", field="model.architecture"
        )
    if KINDS[name] != mode:
        raise InvalidInputError(
            f"architecture '{name}' is a {KINDS[name]} model but the samples are {mode} samples; "
            f"use {DEFAULT_ARCHITECTURE[mode]} (or another {mode} architecture)",
            field="model.architecture",
        )
    return name, dict(config.model.args)


def _check_data(config: TrainingConfig, train: SampleIndex) -> None:
    meta = train.meta
    if config.bands is not None and config.bands != len(meta.bands):
        raise InvalidInputError(
            f"the configuration expects {config.bands} bands but the samples have "
            f"{len(meta.bands)} ({', '.join(meta.bands)}); fix 'bands' or choose other samples",
            field="bands",
        )
    if config.num_classes is not None and config.num_classes != len(meta.classes):
        raise InvalidInputError(
            f"the configuration expects {config.num_classes} classes but the samples have "
            f"{len(meta.classes)}; fix 'num_classes' or choose other samples",
            field="num_classes",
        )
    if len(train) == 0:
        raise InvalidInputError(
            f"the training set {train.source} is empty: extract samples first", field="samples"
        )


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


# -- the loop ----------------------------------------------------------------------------------


class Trainer:
    """One run: data, model, optimiser and the epoch loop (see :func:`train`)."""

    def __init__(
        self,
        config: TrainingConfig,
        train_set: SampleIndex,
        val_set: SampleIndex | None,
        run: RunFolder,
    ) -> None:
        self.config = config
        self.run = run
        self.meta = train_set.meta
        self.mode = self.meta.mode
        self.class_names = [c.name for c in self.meta.classes]
        self.device = resolve_device(config.device)
        self.amp_dtype, use_scaler = resolve_precision(config.precision, self.device)
        self.arch, self.arch_args = _architecture(config, self.mode)
        if self.arch == "patch_cnn":
            given = self.arch_args.setdefault("patch_size", self.meta.patch_size)
            if given != self.meta.patch_size:
                raise InvalidInputError(
                    f"model.args.patch_size is {given} but the samples are "
                    f"{self.meta.patch_size} px; drop the argument",
                    field="model.args.patch_size",
                )
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        self.model = build_model(
            self.arch, len(self.meta.bands), len(self.meta.classes), **self.arch_args
        ).to(self.device)
        self.train_data = SampleDataset(train_set, augment=config.data.augment)
        self.val_data = SampleDataset(val_set) if val_set is not None and len(val_set) else None
        self.train_batches = EpochBatches(
            len(train_set), config.batch_size, shuffle=True, seed=config.seed, drop_last=True
        )
        pin = self.device.type == "cuda"
        self.train_loader = make_loader(
            self.train_data, self.train_batches, config.data.workers, pin
        )
        self.val_loader = None
        if self.val_data is not None:
            val_batches = EpochBatches(len(self.val_data), config.batch_size, shuffle=False, seed=0)
            self.val_loader = make_loader(self.val_data, val_batches, config.data.workers, pin)
        self.optimizer = make_optimizer(config, self.model.parameters())
        self.scheduler, self.per_batch = make_scheduler(
            config, self.optimizer, len(self.train_batches)
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        weights = class_weights(config, self.train_data)
        self.weights = weights.to(self.device) if weights is not None else None
        self.history: list[dict[str, Any]] = []
        self.best_value: float | None = None
        self.best_epoch = 0
        self.start_epoch = 0

    # -- state ---------------------------------------------------------------------------------

    def info(self, epoch: int, metrics: dict[str, Any]) -> ModelInfo:
        return ModelInfo(
            architecture=self.arch,
            arch_args=self.arch_args,
            kind=self.mode,  # type: ignore[arg-type]
            bands=list(self.meta.bands),
            normalisation=self.meta.normalisation,
            classes=list(self.meta.classes),
            patch_size=self.meta.patch_size,
            epoch=epoch,
            metrics=metrics,
        )

    def restore(self) -> int:
        """Load ``last.pt``; return the number of epochs it had completed."""
        raw = read_checkpoint(self.run.last, map_location=str(self.device))
        self.model.load_state_dict(raw["state_dict"])
        self.optimizer.load_state_dict(raw["optimizer"])
        if self.scheduler is not None and raw.get("scheduler") is not None:
            self.scheduler.load_state_dict(raw["scheduler"])
        if raw.get("scaler"):
            self.scaler.load_state_dict(raw["scaler"])
        self.history = list(raw["history"])
        self.best_value = raw["best_value"]
        self.best_epoch = raw["best_epoch"]
        _set_rng_state(raw["rng"], self.device)
        self.start_epoch = int(raw["info"].epoch)
        return self.start_epoch

    def record(self) -> dict[str, Any]:
        return {
            "run": self.run.name,
            "architecture": self.arch,
            "arch_args": self.arch_args,
            "mode": self.mode,
            "classes": self.class_names,
            "bands": list(self.meta.bands),
            "monitor": self.config.monitor,
            "epochs": self.config.epochs,
            "completed_epochs": len(self.history),
            "best_epoch": self.best_epoch,
            "best_value": self._reported(self.best_value),
            "device": self.device.type,
            "precision": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "fp32",
            "train_samples": len(self.train_data),
            "val_samples": len(self.val_data) if self.val_data else 0,
            "history": self.history,
        }

    # -- epochs --------------------------------------------------------------------------------

    def _autocast(self) -> Any:
        return torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        )

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nnf.cross_entropy(
            logits.float(),
            y,
            weight=self.weights,
            ignore_index=-100,
            label_smoothing=self.config.loss.label_smoothing,
        )

    def train_step(self, x: torch.Tensor, y: torch.Tensor, cm: ConfusionMatrix) -> float | None:
        """One optimisation step on a batch; returns its loss (None: nothing labelled)."""
        x = x.to(self.device, non_blocking=True)
        y = y.to(self.device, non_blocking=True)
        if self.mode == "segmentation" and not bool((y >= 0).any()):
            return None
        with self._autocast():
            logits = self.model(x)
        loss = self._loss(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.per_batch and self.scheduler is not None:
            self.scheduler.step()
        cm.update(logits.detach(), y)
        return float(loss.detach())

    def train_epoch(self, epoch: int, on_batch: BatchHook | None) -> dict[str, Any]:
        self.model.train()
        self.train_batches.set_epoch(epoch)
        cm = ConfusionMatrix(len(self.class_names))
        total, count = 0.0, 0
        n = len(self.train_batches)
        for b, (x, y) in enumerate(self.train_loader, start=1):
            value = self.train_step(x, y, cm)
            if value is None:
                continue
            total += value * len(x)
            count += len(x)
            if on_batch is not None:
                on_batch(epoch + 1, b, n, value)
        return {"loss": _finite(total / max(count, 1)), **scores(cm.compute(), self.class_names)}

    @torch.no_grad()
    def validate(self) -> dict[str, Any] | None:
        if self.val_loader is None:
            return None
        self.model.eval()
        cm = ConfusionMatrix(len(self.class_names))
        total, count = 0.0, 0
        for x, y in self.val_loader:
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            with self._autocast():
                logits = self.model(x)
            if self.mode == "patch" or bool((y >= 0).any()):
                total += float(self._loss(logits, y)) * len(x)
                count += len(x)
            cm.update(logits, y)
        return {"loss": _finite(total / max(count, 1)), **scores(cm.compute(), self.class_names)}

    def _reported(self, score: float | None) -> float | None:
        # Scores are "higher is better" internally; the loss is reported as itself.
        if score is None:
            return None
        return -score if self.config.monitor == "val_loss" else score

    def _monitored(self, entry: dict[str, Any]) -> float | None:
        key = self.config.monitor.removeprefix("val_")
        # With a validation set, only validated epochs compete (validate_while_training
        # off: the last one); without one, the training metrics stand in.
        source = entry.get("val") if self.val_data is not None else entry["train"]
        if source is None:
            return None
        value = source.get(key)
        if value is None:
            return None
        return -value if key == "loss" else value

    def fit(self, progress: Progress | None, on_batch: BatchHook | None) -> dict[str, Any]:
        epochs = self.config.epochs
        for epoch in range(self.start_epoch, epochs):
            started = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train_metrics = self.train_epoch(epoch, on_batch)
            last_epoch = epoch + 1 == epochs
            val = self.validate() if (self.config.validate_while_training or last_epoch) else None
            if self.scheduler is not None and not self.per_batch:
                self.scheduler.step()
            entry = {
                "epoch": epoch + 1,
                "lr": lr,
                "seconds": round(time.perf_counter() - started, 3),
                "train": train_metrics,
                "val": val,
            }
            self.history.append(entry)
            value = self._monitored(entry)
            summary = {"epoch": epoch + 1, "train": train_metrics, "val": val}
            if value is not None and (self.best_value is None or value > self.best_value):
                self.best_value, self.best_epoch = value, epoch + 1
                save_checkpoint(self.run.best, self.model, self.info(epoch + 1, summary))
            elif not self.run.best.exists():
                save_checkpoint(self.run.best, self.model, self.info(epoch + 1, summary))
            self.run.write_metrics(self.record())
            self.run.plot_curve(self.history)
            save_checkpoint(
                self.run.last,
                self.model,
                self.info(epoch + 1, summary),
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict() if self.scheduler is not None else None,
                scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
                history=self.history,
                best_value=self.best_value,
                best_epoch=self.best_epoch,
                rng=_rng_state(self.device),
            )
            if progress is not None:
                shown = val or train_metrics
                progress(
                    100.0 * (epoch + 1) / epochs,
                    f"epoch {epoch + 1}/{epochs}: loss {train_metrics['loss']:.4f}, "
                    f"{'validation' if val else 'training'} accuracy {shown['accuracy']:.3f}",
                )
        return self.record()


def load_training_sets(
    config: TrainingConfig,
    samples: str | Path | None = None,
    validation: str | Path | None = None,
    resolve: Callable[[str], Path] | None = None,
) -> tuple[SampleIndex, SampleIndex | None]:
    """Index the training samples and the validation samples (given, or split off).

    Args:
        resolve: turns storage locations (config.data.samples / validation and the
            sample set named by a selection) into paths; None takes them as paths.
    """
    location = samples if samples is not None else config.data.samples
    if location is None or str(location).strip() == "":
        raise MissingInputError(
            "no training samples: set data.samples in the configuration or give --samples",
            field="data.samples",
        )
    as_path = (lambda loc: resolve(str(loc))) if (resolve and samples is None) else Path
    train_set = index_samples(as_path(location), resolve)
    _check_data(config, train_set)
    val_location = validation if validation is not None else config.data.validation
    val_set: SampleIndex | None
    if val_location:
        as_val = (lambda loc: resolve(str(loc))) if (resolve and validation is None) else Path
        val_set = index_samples(as_val(val_location), resolve)
        check_compatible(train_set, val_set, f"validation set {val_location}")
    else:
        train_set, val_set = stratified_split(train_set, config.data.val_fraction, config.seed)
    if len(train_set) < config.batch_size:
        raise InvalidInputError(
            f"the training set holds {len(train_set)} samples, fewer than batch_size "
            f"{config.batch_size}; lower batch_size or give more samples",
            field="batch_size",
        )
    return train_set, val_set


def train(
    config: TrainingConfig | dict[str, Any],
    run_dir: str | Path,
    *,
    samples: str | Path | None = None,
    validation: str | Path | None = None,
    resolve: Callable[[str], Path] | None = None,
    progress: Progress | None = None,
    on_batch: BatchHook | None = None,
    resume: bool = True,
) -> TrainingResult:
    """Train a model as ``config`` says, into the run folder ``run_dir``.

    Args:
        config: the configuration (a mapping is validated first).
        run_dir: ``users/<name>/models/<run>/``; an existing run with ``last.pt``
            is resumed (same configuration required).
        samples: a sample-set folder or selection.csv (a path); overrides ``data.samples``.
        validation: validation samples (a path); overrides ``data.validation``.
        resolve: the storage resolver for locations inside the configuration.
        progress: ``progress(percent, message)`` after every epoch.
        on_batch: ``on_batch(epoch, batch, batches, loss)`` after every batch.
        resume: continue a run found in ``run_dir`` (else refuse to touch it).

    Raises:
        ConfigError, InvalidInputError, MissingInputError: with the offending field.
    """
    config = parse_config(config)  # type: ignore[arg-type]
    keep_freed_memory()
    train_set, val_set = load_training_sets(config, samples, validation, resolve)
    run = RunFolder(run_dir)
    resuming = run.prepare(config, resume=resume)
    trainer = Trainer(config, train_set, val_set, run)
    start = trainer.restore() if resuming else 0
    if start:
        log.info("resuming run %s after epoch %d of %d", run.name, start, config.epochs)
    record = trainer.fit(progress, on_batch)
    return TrainingResult(run.folder, run.best, run.last, record, start)
