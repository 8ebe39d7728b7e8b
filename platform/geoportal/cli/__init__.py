"""The ``geoportal`` command: a thin layer over the library.

Each command group lives in its own module and is added to :data:`app` in
:mod:`geoportal.cli.main`. Errors the library raises on purpose
(:class:`~geoportal.errors.GeoportalError`) are printed as one line naming the
field, with exit code 2; anything else is a bug and keeps its traceback.
"""

from geoportal.cli.main import app, main

__all__ = ["app", "main"]
