"""The platform's exception hierarchy.

Every error the core raises on purpose derives from :class:`GeoportalError` and
also from the builtin that fits, so callers may catch either. Messages are
written for the person who gave the input: they name the field and the fix.
The WPS adapters and the CLI turn these into ExceptionReports and messages;
anything that is *not* a ``GeoportalError`` is a bug and is reported generically.
"""

from __future__ import annotations


class GeoportalError(Exception):
    """Root of every error the platform raises deliberately.

    Attributes:
        field: the input, setting or option the error is about, when there is one.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


class ConfigError(GeoportalError, ValueError):
    """A setting or configuration file is invalid (unknown key, wrong type)."""


class InvalidInputError(GeoportalError, ValueError):
    """An input value is present but unusable (wrong type, out of range, incompatible)."""


class MissingInputError(GeoportalError, ValueError):
    """A required input was not given."""


class StorageNotFoundError(GeoportalError, FileNotFoundError):
    """A location resolved inside the storage but nothing is there."""


class LabelsNotFoundError(StorageNotFoundError):
    """A labelset does not exist or holds no features."""


class AccessDeniedError(GeoportalError, PermissionError):
    """A location lies outside what the caller may read or write."""


class InvalidRasterError(GeoportalError, ValueError):
    """A file is not a usable raster: unreadable, truncated, or without a CRS."""


class InvalidContainerError(GeoportalError, ValueError):
    """A sample container is unreadable or inconsistent with its neighbours."""


class ResourceUnavailableError(GeoportalError, RuntimeError):
    """A compute resource (a GPU, a Dask worker resource) that the task needs is absent."""
