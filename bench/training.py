"""Training throughput: does the data pipeline keep up with the model?

Builds a generated patch sample set (memory-mapped containers, as extraction
writes them), then times, on the same batches and with the same model code:

1. training epochs through the real pipeline (DataLoader over the containers,
   normalisation, flips/rotations), and
2. the same forward + backward + optimiser steps on those batches already in memory,

alternating the two and keeping the fastest epoch of each (other processes'
load then hits both alike).

It prints samples per second for both and, as its LAST line, the ratio
pipeline epoch time / in-memory epoch time (median over the alternating pairs;
goal: <= 1.15, i.e. the pipeline costs at most 15 % on top of the model).
Options: --bands, --patch, --samples, --batch,
--epochs, --workers, --arch, --device, --threads.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from geoportal.training.config import parse_config
from geoportal.training.data import index_samples, stratified_split
from geoportal.training.loop import Trainer
from geoportal.training.metrics import ConfusionMatrix
from geoportal.training.runs import RunFolder
from geoportal.training.synthetic import make_sample_set


def main() -> None:
    from geoportal.hostmemory import keep_freed_memory

    keep_freed_memory()  # as train() does: both sides measured with the same allocator
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bands", type=int, default=6)
    parser.add_argument("--patch", type=int, default=9)
    parser.add_argument("--samples", type=int, default=1000, help="per class (4 classes)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--arch", default="patch_cnn")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        # On a shared, loaded machine OpenMP threads wait on each other at every op;
        # one thread gives steadier figures there.
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        folder = make_sample_set(
            Path(tmp) / "samples", bands=args.bands, n_classes=4, patch_size=args.patch,
            per_class=args.samples, scene_size=max(160, int((args.samples * 4) ** 0.5 * 3)),
        )  # fmt: skip
        config = parse_config({
            "epochs": args.epochs, "batch_size": args.batch, "device": args.device,
            "model": {"architecture": args.arch, "args": {"width": args.width}},
            "data": {"workers": args.workers, "val_fraction": 0.0},
        })  # fmt: skip
        train_set, _ = stratified_split(index_samples(folder), 0.0, 0)
        run = RunFolder(Path(tmp) / "run")
        run.prepare(config, resume=False)
        trainer = Trainer(config, train_set, None, run)
        sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
        n_batches = len(trainer.train_batches)
        n_samples = n_batches * args.batch
        print(f"device {trainer.device}, {len(train_set)} samples of {args.bands}x{args.patch}"
              f"x{args.patch}, batch {args.batch}, {n_batches} batches/epoch, "
              f"{args.workers} workers, torch threads {torch.get_num_threads()}")  # fmt: skip

        # The same batches (epoch 1's order and augmentation), held in memory.
        trainer.train_batches.set_epoch(1)
        batches = [(x.to(trainer.device), y.to(trainer.device)) for x, y in trainer.train_loader]

        def in_memory() -> None:
            trainer.model.train()
            cm = ConfusionMatrix(4)
            for x, y in batches:
                trainer.train_step(x, y, cm)
            cm.compute()

        def timed(work) -> float:  # type: ignore[no-untyped-def]
            sync()
            started = time.perf_counter()
            work()
            sync()
            return time.perf_counter() - started

        trainer.train_epoch(0, None)  # warm-up: page cache, allocator, kernels
        in_memory()
        pipeline, compute = [], []
        # Alternate the two so that load from other processes hits both alike.
        for _ in range(args.epochs):
            pipeline.append(timed(lambda: trainer.train_epoch(1, None)))
            compute.append(timed(in_memory))

        t_pipe, t_comp = min(pipeline), min(compute)
        print(f"pipeline epoch: {t_pipe:.3f} s = {n_samples / t_pipe:,.0f} samples/s "
              f"(epochs: {', '.join(f'{t:.3f}' for t in pipeline)})")  # fmt: skip
        print(f"in-memory forward+backward: {t_comp:.3f} s = {n_samples / t_comp:,.0f} samples/s "
              f"(epochs: {', '.join(f'{t:.3f}' for t in compute)})")  # fmt: skip
        print(f"ratio of the fastest epochs: {t_pipe / t_comp:.3f}")
        # Last line: the median of the ratios of neighbouring (pipeline, in-memory) epochs,
        # which a burst of load on the machine moves less than a ratio of minima.
        print(f"{statistics.median(p / c for p, c in zip(pipeline, compute, strict=True)):.3f}")


if __name__ == "__main__":
    main()
