"""The block engine: read → transfer → forward → blend → write, overlapped in threads.

One reader thread decodes tiles straight into raw batches ahead of the model
(``prefetch`` batches) and masks nodata there with numpy; the calling thread
moves them to the device (raw dtype: uint8 crosses the bus, not float32),
normalises them there, runs the forward pass and blends the class
probabilities into the block's canvas *on the device*, so only the uint8
winners come back; a writer thread maps them to class codes, applies nodata
and hands finished blocks to a sink (the part files of
:mod:`geoportal.inference.resume`). rasterio and torch release the GIL, so
reading and writing overlap with the forward pass; keeping the blending in
torch leaves the host threads almost idle, which matters on a CPU where every
host cycle is taken from the forward pass (there the helper threads also run
at a lower priority). Each thread handles its items in a fixed order and
batches never span blocks, so a block's bytes do not depend on which other
blocks ran before it, on which worker, or whether the run was resumed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rasterio.windows import Window

from geoportal.classes import CLASS_NODATA
from geoportal.errors import InvalidInputError
from geoportal.inference.blend import blend_half_width, ramp_weights
from geoportal.inference.blocks import Block
from geoportal.inference.config import InferenceConfig
from geoportal.inference.source import Predictor
from geoportal.inference.stats import StageTimer
from geoportal.inference.writer import PROB_SCALE
from geoportal.raster import open_scene, valid_mask
from geoportal.tiling import Tile, TileGrid

log = logging.getLogger(__name__)
_FORKED = False


def _mark_forked() -> None:
    global _FORKED
    _FORKED = True


# torch's OpenMP pool hangs in a child forked from a process that already ran
# parallel torch ops (PyWPS starts async jobs with fork): such a child must stay
# on one intra-op thread. The hook is registered when inference is imported,
# which the WPS service does at start, before any job forks.
os.register_at_fork(after_in_child=_mark_forked)

BlockSink = Callable[[Block, dict[str, np.ndarray], dict[str, Any]], object]
_DONE = object()


@dataclass(frozen=True)
class RunGeometry:
    """The resolved tiling of a run: the grid, the context, and the blend."""

    grid: TileGrid
    context: tuple[int, int]
    """Patch models: pixels of context (before, after) each core needs; (0, 0) otherwise."""
    half: int
    """Half-width of the blending ramp (0 = crop)."""


def make_geometry(
    width: int, height: int, predictor: Predictor, config: InferenceConfig
) -> RunGeometry:
    """Resolve tile size, overlap and context for a scene and a model.

    Raises:
        InvalidInputError: the tile size is not larger than the overlap, or the
            patch stride does not divide the tile size.
    """
    if predictor.kind == "patch":
        p = predictor.info.patch_size
        if config.patch_stride > 1 and config.tile_size % config.patch_stride:
            raise InvalidInputError(
                f"tile_size {config.tile_size} must be a multiple of patch_stride "
                f"{config.patch_stride}",
                field="patch_stride",
            )
        if config.overlap is not None and config.overlap >= config.tile_size:
            raise InvalidInputError(
                f"tile_size ({config.tile_size}) must be larger than the overlap "
                f"({config.overlap})",
                field="tile_size",
            )
        grid = TileGrid(width, height, config.tile_size, 0)
        return RunGeometry(grid, (p // 2, p - 1 - p // 2), 0)
    overlap = min(32, config.tile_size // 4) if config.overlap is None else config.overlap
    grid = TileGrid(width, height, config.tile_size, overlap)
    return RunGeometry(grid, (0, 0), blend_half_width(config.blend, overlap))


EDGE_ALIGN = 32
"""Shifted edge windows start on multiples of this (2**5: U-Nets up to depth 5)."""


def _span(core_start: int, overlap: int, tile_size: int, length: int) -> tuple[int, int]:
    """(start, size) along one axis of a segmentation tile's input window."""
    nominal = tile_size + 2 * overlap
    start = core_start - overlap
    if start + nominal > length:  # the far edge: end at the scene's edge
        start = max(0, (length - nominal) // EDGE_ALIGN * EDGE_ALIGN)
        return start, length - start
    start = max(start, 0)
    return start, min(nominal, length - start)


@dataclass
class _Batch:
    block: Block
    tiles: list[Tile]
    x: Any
    """(B, C, H, W) torch host tensor of raw pixels."""
    keep: Any
    """(B, 1, H, W) bool torch host tensor: input pixels valid in every band."""
    bucket: int
    valid: list[np.ndarray]
    extents: list[Window]


@dataclass
class _Canvas:
    block: Block
    probs: Any
    """(K, h, w) torch tensor on the device: weighted sum of class probabilities."""
    weight: Any
    """(h, w) torch tensor on the device: sum of weights."""
    valid: np.ndarray
    buckets: np.ndarray
    tiles_left: int
    extra: dict[str, Any] = field(default_factory=dict)


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of a precision option.

    Raises:
        InvalidInputError: fp16 requested on a CPU (use bf16 there).
    """
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    if precision == "fp16" and device_type == "cpu":
        raise InvalidInputError(
            "precision fp16 needs a GPU; on a CPU use bf16 (fast on CPUs with AMX) or fp32",
            field="precision",
        )
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type, dtype=dtype)


class SceneTileReader:
    """Reads a tile's input (with context) from the scene, as the model wants it."""

    def __init__(self, path: str, predictor: Predictor, geometry: RunGeometry) -> None:
        self.dataset = open_scene(path)
        self.nodata = self.dataset.nodata
        self.predictor = predictor
        self.geometry = geometry

    def close(self) -> None:
        self.dataset.close()

    def extent(self, tile: Tile) -> Window:
        """The scene window the model sees for ``tile``.

        Patch models: the core plus the patch context, which may reach outside
        the scene (mirrored there). Segmentation models: a window of the full
        nominal size (core + overlap on both sides) inside the scene; at the
        scene's edges it is shifted inwards instead of clipped, so edge tiles
        have the interior tiles' shape and share their batches (a batch of one
        odd-shaped tile costs nearly as much as a full one). A shifted window
        starts on a multiple of :data:`EDGE_ALIGN` pixels, which keeps a
        U-Net's pooling grid where a whole-image pass has it; the extra context
        only moves the window edge away from the pixels used.
        """
        before, after = self.geometry.context
        if before or after:
            core = tile.core
            return Window(
                core.col_off - before,
                core.row_off - before,
                core.width + before + after,
                core.height + before + after,
            )
        grid = self.geometry.grid
        col0, width = _span(int(tile.core.col_off), grid.overlap, grid.tile_size, grid.width)
        row0, height = _span(int(tile.core.row_off), grid.overlap, grid.tile_size, grid.height)
        return Window(col0, row0, width, height)

    def shape(self, tile: Tile) -> tuple[int, int, int]:
        """(bands, rows, columns) of the array :meth:`read` returns for ``tile``."""
        ext = self.extent(tile)
        return self.dataset.count, int(ext.height), int(ext.width)

    def read(
        self, tile: Tile, out: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, Window]:
        """The model input of ``tile`` and its valid masks.

        Args:
            tile: the tile.
            out: where to put the data (``shape(tile)``, the scene's dtype), e.g. a
                slot of a batch, which saves a copy; a new array if ``None``.

        Returns:
            (raw data in the scene's dtype over the extent, the pixels of that data
            valid in every band, the valid mask of the core, the extent).
        """
        ext = self.extent(tile)
        h, w = self.dataset.height, self.dataset.width
        r0, c0 = int(ext.row_off), int(ext.col_off)
        r1, c1 = r0 + int(ext.height), c0 + int(ext.width)
        cr0, cc0, cr1, cc1 = max(r0, 0), max(c0, 0), min(r1, h), min(c1, w)
        inside = Window(cc0, cr0, cc1 - cc0, cr1 - cr0)
        pads = ((0, 0), (cr0 - r0, r1 - cr1), (cc0 - c0, c1 - cc1))
        if any(p for pair in pads for p in pair):
            data = self.dataset.read(window=inside)
            # Outside the scene, a patch sees the mirror image of its real neighbours.
            data = np.pad(data, pads, mode="reflect" if min(data.shape[1:]) > 1 else "edge")
            if out is not None:
                out[...] = data
                data = out
        else:
            data = self.dataset.read(window=inside, out=out)
        core = tile.core
        rs = int(core.row_off) - r0
        cs = int(core.col_off) - c0
        data_valid = valid_mask(data, self.nodata)
        valid = data_valid[rs : rs + int(core.height), cs : cs + int(core.width)].copy()
        return data, data_valid, valid, ext


class _BatchBuilder:
    """Fills one batch of same-shaped tiles of one bucket, in place.

    The batch lives in torch host tensors (page-locked when the model is on a
    GPU, so the copy is asynchronous and the host allocator knows the buffer is
    in flight); the reader writes into their numpy views.
    """

    def __init__(
        self, block: Block, bucket: int, size: int, shape: tuple[int, ...], dtype: Any, pin: bool
    ) -> None:
        import torch

        self.block, self.bucket = block, bucket
        torch_dtype = torch.from_numpy(np.empty(0, dtype)).dtype
        self.x_host = torch.empty((size, *shape), dtype=torch_dtype, pin_memory=pin)
        self.keep_host = torch.empty((size, 1, *shape[1:]), dtype=torch.bool, pin_memory=pin)
        self.x = self.x_host.numpy()
        self.keep = self.keep_host.numpy()
        self.tiles: list[Tile] = []
        self.valid: list[np.ndarray] = []
        self.extents: list[Window] = []

    @property
    def slot(self) -> np.ndarray:
        """Where the next tile's data goes."""
        return self.x[len(self.tiles)]

    @property
    def full(self) -> bool:
        return len(self.tiles) == len(self.x)

    def add(self, tile: Tile, data_valid: np.ndarray, valid: np.ndarray, ext: Window) -> None:
        """Register the tile just read into :attr:`slot`."""
        self.keep[len(self.tiles), 0] = data_valid
        self.tiles.append(tile)
        self.valid.append(valid)
        self.extents.append(ext)

    def batch(self) -> _Batch:
        n = len(self.tiles)
        return _Batch(
            self.block,
            self.tiles,
            self.x_host[:n],
            self.keep_host[:n],
            self.bucket,
            self.valid,
            self.extents,
        )


def normalise_on_device(x: Any, info: Any, keep: Any) -> Any:
    """Raw (B, C, H, W) pixels → normalised float32 on their device, invalid → 0.

    ``keep`` (B, 1, H, W) marks the pixels valid in every band (the reader's
    mask, computed on the host where numpy does it in a fraction of the time).
    Done on the device, after the transfer: the raw dtype (often uint8/uint16)
    crosses the bus instead of float32. The arithmetic runs in place: on a CPU
    this step costs as much as a small model's forward pass when every
    operation allocates a new float tensor.
    """
    import torch

    raw_float = x.is_floating_point()
    x = x.to(torch.float32, copy=True)
    if raw_float:
        torch.nan_to_num_(x, nan=0.0, posinf=0.0, neginf=0.0)  # NaN × 0 would stay NaN
    mean = torch.tensor(info.normalisation.mean, dtype=torch.float32, device=x.device)
    std = torch.tensor(info.normalisation.std, dtype=torch.float32, device=x.device)
    std = torch.where(std > 0, std, torch.ones_like(std))
    x.sub_(mean[None, :, None, None]).div_(std[None, :, None, None])
    return x.mul_(keep.to(torch.float32))


def _yield_to_model(device: str) -> None:
    """On a CPU, lower the calling helper thread's scheduling priority.

    The forward pass keeps every core busy with torch's thread team; a reader or
    writer thread that preempts one of those threads stalls the whole team at
    its next barrier. With a lower priority (Linux: nice is per thread) the
    helpers run in the gaps the team leaves and only take a core at full
    priority when the model is waiting for them anyway.
    """
    if device != "cpu" or not hasattr(os, "setpriority"):
        return
    with contextlib.suppress(OSError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + 10)


def _put(q: queue.Queue[Any], item: Any, abort: threading.Event) -> None:
    while not abort.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue[Any], abort: threading.Event) -> Any:
    while not abort.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    return _DONE


