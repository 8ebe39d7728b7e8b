"""Training data: sample sets or balanced selections as a batched torch dataset.

Samples stay in their memory-mapped containers; a batch is gathered with one
fancy-indexing read per container, normalised with the statistics of
``dataset.json`` and augmented (flips and 90° rotations, the eight symmetries
of the square) as whole arrays. Reading per batch instead of per sample is what
keeps the pipeline close to the speed of the model itself on small patches.

Shuffling and augmentation are drawn from ``(seed, epoch, batch)``, never from
global state, so a run resumed after a kill sees exactly the batches the
uninterrupted run would have seen, with any number of loader workers.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoportal.containers import Container
from geoportal.errors import InvalidContainerError, InvalidInputError, StorageNotFoundError
from geoportal.samples import DATASET_FILE, SampleSet, SampleSetMeta

IGNORE_INDEX = -100
"""Target value of pixels without a class (segmentation); the loss skips them."""

SELECTION_COLUMNS = ("file", "index", "class", "cluster")


@dataclass
class SampleIndex:
    """Which samples a dataset uses: container files and (container, index) pairs.

    Attributes:
        folder: the sample-set folder.
        meta: its ``dataset.json``.
        files: container patch files.
        container: container number per sample.
        index: index inside the container per sample.
        label: class index per sample (patch mode), or the tile's dominant class
            (segmentation; used only to stratify the validation split).
    """

    folder: Path
    meta: SampleSetMeta
    files: list[Path]
    container: np.ndarray
    index: np.ndarray
    label: np.ndarray
    source: str = ""

    def __len__(self) -> int:
        return len(self.index)

    def subset(self, rows: np.ndarray) -> SampleIndex:
        return SampleIndex(
            self.folder,
            self.meta,
            self.files,
            self.container[rows],
            self.index[rows],
            self.label[rows],
            self.source,
        )

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.label[self.label >= 0], minlength=len(self.meta.classes))


def _code_lookup(meta: SampleSetMeta) -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, np.int64)
    for i, c in enumerate(meta.classes):
        if 0 <= c.code < 256:
            lut[c.code] = i
    return lut


def _dominant_class(container: Container, lut: np.ndarray) -> np.ndarray:
    masks = container.masks
    if masks is None:
        raise InvalidContainerError(f"segmentation container {container.path} has no masks")
    out = np.empty(len(container), np.int64)
    for i in range(len(container)):
        mapped = lut[np.asarray(masks[i])]
        counts = np.bincount(mapped[mapped >= 0], minlength=1)
        out[i] = int(counts.argmax()) if counts.sum() else -1
    return out


def index_sample_set(folder: str | os.PathLike[str]) -> SampleIndex:
    """Every sample of a sample-set folder."""
    sset = SampleSet(folder)
    meta = sset.meta
    names = {c.name: i for i, c in enumerate(meta.classes)}
    lut = _code_lookup(meta)
    files: list[Path] = []
    cont, idx, lab = [], [], []
    for name, path in sset.container_files():
        c = Container(path)
        n = len(c)
        if n == 0:
            continue
        _check_container(c, meta)
        files.append(path)
        cont.append(np.full(n, len(files) - 1, np.int64))
        idx.append(np.arange(n, dtype=np.int64))
        if name is None:
            lab.append(_dominant_class(c, lut))
        else:
            lab.append(np.full(n, names[name], np.int64))
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64)  # noqa: E731
    return SampleIndex(sset.folder, meta, files, cat(cont), cat(idx), cat(lab), str(sset.folder))


def _check_container(c: Container, meta: SampleSetMeta) -> None:
    if len(c.bands) != len(meta.bands) or c.patch_size != meta.patch_size:
        raise InvalidContainerError(
            f"container {c.path} holds {len(c.bands)} bands of {c.patch_size} px but "
            f"{DATASET_FILE} says {len(meta.bands)} bands of {meta.patch_size} px"
        )


def _selection_samples_folder(csv_path: Path, resolve: Callable[[str], Path] | None) -> Path:
    meta_path = csv_path.with_suffix(".json")
    if not meta_path.exists():
        if (csv_path.parent / DATASET_FILE).exists():
            return csv_path.parent
        raise StorageNotFoundError(
            f"{csv_path.name} needs {meta_path.name} beside it (it names the sample set)",
            field="samples",
        )
    try:
        location = json.loads(meta_path.read_text())["samples"]
    except (ValueError, KeyError, TypeError):
        raise InvalidInputError(
            f'{meta_path.name} must hold {{"samples": <sample-set folder>, "count": N}}',
            field="samples",
        ) from None
    if resolve is not None:
        return resolve(location)
    if Path(location).is_absolute() and (Path(location) / DATASET_FILE).exists():
        return Path(location)
    # Without a storage at hand: the location is storage-relative, so find the
    # ancestor folder of the selection that is the storage root.
    for root in csv_path.resolve().parents:
        candidate = root / location
        if (candidate / DATASET_FILE).exists():
            return candidate
    if (csv_path.parent / DATASET_FILE).exists():
        return csv_path.parent
    raise StorageNotFoundError(
        f"the sample set {location!r} named by {meta_path.name} was not found", field="samples"
    )


def index_selection(
    csv_path: str | os.PathLike[str], resolve: Callable[[str], Path] | None = None
) -> SampleIndex:
    """The samples a balanced ``selection.csv`` lists (columns file,index,class,cluster).

    Args:
        csv_path: the selection manifest.
        resolve: turns the storage-relative sample-set location of ``selection.json``
            into a path (the storage resolver, which checks access); when absent the
            storage root is found among the manifest's ancestors.
    """
    csv_path = Path(csv_path)
    folder = _selection_samples_folder(csv_path, resolve)
    meta = SampleSet(folder).meta
    by_name = {c.name: i for i, c in enumerate(meta.classes)}
    by_code = {str(c.code): i for i, c in enumerate(meta.classes)}
    lut = _code_lookup(meta)
    files: list[Path] = []
    file_no: dict[str, int] = {}
    cont, idx, lab = [], [], []
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("file", "index") if c not in (reader.fieldnames or [])]
        if missing:
            raise InvalidInputError(
                f"{csv_path.name} lacks the column(s) {', '.join(missing)}; "
                f"expected header {','.join(SELECTION_COLUMNS)}",
                field="samples",
            )
        for line, row in enumerate(reader, start=2):
            rel = row["file"]
            if rel not in file_no:
                path = (folder / rel).resolve()
                if folder.resolve() not in path.parents:
                    raise InvalidInputError(
                        f"{csv_path.name} line {line}: file {rel!r} leaves the sample set",
                        field="samples",
                    )
                if not path.exists():
                    raise StorageNotFoundError(
                        f"{csv_path.name} line {line}: {rel!r} is not in {folder}", field="samples"
                    )
                files.append(path)
                file_no[rel] = len(files) - 1
            try:
                index = int(row["index"])
            except ValueError:
                raise InvalidInputError(
                    f"{csv_path.name} line {line}: index {row['index']!r} is not an integer",
                    field="samples",
                ) from None
            cls = (row.get("class") or "").strip()
            label = by_name.get(cls, by_code.get(cls, -1))
            if label < 0 and meta.mode == "patch":
                # Class folders name the class: the file's parent folder.
                label = by_name.get(Path(rel).parent.name, -1)
                if label < 0:
                    raise InvalidInputError(
                        f"{csv_path.name} line {line}: class {cls!r} is not one of the sample "
                        f"set's classes ({', '.join(by_name)})",
                        field="samples",
                    )
            cont.append(file_no[rel])
            idx.append(index)
            lab.append(label)
    containers = [Container(p) for p in files]
    for c in containers:
        _check_container(c, meta)
    cont_a, idx_a = np.asarray(cont, np.int64), np.asarray(idx, np.int64)
    for k, c in enumerate(containers):
        bad = idx_a[(cont_a == k) & ((idx_a < 0) | (idx_a >= len(c)))]
        if len(bad):
            raise InvalidInputError(
                f"{csv_path.name}: index {int(bad[0])} is out of range for {files[k].name} "
                f"({len(c)} samples)",
                field="samples",
            )
    lab_a = np.asarray(lab, np.int64)
    if meta.mode == "segmentation":
        for k, c in enumerate(containers):
            rows = np.nonzero((cont_a == k) & (lab_a < 0))[0]
            if len(rows):
                lab_a[rows] = _dominant_class(c, lut)[idx_a[rows]]
    return SampleIndex(folder, meta, files, cont_a, idx_a, lab_a, str(csv_path))


def index_samples(
    location: str | os.PathLike[str], resolve: Callable[[str], Path] | None = None
) -> SampleIndex:
    """A sample-set folder or a ``selection.csv``, whichever ``location`` is."""
    path = Path(location)
    if path.suffix.lower() == ".csv":
        if not path.exists():
            raise StorageNotFoundError(f"selection {path} does not exist", field="samples")
        return index_selection(path, resolve)
    return index_sample_set(path)


def stratified_split(
    samples: SampleIndex, fraction: float, seed: int
) -> tuple[SampleIndex, SampleIndex | None]:
    """Hold out ``fraction`` of every class for validation.

    Raises:
        InvalidInputError: a class present in the samples would end up with no
            training or no validation sample (field ``data.val_fraction``).
    """
    if fraction <= 0:
        return samples, None
    rng = np.random.default_rng([seed, 7919])
    names = [c.name for c in samples.meta.classes]
    train_rows, val_rows = [], []
    labels = samples.label
    groups = [np.nonzero(labels == k)[0] for k in range(len(names))]
    unlabelled = np.nonzero(labels < 0)[0]
    for k, rows in enumerate(groups):
        if len(rows) == 0:
            continue
        rows = rng.permutation(rows)
        n_val = int(round(len(rows) * fraction))
        if n_val == 0 or n_val == len(rows):
            where = "validation" if n_val == 0 else "training"
            raise InvalidInputError(
                f"a validation split of {fraction} leaves class '{names[k]}' "
                f"({len(rows)} samples) without {where} samples; give more samples of it, "
                "change data.val_fraction, or set data.validation",
                field="data.val_fraction",
            )
        val_rows.append(rows[:n_val])
        train_rows.append(rows[n_val:])
    if len(unlabelled):
        rows = rng.permutation(unlabelled)
        n_val = int(round(len(rows) * fraction))
        val_rows.append(rows[:n_val])
        train_rows.append(rows[n_val:])
    train = np.sort(np.concatenate(train_rows)) if train_rows else np.zeros(0, np.int64)
    val = np.sort(np.concatenate(val_rows)) if val_rows else np.zeros(0, np.int64)
    if len(val) == 0:
        raise InvalidInputError(
            f"a validation split of {fraction} leaves no validation samples",
            field="data.val_fraction",
        )
    return samples.subset(train), samples.subset(val)


@dataclass(frozen=True)
class BatchKey:
    """What one batch is: its sample rows and the seed of its augmentation."""

    rows: np.ndarray
    seed: tuple[int, ...]


class EpochBatches:
    """Sampler yielding one :class:`BatchKey` per batch; order depends on (seed, epoch) only.

    Used with ``DataLoader(batch_size=None)``: each key is fetched whole by
    :meth:`SampleDataset.__getitem__`.
    """

    def __init__(
        self, n: int, batch_size: int, *, shuffle: bool, seed: int, drop_last: bool = False
    ) -> None:
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full if (self.drop_last and full) else full + (1 if rest else 0)

    def __iter__(self) -> Iterator[BatchKey]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        else:
            order = np.arange(self.n)
        for b in range(len(self)):
            rows = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield BatchKey(rows, (self.seed, self.epoch, b))


class SampleDataset:
    """Normalised (and optionally augmented) batches of a :class:`SampleIndex`.

    ``dataset[BatchKey]`` returns ``(x, y)`` tensors: x float32 ``(B, C, p, p)``;
    y int64 ``(B,)`` class indices (patch mode) or ``(B, p, p)`` with
    :data:`IGNORE_INDEX` for pixels without a class (segmentation).
    """

    def __init__(self, samples: SampleIndex, *, augment: bool = False) -> None:
        self.samples = samples
        self.meta = samples.meta
        self.augment = augment
        self.mode = samples.meta.mode
        mean = np.asarray(samples.meta.normalisation.mean, np.float32)
        std = np.asarray(samples.meta.normalisation.std, np.float32)
        std = np.where(std > 0, std, 1.0).astype(np.float32)
        self.scale = (1.0 / std)[None, :, None, None]
        self.offset = (-mean / std)[None, :, None, None]
        self.lut = _code_lookup(samples.meta)
        self._containers: list[Container] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def containers(self) -> list[Container]:
        # Opened lazily in each worker process: memory maps do not survive pickling well.
        if self._containers is None:
            self._containers = [Container(p) for p in self.samples.files]
        return self._containers

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_containers"] = None
        return state

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw patches (and masks) of ``rows``, in the order given."""
        s = self.samples
        meta = s.meta
        p = meta.patch_size
        x = np.empty((len(rows), len(meta.bands), p, p), np.float32)
        y = np.empty((len(rows), p, p), np.int64) if self.mode == "segmentation" else None
        cont, idx = s.container[rows], s.index[rows]
        for k in np.unique(cont):
            where = np.nonzero(cont == k)[0]
            order = np.argsort(idx[where], kind="stable")
            where, sel = where[order], idx[where][order]
            c = self.containers[int(k)]
            x[where] = c.patches[sel]
            if y is not None:
                masks = c.masks
                if masks is None:
                    raise InvalidContainerError(f"segmentation container {c.path} has no masks")
                y[where] = self.lut[np.asarray(masks[sel])]
        return x, y

    def __getitem__(self, key: BatchKey) -> tuple[Any, Any]:
        import torch

        rows = key.rows
        x, masks = self.read(rows)
        x *= self.scale
        x += self.offset
        if self.augment:
            x, masks = _dihedral(x, masks, np.random.default_rng(list(key.seed)))
        y = masks if masks is not None else self.samples.label[rows]
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))


