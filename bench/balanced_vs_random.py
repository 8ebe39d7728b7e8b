"""Science check: a classifier trained on the balanced selection vs a random one of equal size.

Data: NC Landsat 7 (../shared/data/nc_landsat7), 7 imbalanced land-cover classes.
Patches of 5x5 pixels around every labelled pixel of the 1996 land-cover polygons
(no nodata in the window) form the pool. Two evaluations:

A. *points test*: train on the whole polygon pool's selections; test on patches at
   the independent points labelset, minus points inside a polygon (no leakage).
   Few rare-class test points exist (water 5, sediment 2), so rare-class recall is
   coarse here.
B. *polygon hold-out*: in each of 5 folds, one polygon per class (cycling) is held
   out as the test set and the selections are made from the other polygons'
   patches. Patches of one polygon are strongly correlated, so this measures
   generalisation to unseen places.

Balanced: the seed paper's algorithm exactly as :class:`BalancedSampler` runs it
(per-class KMeans on standardised per-band mean/std features, automatic k,
clusters ascending by size, all of a cluster below ``threshold``, else every
``step``-th). Random: a uniform random subset of the same size, 10 draws.
Classifiers (scikit-learn, fixed seeds): a random forest and a logistic
regression on the normalised patch pixels. Per-class recall; random as mean ± std.

Usage: .venv/bin/python bench/balanced_vs_random.py [--data ../shared/data/nc_landsat7]
The last line is macro recall (balanced) / macro recall (random) of the random
forest in evaluation B.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.features import rasterize

from geoportal.containers import Container
from geoportal.labels import rasterize_labels, read_labels
from geoportal.samples import SampleSet
from geoportal.sampling.balanced import (
    BalancedConfig,
    _kmeans,
    choose_k,
    select_from_clusters,
    standardise,
)
from geoportal.sampling.extract import ExtractConfig, extract_samples
from geoportal.sampling.features import open_containers, sample_features

REPO = Path(__file__).resolve().parents[1]


def load_set(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list]:
    """Patches (N, C, p, p) float32, class codes, windows, balanced features, (file, index)."""
    xs, ys, ws, paths, refs = [], [], [], [], []
    for _, path in SampleSet(folder).container_files():
        c = Container(path)
        xs.append(np.asarray(c.patches, dtype=np.float32))
        ys.append(np.asarray(c.labels))
        ws.append(np.asarray(c.windows))
        paths.append(path)
        refs += [(path.relative_to(folder).as_posix(), i) for i in range(len(c))]
    feats = sample_features(open_containers(paths, "pool"))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ws), feats, refs


def balanced_subset(feats: np.ndarray, y: np.ndarray, idx: np.ndarray, cfg: BalancedConfig):
    """The algorithm of BalancedSampler on the samples ``idx`` (per class); chosen indices."""
    chosen = []
    for c in np.unique(y[idx]):
        members = idx[y[idx] == c]
        f = standardise(feats[members])
        k = cfg.n_clusters or choose_k(f, cfg)
        labels = np.unique(_kmeans(f, min(k, len(members)), cfg.seed), return_inverse=True)[1]
        _, _, _, selected = select_from_clusters(labels, cfg.threshold, cfg.step)
        chosen.append(members[selected])
    return np.sort(np.concatenate(chosen))


def recall(y_true: np.ndarray, y_pred: np.ndarray, codes: list[int]) -> np.ndarray:
    return np.array(
        [(y_pred[y_true == c] == c).mean() if (y_true == c).any() else np.nan for c in codes]
    )


def fit_predict(kind: str, x: np.ndarray, y: np.ndarray, xt: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    if kind == "forest":
        model = RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=2)
    else:
        model = LogisticRegression(max_iter=2000, C=0.1)
    return model.fit(x.reshape(len(x), -1), y).predict(xt.reshape(len(xt), -1))


def compare(name, x, y, pool_idx, xt, yt, feats, cfg, draws, codes, names, rng):
    """Recall per class for balanced vs random selections from ``pool_idx``."""
    chosen = balanced_subset(feats, y, pool_idx, cfg)
    picks = [np.sort(rng.choice(pool_idx, len(chosen), replace=False)) for _ in range(draws)]
    out = {"size": len(chosen), "pool": len(pool_idx)}
    out["counts"] = {
        c: ((y[pool_idx] == c).sum(), (y[chosen] == c).sum(),
            np.mean([(y[p] == c).sum() for p in picks]), (yt == c).sum())
        for c in codes
    }  # fmt: skip
    for kind in ("logistic", "forest"):
        bal = recall(yt, fit_predict(kind, x[chosen], y[chosen], xt, 0), codes)
        rnd = np.array([recall(yt, fit_predict(kind, x[p], y[p], xt, i), codes)
                        for i, p in enumerate(picks)])  # fmt: skip
        out[kind] = (bal, rnd)
    return out


def show(title: str, results: list[dict], codes: list[int], names: dict[int, str]) -> float:
    print(f"\n== {title}")
    size = sum(r["size"] for r in results)
    pool = sum(r["pool"] for r in results)
    print(f"selection size {size} of {pool} pool patches (summed over folds)")
    print("class          pool  balanced  random  test")
    for c in codes:
        vals = np.sum([r["counts"][c] for r in results], axis=0)
        print(f"{names[c]:<12} {vals[0]:>6} {vals[1]:>9} {vals[2]:>7.1f} {vals[3]:>5}")
    ratio = 1.0
    for kind in ("logistic", "forest"):
        bal = np.nanmean([r[kind][0] for r in results], axis=0)  # mean over folds
        rnd = np.nanmean([r[kind][1] for r in results], axis=0)  # (draws, classes)
        print(f"{kind}: per-class recall      balanced   random (mean ± std over draws)")
        for j, c in enumerate(codes):
            mu, sd = np.nanmean(rnd[:, j]), np.nanstd(rnd[:, j])
            print(f"  {names[c]:<24} {bal[j]:8.3f}   {mu:.3f} ± {sd:.3f}")
        macro_b, macro_r = np.nanmean(bal), np.nanmean(rnd, axis=1)
        print(f"  {'macro recall':<24} {macro_b:8.3f}   {macro_r.mean():.3f} ± {macro_r.std():.3f}")
        ratio = macro_b / macro_r.mean()
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "nc_landsat7")
    ap.add_argument("--patch-size", type=int, default=5)
    ap.add_argument("--threshold", type=int, default=40)
    ap.add_argument("--step", type=int, default=4)
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument(
        "--cnn", type=int, default=0, metavar="FOLDS",
        help="also train geoportal.training's patch_cnn on this many hold-out folds (slow)",
    )  # fmt: skip
    ap.add_argument("--cnn-draws", type=int, default=3)
    ap.add_argument("--cnn-epochs", type=int, default=12)
    args = ap.parse_args()
    scene = args.data / "lsat7_2000_6band.tif"
    polys = args.data / "labels" / "landsat96_polygons.shp"
    points = args.data / "labels" / "landsat96_points.shp"
    work = Path(tempfile.mkdtemp(prefix="balanced-vs-random-"))
    cfg = ExtractConfig(patch_size=args.patch_size, class_field="id")
    pool = extract_samples(scene, polys, work / "pool", cfg)
    extract_samples(scene, points, work / "test", cfg)
    x, y, wins, feats, refs = load_set(work / "pool")
    xt, yt, twins, _, _ = load_set(work / "test")
    half = args.patch_size // 2
    labels = read_labels(polys, "id")
    with rasterio.open(scene) as src:
        burnt = rasterize_labels(labels, src.transform, src.shape, src.crs)
        frame = labels.to_crs(src.crs).features.reset_index(drop=True)
        ids = rasterize(
            ((g, i + 1) for i, g in enumerate(frame.geometry)), out_shape=src.shape,
            transform=src.transform, dtype="int32",
        )  # fmt: skip
    polygon = ids[wins[:, 1] + half, wins[:, 0] + half]
    outside = burnt[twins[:, 1] + half, twins[:, 0] + half] == 0
    xt, yt = xt[outside], yt[outside]
    norm = pool.meta.normalisation
    mean = np.array(norm.mean, np.float32)[None, :, None, None]
    std = np.array(norm.std, np.float32)[None, :, None, None]
    x, xt = (x - mean) / std, (xt - mean) / std
    names = {c.code: c.name for c in pool.meta.classes}
    bcfg = BalancedConfig(threshold=args.threshold, step=args.step, seed=0)
    rng = np.random.default_rng(0)

    codes = sorted(int(c) for c in np.unique(yt) if (y == c).any())
    everything = np.arange(len(y))
    a = compare("points", x, y, everything, xt, yt, feats, bcfg, args.draws, codes, names, rng)
    show("A. test = points outside the polygons", [a], codes, names)

    codes_b = sorted(int(c) for c in np.unique(y) if len(np.unique(polygon[y == c])) >= 2)
    folds = []
    for fold in range(args.folds):
        held = np.zeros(len(y), bool)
        for c in codes_b:
            polys_c = np.unique(polygon[y == c])
            held |= polygon == polys_c[fold % len(polys_c)]
        train = np.flatnonzero(~held & np.isin(y, codes_b))
        folds.append(
            compare(f"fold {fold}", x, y, train, x[held], y[held], feats, bcfg, args.draws,
                    codes_b, names, rng)
        )  # fmt: skip
    ratio = show(f"B. polygon hold-out, {args.folds} folds", folds, codes_b, names)
    if args.cnn:
        cnn_holdout(args, work, x, y, polygon, refs, codes_b, names, feats, bcfg, norm)
    print(f"{ratio:.3f}")


def cnn_holdout(args, work, x, y, polygon, refs, codes, names, feats, bcfg, norm) -> None:
    """Evaluation B with the platform's own trainer (patch_cnn) instead of scikit-learn.

    No validation split (``val_fraction`` 0): a random selection may hold only a few
    samples of a rare class, too few to split, and the held-out polygons must not
    steer model selection; the last epoch's weights are evaluated.
    """
    import json

    import torch

    from geoportal.checkpoint import load_model
    from geoportal.training import train

    rng = np.random.default_rng(1)
    pool = work / "pool"
    results = []
    for fold in range(args.cnn):
        held = np.zeros(len(y), bool)
        for c in codes:
            polys_c = np.unique(polygon[y == c])
            held |= polygon == polys_c[fold % len(polys_c)]
        train_idx = np.flatnonzero(~held & np.isin(y, codes))
        chosen = balanced_subset(feats, y, train_idx, bcfg)
        picks = [chosen] + [
            np.sort(rng.choice(train_idx, len(chosen), replace=False))
            for _ in range(args.cnn_draws)
        ]
        recalls = []
        for k, idx in enumerate(picks):
            folder = work / f"cnn-{fold}-{k}"
            folder.mkdir()
            with open(folder / "selection.csv", "w") as out:
                out.write("file,index,class,cluster\n")
                out.writelines(f"{refs[i][0]},{refs[i][1]},{names[int(y[i])]},0\n" for i in idx)
            (folder / "selection.json").write_text(
                json.dumps({"samples": str(pool.resolve()), "count": len(idx)})
            )
            config = {"model": {"architecture": "patch_cnn"}, "epochs": args.cnn_epochs,
                      "batch_size": 64, "device": "cpu", "seed": k,
                      "data": {"val_fraction": 0.0}}  # fmt: skip
            result = train(config, folder / "run", samples=folder / "selection.csv")
            model, info = load_model(result.last)
            # x is normalised with the pool's statistics, which the model was trained with too
            assert info.normalisation == norm
            with torch.no_grad():
                logits = model(torch.from_numpy(np.ascontiguousarray(x[held])))
            pred = np.array([info.classes[i].code for i in logits.argmax(1).numpy()])
            recalls.append(recall(y[held], pred, codes))
            print(f"cnn fold {fold} {'balanced' if k == 0 else f'random {k}'}: "
                  f"macro recall {np.nanmean(recalls[-1]):.3f}", flush=True)  # fmt: skip
        results.append((recalls[0], np.array(recalls[1:])))
    bal = np.nanmean([r[0] for r in results], axis=0)
    rnd = np.nanmean([r[1] for r in results], axis=0)
    print(f"\n== C. patch_cnn (geoportal.training), polygon hold-out, {args.cnn} folds")
    print("per-class recall              balanced   random (mean ± std over draws)")
    for j, c in enumerate(codes):
        print(f"  {names[c]:<24} {bal[j]:8.3f}   {np.nanmean(rnd[:, j]):.3f} ± "
              f"{np.nanstd(rnd[:, j]):.3f}")  # fmt: skip
    macro_r = np.nanmean(rnd, axis=1)
    print(f"  {'macro recall':<24} {np.nanmean(bal):8.3f}   {macro_r.mean():.3f} ± "
          f"{macro_r.std():.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
