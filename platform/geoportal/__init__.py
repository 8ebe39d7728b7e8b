"""Geoportal: the core library of a remote-sensing machine-learning platform.

Storage and path confinement (:mod:`geoportal.storage`), raster and label I/O
(:mod:`geoportal.raster`, :mod:`geoportal.labels`), sample containers and sets
(:mod:`geoportal.containers`, :mod:`geoportal.samples`), sampling, training,
inference and accuracy, and the typed settings (:mod:`geoportal.settings`)
shared by every door: the CLI, the WPS processes, the hub and notebooks.
Importing this package is cheap; heavy subpackages load on first use.
"""

__version__ = "0.1.0"