def _dihedral(
    x: np.ndarray, y: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply one of the 8 flips/rotations per sample, grouped so each is one array op."""
    ops = rng.integers(0, 8, size=len(x))
    for op in range(1, 8):
        where = np.nonzero(ops == op)[0]
        if len(where) == 0:
            continue
        k, flip = op % 4, op >= 4
        part = x[where]
        part = np.rot90(part, k, axes=(-2, -1))
        if flip:
            part = part[..., ::-1]
        x[where] = part
        if y is not None:
            m = np.rot90(y[where], k, axes=(-2, -1))
            y[where] = m[..., ::-1] if flip else m
    return x, y


def pass_through(batch: Any) -> Any:
    """Collate function of pre-batched data (module-level so workers can pickle it)."""
    return batch


class InlineLoader:
    """Batches fetched in the calling process, without a DataLoader.

    With no worker processes a DataLoader only adds per-batch bookkeeping (fetcher,
    profiler annotations) around ``dataset[key]``; on small patches that is a few
    percent of the epoch, so it is skipped.
    """

    def __init__(self, dataset: SampleDataset, batches: EpochBatches) -> None:
        self.dataset, self.batches = dataset, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for key in self.batches:
            yield self.dataset[key]


def make_loader(
    dataset: SampleDataset, batches: EpochBatches, workers: int, pin_memory: bool = False
) -> Any:
    """An iterable of ``(x, y)`` batches: inline, or a DataLoader with worker processes."""
    if workers == 0 and not pin_memory:
        return InlineLoader(dataset, batches)
    import torch
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,  # type: ignore[arg-type]
        sampler=batches,
        batch_size=None,
        collate_fn=pass_through,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        # Its own generator: worker seeds then never consume the global RNG, whose
        # state a resumed run restores.
        generator=torch.Generator().manual_seed(0),
    )


def check_compatible(train: SampleIndex, other: SampleIndex, what: str) -> None:
    """The validation set must describe the same bands, classes and patch size."""
    a, b = train.meta, other.meta
    if a.bands != b.bands or [c.name for c in a.classes] != [c.name for c in b.classes]:
        raise InvalidInputError(
            f"{what} has other bands or classes than the training samples", field="data.validation"
        )
    if a.patch_size != b.patch_size or a.mode != b.mode:
        raise InvalidInputError(
            f"{what} has another patch size or mode than the training samples",
            field="data.validation",
        )
