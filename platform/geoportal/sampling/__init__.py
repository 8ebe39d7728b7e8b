"""Training samples: extraction from labels, and cluster-balanced selection.

* :mod:`geoportal.sampling.extract` cuts patches (or image/mask pairs) from a
  scene where labels are, into a sample set (:mod:`geoportal.samples`).
* :mod:`geoportal.sampling.features` streams over a sample set's containers and
  computes each sample's per-band mean and standard deviation.
* :mod:`geoportal.sampling.balanced` clusters those features and keeps rare
  samples while thinning frequent ones (the seed paper's algorithm).
* :mod:`geoportal.sampling.plot` draws the clusters in 2-D (PCA).

Import the submodules directly; this package imports nothing heavy by itself.
"""