def forward_probs(
    model: Any,
    x: Any,
    *,
    kind: str,
    patch_size: int,
    stride: int,
    out_hw: tuple[int, int],
) -> Any:
    """Class probabilities (B, K, h, w) for a batch on the model's device.

    Segmentation models map (B, C, h, w) to (B, K, h, w). Patch models get the
    core plus ``p - 1`` pixels of context and use ``dense_forward`` (every
    pixel classified as the patch centred on it) or, with ``stride > 1``, the
    patches centred on every ``stride``-th pixel, upsampled by repetition.
    """
    import torch

    if kind == "segmentation":
        logits = model(x)
    elif stride == 1:
        logits = model.dense_forward(x)
    else:
        h, w = out_hw
        rows = torch.clamp(torch.arange(0, h, stride) + stride // 2, max=h - 1).to(x.device)
        cols = torch.clamp(torch.arange(0, w, stride) + stride // 2, max=w - 1).to(x.device)
        windows = x.unfold(2, patch_size, 1).unfold(3, patch_size, 1)  # B,C,h,w,p,p
        picked = windows[:, :, rows][:, :, :, cols]  # B,C,nh,nw,p,p
        b, c, nh, nw = picked.shape[:4]
        patches = picked.permute(0, 2, 3, 1, 4, 5).reshape(b * nh * nw, c, patch_size, patch_size)
        logits = model(patches).reshape(b, nh, nw, -1).permute(0, 3, 1, 2)
        logits = logits.repeat_interleave(stride, dim=2).repeat_interleave(stride, dim=3)
        logits = logits[:, :, :h, :w]
    return torch.softmax(logits.float(), dim=1)


class BlockEngine:
    """Computes blocks of one scene with one predictor, pipelined.

    Args:
        scene: path or URL of the scene (read by this process itself).
        predictor: the model(s), already on their device.
        config: the run's options.
        geometry: from :func:`make_geometry`.
        timer: where stage times accumulate.
    """

    def __init__(
        self,
        scene: str,
        predictor: Predictor,
        config: InferenceConfig,
        geometry: RunGeometry,
        timer: StageTimer | None = None,
        precision: str | None = None,
    ) -> None:
        self.scene = scene
        self.predictor = predictor
        self.config = config
        self.geometry = geometry
        self.timer = timer or StageTimer()
        self.precision = precision or config.precision
        autocast(predictor.device, self.precision)  # fails early on fp16 without a GPU

    # -- reader -----------------------------------------------------------------
    def _batches(
        self, reader: SceneTileReader, block: Block, pin: bool = False
    ) -> Iterator[_Batch]:
        """Batches of a block's tiles, grouped by bucket and input shape.

        A single model's tiles are read straight into their batch slot; a
        gallery's are read first, since the pixels pick the bucket.
        """
        bs = self.config.batch_size
        dtype = np.dtype(reader.dataset.dtypes[0])
        building: dict[tuple[int, tuple[int, ...]], _BatchBuilder] = {}

        def builder(bucket: int, shape: tuple[int, ...]) -> _BatchBuilder:
            key = (bucket, shape)
            if key not in building:
                building[key] = _BatchBuilder(block, bucket, bs, shape, dtype, pin)
            return building[key]

        for tile in block.tiles(self.geometry.grid):
            with self.timer.stage("read"):
                shape = reader.shape(tile)
                if self.predictor.is_gallery:
                    data, data_valid, valid, ext = reader.read(tile)
                    core = tile.core
                    rs, cs = int(core.row_off - ext.row_off), int(core.col_off - ext.col_off)
                    core_data = data[:, rs : rs + int(core.height), cs : cs + int(core.width)]
                    group = builder(self.predictor.bucket_for(core_data, valid), shape)
                    group.slot[...] = data
                else:
                    group = builder(0, shape)
                    _, data_valid, valid, ext = reader.read(tile, out=group.slot)
                group.add(tile, data_valid, valid, ext)
            if group.full:
                del building[(group.bucket, shape)]
                yield group.batch()
        for group in building.values():
            yield group.batch()

    # -- blender (on the model's device) ----------------------------------------
    def _new_canvas(self, block: Block) -> _Canvas:
        import torch

        k = self.predictor.info.num_classes
        h, w = int(block.window.height), int(block.window.width)
        dev = self.predictor.device
        return _Canvas(
            block,
            torch.zeros((k, h, w), dtype=torch.float32, device=dev),  # type: ignore[arg-type]
            torch.zeros((h, w), dtype=torch.float32, device=dev),  # type: ignore[arg-type]
            np.zeros((h, w), bool),
            np.full((h, w), CLASS_NODATA, np.uint8),
            block.n_tiles,
        )

    def _weights(
        self, block: Block, tile: Tile, win: Window
    ) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Row and column weights of a tile predicted on ``win``, and where they start."""
        core, half = tile.core, self.geometry.half
        if self.geometry.context != (0, 0):
            return (
                np.ones(int(core.height), np.float32),
                np.ones(int(core.width), np.float32),
                int(core.row_off),
                int(core.col_off),
            )
        r0, c0 = int(win.row_off), int(win.col_off)
        wr = ramp_weights(
            r0,
            r0 + int(win.height),
            int(core.row_off),
            int(core.row_off + core.height),
            half=half,
            blend_before=block.has_tile(tile.row - 1, tile.col),
            blend_after=block.has_tile(tile.row + 1, tile.col),
        )
        wc = ramp_weights(
            c0,
            c0 + int(win.width),
            int(core.col_off),
            int(core.col_off + core.width),
            half=half,
            blend_before=block.has_tile(tile.row, tile.col - 1),
            blend_after=block.has_tile(tile.row, tile.col + 1),
        )
        return wr, wc, r0, c0

    def _accumulate(self, canvas: _Canvas, batch: _Batch, probs: Any) -> None:
        import torch

        block = canvas.block
        br, bc = int(block.window.row_off), int(block.window.col_off)
        bh, bw = canvas.valid.shape
        for i, tile in enumerate(batch.tiles):
            wr, wc, start_r, start_c = self._weights(block, tile, batch.extents[i])
            p = probs[i]
            # Clip the tile's prediction to the block's output window.
            r0, c0 = max(start_r, br), max(start_c, bc)
            r1 = min(start_r + p.shape[1], br + bh)
            c1 = min(start_c + p.shape[2], bc + bw)
            pr, pc = slice(r0 - start_r, r1 - start_r), slice(c0 - start_c, c1 - start_c)
            cr, cc = slice(r0 - br, r1 - br), slice(c0 - bc, c1 - bc)
            weight = torch.from_numpy(wr[pr, None] * wc[None, pc]).to(p.device)
            canvas.probs[:, cr, cc].addcmul_(p[:, pr, pc], weight)
            canvas.weight[cr, cc] += weight
            core = tile.core
            kr = slice(int(core.row_off) - br, int(core.row_off + core.height) - br)
            kc = slice(int(core.col_off) - bc, int(core.col_off + core.width) - bc)
            canvas.valid[kr, kc] = batch.valid[i]
            canvas.buckets[kr, kc] = batch.bucket
        canvas.tiles_left -= len(batch.tiles)

    def _finish_device(self, canvas: _Canvas) -> dict[str, np.ndarray]:
        """Winner (and probabilities) on the device; only small arrays come back."""
        import torch

        out = {}
        # Weights are positive per pixel: the winner needs no normalisation.
        best, index = torch.max(canvas.probs, dim=0)
        out["index"] = index.to(torch.uint8).cpu().numpy()
        if self.config.probabilities != "none":
            norm = 1.0 / torch.clamp(canvas.weight, min=1e-12)
            probs = (
                best * norm if self.config.probabilities == "confidence" else canvas.probs * norm
            )
            scaled = torch.round(torch.clamp(probs, 0.0, 1.0) * PROB_SCALE).to(torch.uint8)
            out["probabilities"] = scaled.cpu().numpy()
        return out

    def _finish(
        self, canvas: _Canvas, device_out: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        info = self.predictor.info
        codes = np.asarray([c.code for c in info.classes], dtype=np.uint8)
        classes = codes[device_out["index"]]
        invalid = ~canvas.valid
        classes[invalid] = CLASS_NODATA
        arrays = {"classes": classes}
        if "probabilities" in device_out:
            scaled = device_out["probabilities"]
            scaled[..., invalid] = CLASS_NODATA
            arrays["probabilities"] = scaled
        if self.predictor.is_gallery and self.config.bucket_raster:
            buckets = canvas.buckets.copy()
            buckets[invalid] = CLASS_NODATA
            arrays["buckets"] = buckets
        return arrays, {"valid_pixels": int(canvas.valid.sum()), "tiles": canvas.block.n_tiles}

    # -- the pipeline -----------------------------------------------------------
    def run(
        self,
        blocks: Sequence[Block],
        sink: BlockSink,
        on_tiles: Callable[[int], None] | None = None,
    ) -> None:
        """Compute ``blocks`` in order, handing each finished one to ``sink``.

        ``on_tiles(n)`` is called as each batch of ``n`` tiles has been blended.
        """
        import torch

        if not blocks:
            return
        if _FORKED and torch.get_num_threads() > 1:
            log.warning("running in a forked process: torch limited to one thread")
            torch.set_num_threads(1)
        abort = threading.Event()
        errors: list[BaseException] = []
        to_model: queue.Queue[Any] = queue.Queue(maxsize=self.config.prefetch)
        to_write: queue.Queue[Any] = queue.Queue(maxsize=2)
        device = self.predictor.device
        pin = device.startswith("cuda")

        def guarded(fn: Callable[[], None]) -> Callable[[], None]:
            def body() -> None:
                try:
                    fn()
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                    errors.append(exc)
                    abort.set()

            return body

        def read_loop() -> None:
            _yield_to_model(device)
            reader = SceneTileReader(self.scene, self.predictor, self.geometry)
            try:
                for block in blocks:
                    for batch in self._batches(reader, block, pin):
                        _put(to_model, batch, abort)
                        if abort.is_set():
                            return
            finally:
                reader.close()
            _put(to_model, _DONE, abort)

        def write_loop() -> None:
            _yield_to_model(device)
            while True:
                item = _get(to_write, abort)
                if item is _DONE:
                    break
                canvas, device_out = item
                with self.timer.stage("write"):
                    arrays, meta = self._finish(canvas, device_out)
                    sink(canvas.block, arrays, meta)

        threads = [
            threading.Thread(target=guarded(f), name=f"inference-{n}", daemon=True)
            for n, f in (("read", read_loop), ("write", write_loop))
        ]
        for t in threads:
            t.start()
        try:
            info = self.predictor.info
            canvases: dict[int, _Canvas] = {}
            with torch.inference_mode():
                while True:
                    with self.timer.stage("wait"):  # the model idle, waiting for input
                        batch = _get(to_model, abort)
                    if batch is _DONE:
                        break
                    model = self.predictor.models[batch.bucket].module
                    with self.timer.stage("transfer"):
                        x = batch.x.to(device, non_blocking=pin)
                        keep = batch.keep.to(device, non_blocking=pin)
                    with self.timer.stage("forward"), autocast(device, self.precision):
                        x = normalise_on_device(x, self.predictor.models[batch.bucket].info, keep)
                        core = batch.tiles[0].core
                        probs = forward_probs(
                            model,
                            x,
                            kind=info.kind,
                            patch_size=info.patch_size,
                            stride=self.config.patch_stride,
                            out_hw=(int(core.height), int(core.width)),
                        )
                    with self.timer.stage("blend"):
                        canvas = canvases.get(batch.block.index) or canvases.setdefault(
                            batch.block.index, self._new_canvas(batch.block)
                        )
                        self._accumulate(canvas, batch, probs)
                        finished = None
                        if canvas.tiles_left == 0:
                            finished = (canvas, self._finish_device(canvas))
                            del canvases[batch.block.index]
                    if on_tiles is not None:
                        on_tiles(len(batch.tiles))
                    if finished is not None:
                        _put(to_write, finished, abort)
            _put(to_write, _DONE, abort)
        except BaseException as exc:
            errors.append(exc)
            abort.set()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
