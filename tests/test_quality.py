"""Lint, format and type checks, run by the test command (configured in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def tool(name: str) -> str:
    """The tool installed beside this interpreter (the project's .venv), else on PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run ./install.sh (it is in the test extra)")
    return found


def check(*command: str, timeout: int = 600) -> None:
    result = subprocess.run(
        list(command), cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} failed with exit code {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}",
            pytrace=False,
        )


def test_ruff_lint() -> None:
    check(tool("ruff"), "check", "--no-cache", ".")


def test_ruff_format() -> None:
    check(tool("ruff"), "format", "--check", "--no-cache", ".")


@pytest.mark.slow
def test_mypy() -> None:
    # Files and options come from [tool.mypy] in pyproject.toml (platform/geoportal).
    check(tool("mypy"))
