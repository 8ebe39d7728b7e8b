"""Finished blocks persisted as part files, so a killed run resumes where it stopped.

Each finished block is one ``.npz`` file in a *parts folder* beside the output
(``.<output name>.parts/``), written atomically: a block is either complete on
disk or absent, never half there. ``plan.json`` records a fingerprint of
everything the pixels depend on (scene file, model files, configuration that
changes results); a rerun with the same fingerprint keeps the finished parts and
computes only the rest, a rerun with another fingerprint starts afresh. Because
a block's pixels depend only on its own inputs (tiles are batched within a block,
in a fixed order), a resumed run assembles exactly the bytes an uninterrupted
run assembles. The parts folder is removed once the outputs are in place.

Part files are also how distributed workers hand over their results: each
writes its own files to shared storage (no single writer in the path), and the
client assembles them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from geoportal.atomic import atomic_write_bytes, atomic_write_text, is_temporary
from geoportal.inference.blocks import Block

PLAN_FILE = "plan.json"


def file_fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Identity of a file cheap enough for multi-GB scenes: path, size, mtime."""
    st = Path(path).stat()
    return {"path": os.fspath(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def fingerprint(parts: dict[str, Any]) -> str:
    """A stable hash of a JSON-able description of a run."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def parts_folder_for(output: str | os.PathLike[str]) -> Path:
    out = Path(output)
    return out.with_name(f".{out.stem}.parts")


class PartsStore:
    """The parts folder of one output.

    Args:
        folder: where the part files live.
        run_fingerprint: see :func:`fingerprint`; a mismatch with ``plan.json`` wipes the folder.
    """

    def __init__(self, folder: str | os.PathLike[str], run_fingerprint: str) -> None:
        self.folder = Path(folder)
        self.fingerprint = run_fingerprint

    def open(self, plan: dict[str, Any]) -> int:
        """Create or reuse the folder; return how many finished blocks it already holds."""
        plan_file = self.folder / PLAN_FILE
        if plan_file.exists():
            try:
                old = json.loads(plan_file.read_text()).get("fingerprint")
            except (OSError, ValueError):
                old = None
            if old != self.fingerprint:
                shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        for leftover in self.folder.iterdir():
            if is_temporary(leftover):
                leftover.unlink(missing_ok=True)
        if not plan_file.exists():
            atomic_write_text(plan_file, json.dumps({"fingerprint": self.fingerprint, **plan}))
        return sum(1 for _ in self.folder.glob("block-*.npz"))

    def path(self, block: Block) -> Path:
        return self.folder / f"{block.name}.npz"

    def done(self, block: Block) -> bool:
        return self.path(block).exists()

    def save(self, block: Block, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
        """Persist one finished block atomically (uncompressed: writing must stay cheap)."""
        buffer = io.BytesIO()
        payload = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays}
        np.savez(buffer, **payload)  # type: ignore[arg-type]
        return atomic_write_bytes(self.path(block), buffer.getvalue())

    def load(
        self, block: Block, keys: tuple[str, ...] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The arrays (all, or only ``keys``) and metadata of a finished block."""
        with np.load(self.path(block)) as data:
            wanted = [k for k in data.files if k != "meta" and (keys is None or k in keys)]
            arrays = {k: data[k] for k in wanted}
            meta = json.loads(bytes(data["meta"]).decode()) if "meta" in data.files else {}
        return arrays, meta

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
