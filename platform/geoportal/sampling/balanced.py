"""Cluster-balanced selection of training samples (the seed paper's algorithm).

Land-cover samples are redundant: most patches of a class look alike (forest
interior, open water) while a few are rare (forest edges, shadowed slopes,
turbid water). Training on all of them spends most of the time on the common
look and under-weights the rare ones. The algorithm, as the paper describes it:

1. list the (container file, sample index) pairs of a sample set;
2. describe each sample by the mean and standard deviation of its pixels in
   every band (:mod:`geoportal.sampling.features`);
3. standardise the features and cluster them with scikit-learn's ``KMeans``
   (``MiniBatchKMeans`` for groups above 20,000 samples);
4. order the clusters ascending by size;
5. take every sample of a cluster with fewer than ``threshold`` members, and
   every ``step``-th sample of the larger ones.

Rare looks are thereby always kept and frequent looks thinned.

**Per class by default.** Clustering each class separately finds the variety
*inside* the class, which is what the thinning is about: spectrally distinct
classes (water, forest) would otherwise occupy clusters of their own, so the
clusters would mostly re-discover the classes and a small class would be kept
or thinned as a whole depending on its size alone, instead of keeping its rare
members. Clustering across classes (``per_class=False``) is offered for sets
whose classes overlap spectrally, where shared clusters are informative.

**Choosing ``n_clusters`` automatically.** When ``n_clusters`` is not given,
each clustering group gets the ``k`` in ``2..max_auto_clusters`` (and below
the group's size) with the best silhouette score, measured with ``KMeans`` on a
seeded random subsample of at most ``auto_subsample`` samples; the group is then
clustered in full with that ``k``. A group of fewer than 3 samples is one
cluster. The silhouette prefers compact, well-separated clusters, so ``k``
follows the structure of the data rather than its size.

The result is deterministic for a given seed: containers are read in sorted
order, members of a cluster keep that order, and ``KMeans`` gets the seed.
Memory stays bounded: patches are streamed, only the features (2·bands float32
per sample, about 100 MB for 1,000,000 samples of 13 bands) are held.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from geoportal.atomic import atomic_path, atomic_write_text
from geoportal.containers import iter_container_files
from geoportal.errors import InvalidInputError, StorageNotFoundError
from geoportal.sampling.features import ContainerInfo, open_containers, sample_features

Progress = Callable[[float, str], None]

SELECTION_CSV = "selection.csv"
SELECTION_JSON = "selection.json"
REPORT_JSON = "report.json"
PLOT_PNG = "plot.png"
ALL_CLASSES = "all"


class BalancedConfig(BaseModel):
    """Options of balanced sampling."""

    model_config = ConfigDict(extra="forbid")

    n_clusters: int | None = Field(
        None, description="clusters per clustering group; None chooses it by silhouette"
    )
    threshold: int = Field(50, description="clusters with fewer members than this are taken whole")
    step: int = Field(4, description="from larger clusters, every step-th sample is taken")
    per_class: bool = Field(True, description="cluster each class separately (else all together)")
    seed: int = Field(0, description="seed of KMeans and of the subsamples (plot, auto k)")
    max_auto_clusters: int = Field(12, description="largest k tried when n_clusters is None")
    auto_subsample: int = Field(1500, description="samples used to score each k when automatic")
    plot_points: int = Field(10000, description="most points drawn in the plot (all groups)")
    cluster_threads: int | None = Field(
        1,
        description="BLAS/OpenMP threads of clustering and plotting; 1 avoids the slowdown "
        "(often 10x) of OpenMP spin-waiting when other jobs share the cores; None: all cores",
    )


@dataclass
class GroupResult:
    """The clustering of one group (a class, or all classes together).

    Attributes:
        name: the class name, or ``"all"`` when clustering across classes.
        container_ids: per sample, the index of its container in the run's list.
        indices: per sample, its index inside the container.
        classes: per sample, the index of its class in the run's class list.
        features: standardised features (N, 2·bands).
        labels: cluster id per sample.
        order: cluster ids in processing order (ascending size, then id).
        sizes: members per cluster id.
        taken: samples taken per cluster id.
        selected: boolean mask of the selected samples.
        k_rule: ``given`` or ``silhouette``.
    """

    name: str
    container_ids: np.ndarray
    indices: np.ndarray
    classes: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    order: list[int]
    sizes: np.ndarray
    taken: np.ndarray
    selected: np.ndarray
    k_rule: str


@dataclass
class BalancedResult:
    """Where the outputs were written, and the report's content."""

    selection: Path
    selection_json: Path
    report: Path
    plot: Path | None
    report_data: dict[str, Any]
    groups: list[GroupResult] = field(repr=False, default_factory=list)

    @property
    def count(self) -> int:
        return int(self.report_data["selected"])


