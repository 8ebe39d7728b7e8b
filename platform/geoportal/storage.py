"""The shared storage and its one path resolver.

Layout under the storage root::

    datasets/            the shared remote-sensing database (read by all,
                         written by administrators and ingest only)
    datasets/catalog/    its STAC catalog
    users/<name>/        a user's own area
        labels/ samples/ models/ runs/

Every door (WPS inputs and outputs, the tile service, notebook helpers, the CLI)
turns a user-given location into a real path through :meth:`Storage.resolve`,
which is the only place where confinement is decided. A location is a path
relative to the root, an absolute path inside the root, or a URL this platform
issued (an output reference of the WPS, say). Symlinks are followed before the
check, so a link that leads out of the root or into another user's area is
refused like the direct path would be.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from geoportal.errors import AccessDeniedError, InvalidInputError, StorageNotFoundError

USER_SUBDIRS = ("labels", "samples", "models", "runs")
DATASETS = "datasets"
USERS = "users"
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")


def check_username(user: str) -> str:
    """Return ``user`` if it is a safe folder name, else raise.

    Raises:
        InvalidInputError: the name could escape its folder or is empty.
    """
    if not isinstance(user, str) or not _USERNAME.match(user) or ".." in user:
        raise InvalidInputError(
            f"user name {user!r} is not allowed: use letters, digits and . _ @ + - "
            "(not starting with a dot, no '..')",
            field="user",
        )
    return user


@dataclass(frozen=True)
class Storage:
    """The storage root plus the URL prefixes under which the platform publishes it.

    Attributes:
        root: the storage root folder.
        url_prefixes: URL prefixes that map onto ``root``; a URL starting with one
            of them is a location this platform issued (e.g. the WPS output URL).
        admins: users who may write into ``datasets/``.
    """

    root: Path
    url_prefixes: tuple[str, ...] = ()
    admins: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())
        object.__setattr__(
            self, "url_prefixes", tuple(p.rstrip("/") + "/" for p in self.url_prefixes)
        )

    # -- layout ---------------------------------------------------------------------------

    @property
    def datasets_dir(self) -> Path:
        return self.root / DATASETS

    def user_dir(self, user: str) -> Path:
        """The user's own area (not created)."""
        return self.root / USERS / check_username(user)

    def ensure_layout(self, user: str | None = None) -> Path:
        """Create ``datasets/`` and, for ``user``, the area with its sub-folders."""
        self.datasets_dir.mkdir(parents=True, exist_ok=True)
        (self.root / USERS).mkdir(parents=True, exist_ok=True)
        if user is None:
            return self.root
        home = self.user_dir(user)
        for sub in USER_SUBDIRS:
            (home / sub).mkdir(parents=True, exist_ok=True)
        return home

    def relative(self, path: str | os.PathLike[str]) -> str:
        """The storage-relative POSIX form of a path inside the root."""
        resolved = Path(path).resolve()
        try:
            return resolved.relative_to(self.root).as_posix()
        except ValueError:
            raise AccessDeniedError(
                f"{path} is outside the storage root {self.root}", field="location"
            ) from None

    def url_for(self, path: str | os.PathLike[str], prefix: str | None = None) -> str:
        """The URL under which ``path`` is published (first prefix unless given)."""
        base = prefix or (self.url_prefixes[0] if self.url_prefixes else None)
        if base is None:
            raise InvalidInputError("this storage publishes no URLs", field="url_prefixes")
        return base.rstrip("/") + "/" + self.relative(path)

    # -- resolution -----------------------------------------------------------------------

    def _relative_parts(self, location: str, field_name: str) -> PurePosixPath:
        if not isinstance(location, str) or not location.strip():
            raise InvalidInputError(f"{field_name} is empty: give a storage path", field=field_name)
        if "\x00" in location or any(ord(c) < 32 for c in location):
            raise InvalidInputError(f"{field_name} contains control characters", field=field_name)
        text = location.strip()
        scheme = urlsplit(text).scheme.lower()
        if scheme in ("http", "https"):
            for prefix in self.url_prefixes:
                if text.startswith(prefix):
                    text = unquote(urlsplit(text).path)[len(unquote(urlsplit(prefix).path)) :]
                    break
            else:
                raise AccessDeniedError(
                    f"{field_name} {location!r} is a URL this platform did not issue; "
                    "give a storage path or an output reference of this server",
                    field=field_name,
                )
        elif scheme and len(scheme) > 1:
            raise AccessDeniedError(
                f"{field_name} {location!r}: the scheme '{scheme}:' is not allowed",
                field=field_name,
            )
        if "\\" in text:
            raise InvalidInputError(f"{field_name} may not contain backslashes", field=field_name)
        if text.startswith("~"):
            raise AccessDeniedError(f"{field_name} may not start with '~'", field=field_name)
        path = PurePosixPath(text)
        if path.is_absolute():
            try:
                path = PurePosixPath(Path(text).relative_to(self.root).as_posix())
            except ValueError:
                raise AccessDeniedError(
                    f"{field_name} {location!r} is outside the storage; "
                    "use a path relative to the storage root",
                    field=field_name,
                ) from None
        if any(part == ".." for part in path.parts):
            raise AccessDeniedError(f"{field_name} may not contain '..'", field=field_name)
        return path

    def _check_zone(self, rel: PurePosixPath, user: str, write: bool, field_name: str) -> None:
        parts = rel.parts
        if not parts or parts == (".",):
            raise AccessDeniedError(f"{field_name}: the storage root itself", field=field_name)
        top = parts[0]
        if top == DATASETS:
            if write and user not in self.admins:
                raise AccessDeniedError(
                    f"{field_name}: datasets/ is read-only; write under users/{user}/",
                    field=field_name,
                )
            return
        if top == USERS and len(parts) >= 2 and parts[1] == user:
            if write and len(parts) < 3:
                raise AccessDeniedError(
                    f"{field_name}: write inside a folder of users/{user}/", field=field_name
                )
            return
        if top == USERS and len(parts) >= 2:
            raise AccessDeniedError(
                f"{field_name}: users/{parts[1]}/ belongs to another user", field=field_name
            )
        raise AccessDeniedError(
            f"{field_name} {rel.as_posix()!r} is neither under datasets/ nor users/{user}/",
            field=field_name,
        )

    def resolve(
        self,
        user: str,
        location: str | os.PathLike[str],
        *,
        write: bool = False,
        must_exist: bool = False,
        field: str = "location",
    ) -> Path:
        """Turn a user-given location into a real path the user may use.

        Args:
            user: the caller.
            location: a storage-relative path, an absolute path in the root, or an
                issued URL.
            write: the caller will write there (only its own area, or datasets/ for admins).
            must_exist: raise if nothing is at the resolved path.
            field: the input name quoted in errors.

        Raises:
            AccessDeniedError: the location leads outside what ``user`` may reach.
            InvalidInputError: the location is malformed.
            StorageNotFoundError: ``must_exist`` and nothing is there.
        """
        check_username(user)
        rel = self._relative_parts(os.fspath(location), field)
        self._check_zone(rel, user, write, field)
        candidate = self.root.joinpath(*rel.parts)
        # Follow links (also of missing leaves' parents) and check the zone again.
        real = candidate.resolve()
        try:
            real_rel = PurePosixPath(real.relative_to(self.root).as_posix())
        except ValueError:
            raise AccessDeniedError(
                f"{field} {os.fspath(location)!r} leads outside the storage", field=field
            ) from None
        self._check_zone(real_rel, user, write, field)
        if must_exist and not real.exists():
            raise StorageNotFoundError(
                f"{field}: nothing at {rel.as_posix()!r} in the storage", field=field
            )
        return real

    def resolve_input(self, user: str, location: str, *, field: str = "location") -> str:
        """Like :meth:`resolve` for reading, but lets foreign http(s) URLs through.

        Rasters may come from any http(s) server (read through GDAL's /vsicurl/);
        a URL this platform issued still maps onto the storage and is checked.
        """
        text = os.fspath(location).strip()
        if urlsplit(text).scheme.lower() in ("http", "https") and not any(
            text.startswith(p) for p in self.url_prefixes
        ):
            return text
        return str(self.resolve(user, text, must_exist=True, field=field))


def storage_from_settings(settings: object, *, url_prefixes: tuple[str, ...] = ()) -> Storage:
    """Build the :class:`Storage` the settings describe."""
    from geoportal.settings import Settings

    assert isinstance(settings, Settings)
    return Storage(
        root=settings.storage_root,
        url_prefixes=url_prefixes,
        admins=frozenset(settings.hub.admin_users),
    )
