"""A small WPS client for the platform's own doors (the map, ``geoportal demo``, notebooks).

It uses OWSLib, the library GIS tools use, so the platform calls its processes
exactly as QGIS or a researcher's script would: by identifier, with literal
inputs that are storage paths or earlier output references, asynchronously,
with the hub token in the ``Authorization`` header, polling the status document
for the percentage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from geoportal.errors import GeoportalError, InvalidInputError

Progress = Callable[[float, str], None]


class WpsProcessError(GeoportalError, RuntimeError):
    """A WPS process failed or the service refused the request; the message is the server's."""


@dataclass
class WpsResult:
    """The outcome of one Execute: output name → reference URL (or literal value)."""

    identifier: str
    outputs: dict[str, str]
    seconds: float
    status_message: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


def storage_location(reference: str) -> str:
    """The storage-relative path of an output reference (``…/outputs/<path>``).

    The WPS publishes outputs under ``<service>/outputs/<storage path>``. References
    die with a temporary server; the storage path stays valid and is what the map,
    notebooks and later WPS inputs accept. A value that is not an http(s) URL (a
    storage path already, or a literal output) is returned as is.

    Raises:
        InvalidInputError: an http(s) URL that is not an output reference.
    """
    parts = urlsplit(reference)
    if parts.scheme not in ("http", "https"):
        return reference
    path = unquote(parts.path)
    marker = "/outputs/"
    if marker not in path:
        raise InvalidInputError(
            f"{reference} is not an output reference of the WPS", field="reference"
        )
    return path.split(marker, 1)[1]


class WpsClient:
    """Execute the platform's processes over HTTP.

    Args:
        url: the WPS endpoint, e.g. ``http://127.0.0.1:8000/services/wps/wps``.
        token: a JupyterHub API token (sent as ``Authorization: token …``).
        timeout: seconds for each HTTP request.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 60) -> None:
        from owslib.wps import WebProcessingService

        self.url = url
        self.headers = {"Authorization": f"token {token}"} if token else {}
        self.timeout = timeout
        self._wps = WebProcessingService(url, headers=self.headers, skip_caps=True, timeout=timeout)
        self._outputs: dict[str, list[tuple[str, bool]]] = {}

    def processes(self) -> list[str]:
        """The identifiers the service lists in GetCapabilities."""
        self._wps.getcapabilities()
        return sorted(p.identifier for p in self._wps.processes)

    def execute(
        self,
        identifier: str,
        inputs: Mapping[str, str | int | float],
        *,
        progress: Progress | None = None,
        poll_seconds: float = 0.5,
        timeout: float = 3600,
    ) -> WpsResult:
        """Run a process asynchronously and wait for it, reporting its percentage.

        Raises:
            WpsProcessError: the service refused the request or the process failed.
            InvalidInputError: an input value is empty.
        """
        pairs = []
        for name, value in inputs.items():
            if value is None or value == "":
                raise InvalidInputError(f"input '{name}' of {identifier} is empty", field=name)
            pairs.append((name, str(value)))
        started = time.monotonic()
        try:
            # OWSLib asks for an asynchronous, stored response only when outputs are
            # listed; without them the service runs the job synchronously.
            form = self._output_form(identifier)
            execution = self._wps.execute(identifier, pairs, output=form, mode="async")
        except Exception as exc:  # OWSLib raises ServiceException, HTTPError, ...
            raise WpsProcessError(
                f"{identifier}: the WPS refused the request: {_plain(str(exc))}"
            ) from None
        self._raise_for_errors(identifier, execution)
        last = (-1.0, "")
        if progress and not execution.isComplete():
            # The Execute response itself is the first status (accepted, 0 %).
            last = (float(execution.percentCompleted or 0), execution.statusMessage or "")
            progress(*last)
        while not execution.isComplete():
            if time.monotonic() - started > timeout:
                raise WpsProcessError(f"{identifier} did not finish within {timeout:.0f} s")
            time.sleep(poll_seconds)
            execution.checkStatus(sleepSecs=0)
            self._raise_for_errors(identifier, execution)
            state = (float(execution.percentCompleted or 0), execution.statusMessage or "")
            if progress and state != last:
                progress(state[0], state[1])
                last = state
        if not execution.isSucceded():
            self._raise_for_errors(identifier, execution, failed=True)
        outputs: dict[str, str] = {}
        for output in execution.processOutputs:
            if output.reference:
                outputs[output.identifier] = output.reference
            elif output.data:
                outputs[output.identifier] = "".join(str(d) for d in output.data)
        if progress and last[0] < 100:
            progress(100.0, execution.statusMessage or "done")
        return WpsResult(
            identifier, outputs, time.monotonic() - started, execution.statusMessage or ""
        )

    def _output_form(self, identifier: str) -> list[tuple[str, bool]]:
        """The process's outputs, complex ones as references (DescribeProcess, cached)."""
        if identifier not in self._outputs:
            process = self._wps.describeprocess(identifier)
            self._outputs[identifier] = [
                (o.identifier, o.dataType == "ComplexData") for o in process.processOutputs
            ]
        return self._outputs[identifier]

    def fetch(self, reference: str) -> bytes:
        """Download an output reference (with the token)."""
        import requests

        response = requests.get(reference, headers=self.headers, timeout=self.timeout)
        if response.status_code != 200:
            raise WpsProcessError(f"cannot fetch {reference}: HTTP {response.status_code}")
        return response.content

    @staticmethod
    def _raise_for_errors(identifier: str, execution: Any, failed: bool = False) -> None:
        errors = getattr(execution, "errors", None) or []
        if errors or failed:
            text = "; ".join(
                f"{e.code}: {e.text}" + (f" ({e.locator})" if getattr(e, "locator", None) else "")
                for e in errors
            )
            raise WpsProcessError(
                f"{identifier} failed: {text or execution.statusMessage or execution.status}"
            )


def _plain(text: str) -> str:
    """An error page's text without its HTML (a 401 from the service is an HTML page)."""
    import html
    import re

    if "<" not in text:
        return text
    body = re.sub(r"<title>.*?</title>|<[^>]+>", " ", text, flags=re.S)
    return " ".join(html.unescape(body).split())