def check_options(config: BalancedConfig) -> None:
    """Reject options the algorithm cannot run with, naming the option.

    Raises:
        InvalidInputError: ``threshold`` < 1, ``step`` < 1 or ``n_clusters`` < 1.
    """
    if config.threshold < 1:
        raise InvalidInputError(
            f"threshold must be at least 1 (got {config.threshold}): clusters smaller than "
            "the threshold are kept whole",
            field="threshold",
        )
    if config.step < 1:
        raise InvalidInputError(
            f"step must be at least 1 (got {config.step}): every step-th sample of a large "
            "cluster is kept, 1 keeps all",
            field="step",
        )
    if config.n_clusters is not None and config.n_clusters < 1:
        raise InvalidInputError(
            f"n_clusters must be at least 1 (got {config.n_clusters}), or left empty to "
            "choose it automatically",
            field="n_clusters",
        )
    if config.max_auto_clusters < 2:
        raise InvalidInputError("max_auto_clusters must be at least 2", field="max_auto_clusters")


def select_from_clusters(
    labels: np.ndarray, threshold: int, step: int
) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """Steps 4 and 5 of the algorithm on given cluster labels.

    Args:
        labels: cluster id per sample (0..k-1), samples in their stable order.
        threshold: clusters with fewer members are taken whole.
        step: larger clusters give every step-th member, starting with the first.

    Returns:
        (processing order of cluster ids, size per id, taken per id, selection mask).
    """
    labels = np.asarray(labels)
    k = int(labels.max()) + 1 if labels.size else 0
    sizes = np.bincount(labels, minlength=k) if k else np.zeros(0, np.int64)
    order = sorted(range(k), key=lambda c: (int(sizes[c]), c))
    selected = np.zeros(labels.shape[0], dtype=bool)
    taken = np.zeros(k, dtype=np.int64)
    # Members of every cluster in stable order, without one pass per cluster.
    by_cluster = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for c in order:
        members = by_cluster[starts[c] : starts[c + 1]]
        chosen = members if sizes[c] < threshold else members[::step]
        selected[chosen] = True
        taken[c] = len(chosen)
    return order, sizes, taken, selected


def standardise(features: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per feature (constant features become 0)."""
    features = features.astype(np.float32, copy=True)
    mean = features.mean(axis=0, dtype=np.float64)
    std = features.std(axis=0, dtype=np.float64)
    std[std == 0] = 1.0
    features -= mean.astype(np.float32)
    features /= std.astype(np.float32)
    return features


#: Groups larger than this are clustered with MiniBatchKMeans (see :func:`_kmeans`).
MINIBATCH_ABOVE = 20_000


def _kmeans(features: np.ndarray, k: int, seed: int, n_init: int | None = None) -> np.ndarray:
    """Cluster ids of ``features`` (deterministic for ``seed``).

    Groups up to :data:`MINIBATCH_ABOVE` samples use Lloyd's ``KMeans`` with three
    starts; larger ones use ``MiniBatchKMeans``, which sees every sample in batches
    (unlike fitting a subsample, it cannot miss a small cluster of rare samples) at
    a fraction of the cost: Lloyd needs about a second per 100,000 samples and
    iteration budget, and a million samples must stay within seconds.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if k == 1:
        return np.zeros(len(features), dtype=np.int64)
    if len(features) > MINIBATCH_ABOVE and n_init is None:
        model: Any = MiniBatchKMeans(
            n_clusters=k, batch_size=4096, n_init=3, random_state=seed, max_no_improvement=10
        )
    else:
        model = KMeans(n_clusters=k, n_init=n_init or 3, random_state=seed, max_iter=100)
    return np.asarray(model.fit_predict(features), dtype=np.int64)


def choose_k(features: np.ndarray, config: BalancedConfig) -> int:
    """The automatic number of clusters: best silhouette on a seeded subsample."""
    from sklearn.metrics import silhouette_score

    n = len(features)
    if n < 3:
        return 1
    rng = np.random.default_rng(config.seed)
    sub = features
    if n > config.auto_subsample:
        sub = features[np.sort(rng.choice(n, config.auto_subsample, replace=False))]
    distinct = len(np.unique(sub, axis=0))
    best_k, best_score = 1, -np.inf
    for k in range(2, min(config.max_auto_clusters, len(sub) - 1, distinct) + 1):
        labels = _kmeans(sub, k, config.seed, n_init=1)
        if len(np.unique(labels)) < 2:
            continue
        score = silhouette_score(sub, labels)
        if score > best_score:
            best_k, best_score = k, score
    return best_k


def _relabel_dense(labels: np.ndarray) -> np.ndarray:
    """KMeans may leave a cluster empty; renumber so ids are 0..k'-1 (order kept)."""
    _, dense = np.unique(labels, return_inverse=True)
    return dense.astype(np.int64)


@dataclass
class _Inputs:
    folder: Path
    class_names: list[str]
    containers: list[ContainerInfo]
    container_class: list[int]  # class index per container


def discover_sample_set(folder: str | os.PathLike[str]) -> _Inputs:
    """The classes and containers of a sample set (with or without ``dataset.json``).

    A folder with ``dataset.json`` is read through :class:`geoportal.samples.SampleSet`
    (classes whose folder is absent had no samples and are skipped); a folder
    without it is taken as one sub-folder of containers per class.

    Raises:
        StorageNotFoundError: the folder does not exist.
        InvalidInputError: a class folder holds no containers, or there are no classes.
        InvalidContainerError: a container is unreadable or has other bands.
    """
    from geoportal.samples import DATASET_FILE, SEGMENTATION_DIR, SampleSet

    folder = Path(folder)
    if not folder.is_dir():
        raise StorageNotFoundError(f"samples: {folder} is not a folder", field="samples")
    groups: list[tuple[str, Path]] = []
    if (folder / DATASET_FILE).exists():
        sample_set = SampleSet(folder)
        if sample_set.mode == "segmentation":
            groups = [(SEGMENTATION_DIR, folder / SEGMENTATION_DIR)]
        else:
            groups = [(n, p) for n, p in sample_set.class_dirs().items() if p.is_dir()]
    else:
        groups = [(p.name, p) for p in sorted(folder.iterdir()) if p.is_dir() and p.name[0] != "."]
    if not groups:
        raise InvalidInputError(
            f"samples: {folder} holds no class folders; extract samples first", field="samples"
        )
    names: list[str] = []
    containers: list[ContainerInfo] = []
    owner: list[int] = []
    for name, path in groups:
        files = list(iter_container_files(path)) if path.is_dir() else []
        if not files:
            raise InvalidInputError(
                f"samples: class folder '{name}' ({path}) holds no sample containers; "
                "remove the empty folder or extract samples for that class",
                field="samples",
            )
        infos = open_containers(files, f"class '{name}'")
        if containers and infos[0].shape != containers[0].shape:
            raise _band_mismatch(infos[0], containers[0])
        names.append(name)
        owner.extend([len(names) - 1] * len(infos))
        containers.extend(infos)
    return _Inputs(folder, names, containers, owner)


def _band_mismatch(a: ContainerInfo, b: ContainerInfo) -> Exception:
    from geoportal.errors import InvalidContainerError

    return InvalidContainerError(
        f"samples: container {a.path} holds samples of shape {a.shape} (bands, height, width) "
        f"but {b.path} holds {b.shape}; all containers need the same bands and patch size",
        field="samples",
    )


class BalancedSampler:
    """Run balanced sampling on a sample set and write its outputs.

    Args:
        config: the options; checked at construction.
    """

    def __init__(self, config: BalancedConfig | None = None) -> None:
        self.config = config or BalancedConfig()
        check_options(self.config)

    def cluster(
        self, inputs: _Inputs, features: np.ndarray, progress: Progress | None = None
    ) -> list[GroupResult]:
        """Cluster and select per group; ``features`` are the raw ones in container order."""
        cfg = self.config
        counts = np.array([c.count for c in inputs.containers], dtype=np.int64)
        container_ids = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        indices = (np.arange(counts.sum(), dtype=np.int64) - np.repeat(starts, counts)).astype(
            np.int32
        )
        class_of = np.repeat(np.asarray(inputs.container_class, dtype=np.int16), counts)
        finite = np.isfinite(features).all(axis=1)
        if cfg.per_class:
            groups = [(name, class_of == i) for i, name in enumerate(inputs.class_names)]
        else:
            groups = [(ALL_CLASSES, np.ones(len(features), dtype=bool))]
        results = []
        for g, (name, mask) in enumerate(groups):
            mask = mask & finite
            n = int(mask.sum())
            if n == 0:
                raise InvalidInputError(
                    f"samples: class '{name}' has no sample with finite pixel values",
                    field="samples",
                )
            if cfg.n_clusters is not None and cfg.n_clusters > n:
                where = f"class '{name}'" if cfg.per_class else "the sample set"
                raise InvalidInputError(
                    f"n_clusters ({cfg.n_clusters}) is larger than the number of samples of "
                    f"{where} ({n}); lower n_clusters or leave it empty to choose it "
                    "automatically",
                    field="n_clusters",
                )
            feats = standardise(features[mask])
            if cfg.n_clusters is None:
                k, rule = choose_k(feats, cfg), "silhouette"
            else:
                k, rule = cfg.n_clusters, "given"
            labels = _relabel_dense(_kmeans(feats, k, cfg.seed))
            order, sizes, taken, selected = select_from_clusters(labels, cfg.threshold, cfg.step)
            results.append(
                GroupResult(
                    name=name,
                    container_ids=container_ids[mask],
                    indices=indices[mask],
                    classes=class_of[mask],
                    features=feats,
                    labels=labels,
                    order=order,
                    sizes=sizes,
                    taken=taken,
                    selected=selected,
                    k_rule=rule,
                )
            )
            if progress:
                progress((g + 1) / len(groups), f"clustered {name}: k={len(sizes)} ({rule})")
        return results

    def report(self, inputs: _Inputs, groups: Sequence[GroupResult]) -> dict[str, Any]:
        """The report: options, then per group its clusters in processing order."""
        cfg = self.config
        out: dict[str, Any] = {
            "threshold": cfg.threshold,
            "step": cfg.step,
            "per_class": cfg.per_class,
            "n_clusters": cfg.n_clusters if cfg.n_clusters is not None else "auto",
            "seed": cfg.seed,
            "samples": int(sum(len(g.labels) for g in groups)),
            "selected": int(sum(int(g.selected.sum()) for g in groups)),
            "classes": {},
        }
        for g in groups:
            clusters = []
            for c in g.order:
                entry: dict[str, Any] = {
                    "cluster": int(c),
                    "size": int(g.sizes[c]),
                    "taken": int(g.taken[c]),
                }
                if not cfg.per_class:
                    members = g.classes[g.labels == c]
                    entry["classes"] = {
                        inputs.class_names[int(i)]: int(n)
                        for i, n in zip(*np.unique(members, return_counts=True), strict=True)
                    }
                clusters.append(entry)
            out["classes"][g.name] = {
                "samples": len(g.labels),
                "selected": int(g.selected.sum()),
                "n_clusters": len(g.sizes),
                "k_rule": g.k_rule,
                "clusters": clusters,
            }
        return out

    def write_selection(self, inputs: _Inputs, groups: Sequence[GroupResult], path: Path) -> int:
        """Write ``selection.csv`` (file,index,class,cluster) in processing order."""
        rel = np.array(
            [c.path.relative_to(inputs.folder).as_posix() for c in inputs.containers], dtype=object
        )
        names = np.array(inputs.class_names, dtype=object)
        count = 0
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as out:
            out.write("file,index,class,cluster\n")
            for g in groups:
                for c in g.order:
                    rows = np.flatnonzero(g.selected & (g.labels == c))
                    if not len(rows):
                        continue
                    files = rel[g.container_ids[rows]]
                    idx = g.indices[rows]
                    cls = names[g.classes[rows]]
                    out.write(
                        "".join(
                            f"{_csv(f)},{i},{_csv(k)},{c}\n"
                            for f, i, k in zip(files, idx.tolist(), cls, strict=True)
                        )
                    )
                    count += len(rows)
        return count

    def run(
        self,
        samples: str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        *,
        samples_ref: str | None = None,
        plot: bool = True,
        progress: Progress | None = None,
    ) -> BalancedResult:
        """Balanced sampling of the set at ``samples``; outputs go into ``out_dir``.

        Args:
            samples: the sample-set folder (class folders of containers).
            out_dir: where ``selection.csv``, ``selection.json``, ``report.json``
                and ``plot.png`` are written (each atomically).
            samples_ref: how ``selection.json`` names the set (storage-relative);
                defaults to the folder's absolute path.
            plot: also draw ``plot.png``.
            progress: ``progress(fraction, message)`` callback.
        """

        def sub(lo: float, hi: float) -> Progress | None:
            if progress is None:
                return None
            return lambda f, m: progress(lo + (hi - lo) * f, m)

        inputs = discover_sample_set(samples)
        if progress:
            progress(
                0.0, f"{len(inputs.containers)} containers in {len(inputs.class_names)} classes"
            )
        features = sample_features(inputs.containers, progress=sub(0.0, 0.6))
        from threadpoolctl import threadpool_limits

        with threadpool_limits(self.config.cluster_threads):
            groups = self.cluster(inputs, features, progress=sub(0.6, 0.85))
            del features
            return self._write(inputs, groups, out_dir, samples_ref, plot, progress)

    def _write(
        self,
        inputs: _Inputs,
        groups: list[GroupResult],
        out_dir: str | os.PathLike[str],
        samples_ref: str | None,
        plot: bool,
        progress: Progress | None,
    ) -> BalancedResult:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        report = self.report(inputs, groups)
        selection = out / SELECTION_CSV
        count = self.write_selection(inputs, groups, selection)
        ref = samples_ref if samples_ref is not None else str(inputs.folder.resolve())
        selection_json = atomic_write_text(
            out / SELECTION_JSON, json.dumps({"samples": ref, "count": count}, indent=1)
        )
        report_path = atomic_write_text(out / REPORT_JSON, json.dumps(report, indent=1))
        plot_path = None
        if plot:
            from geoportal.sampling.plot import plot_clusters

            if progress:
                progress(0.9, "drawing the PCA plot")
            plot_path = plot_clusters(
                groups, out / PLOT_PNG, max_points=self.config.plot_points, seed=self.config.seed
            )
        if progress:
            progress(1.0, f"selected {count:,} of {report['samples']:,} samples")
        return BalancedResult(
            selection, selection_json, report_path, plot_path, report, list(groups)
        )


def _csv(text: str) -> str:
    if any(ch in text for ch in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def balanced_sampling(
    samples: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: BalancedConfig | None = None,
    *,
    samples_ref: str | None = None,
    plot: bool = True,
    progress: Progress | None = None,
) -> BalancedResult:
    """Convenience wrapper: ``BalancedSampler(config).run(...)``."""
    return BalancedSampler(config).run(
        samples, out_dir, samples_ref=samples_ref, plot=plot, progress=progress
    )


def read_selection(path: str | os.PathLike[str]) -> list[tuple[str, int, str, int]]:
    """Read a ``selection.csv`` back as (file, index, class, cluster) rows."""
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return [(r["file"], int(r["index"]), r["class"], int(r["cluster"])) for r in reader]
