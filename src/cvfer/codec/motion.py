"""Dense motion-vector fields from the codec's block vectors, and the warp that uses them.

Convention (docs/codec.md): a field `T` is 2×H×W int16, channel 0 = x, channel 1 = y, holding
`dst − src` in whole pixels, so pixel p of the current frame is predicted from pixel `p − T[:, p]` of
the reference. Source coordinates outside the frame are clamped to the border (edge padding, as the
codecs' unrestricted motion vectors do).

The reader's hot path never loops over blocks in Python nor clips per pixel: `BlockFields` keeps one
vector per grid cell (for a batch of frames) and predicts by copying whole cells out of the
edge-padded references.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@functools.lru_cache(maxsize=16)
def _pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column index of every pixel (cached, read-only)."""
    rows, cols = np.indices((height, width), dtype=np.int32)
    rows.flags.writeable = False
    cols.flags.writeable = False
    return rows, cols


def _round_half_away(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Integer division rounded to nearest, halves away from zero (so ±0.5 px -> ±1 px)."""
    magnitude = (2 * np.abs(numerator) + denominator) // (2 * denominator)
    return np.sign(numerator) * magnitude


def _expand(coarse: np.ndarray, cell: int, height: int, width: int) -> np.ndarray:
    """Repeat each entry of a (…, rows, cols) grid over its cell×cell pixels, cropped to height×width."""
    full = coarse.repeat(cell, axis=-1).repeat(cell, axis=-2)
    return full if full.shape[-2:] == (height, width) else np.ascontiguousarray(full[..., :height, :width])


def pad_edges(
    images: np.ndarray | Sequence[np.ndarray], margin: int, extra_rows: int = 0, extra_cols: int = 0
) -> np.ndarray:
    """Stack of H×W×C `images` with border pixels repeated `margin` times on every side, plus
    `extra_rows` more at the bottom and `extra_cols` more on the right (one copy of the pixels)."""
    count = len(images)
    height, width, channels = images[0].shape
    bottom, right = margin + extra_rows, margin + extra_cols
    padded = np.empty((count, height + margin + bottom, width + margin + right, channels), dtype=images[0].dtype)
    if isinstance(images, np.ndarray):
        padded[:, margin : margin + height, margin : margin + width] = images
    else:
        for target, image in zip(padded, images, strict=True):
            target[margin : margin + height, margin : margin + width] = image
    columns = slice(margin, margin + width)
    padded[:, :margin, columns] = padded[:, margin : margin + 1, columns]
    padded[:, margin + height :, columns] = padded[:, margin + height - 1 : margin + height, columns]
    padded[:, :, :margin] = padded[:, :, margin : margin + 1]
    padded[:, :, margin + width :] = padded[:, :, margin + width - 1 : margin + width]
    return padded


@dataclass(frozen=True)
class BlockFields:
    """T motion fields constant on cell×cell squares of one grid: `coarse` is T×2×rows×cols int16 (x, y).

    Working on the whole batch at once keeps NumPy's per-call overhead per clip, not per frame.
    `margin` bounds how far outside the frame a source coordinate can lie (the longest vector).
    """

    coarse: np.ndarray
    cell: int
    height: int
    width: int
    margin: int

    @classmethod
    def from_side_data(cls, block_vectors: list[np.ndarray], height: int, width: int) -> BlockFields:
        """Build from FFmpeg's `AVMotionVector` records, one array per frame (its MOTION_VECTORS side data).

        FFmpeg's `motion_x / motion_scale` is `src − dst` in (sub-)pixels; it is negated and rounded to
        whole pixels, halves away from zero. Pixels no block covers (intra macroblocks) get zero.
        """
        count = len(block_vectors)
        present = [vectors for vectors in block_vectors if vectors.size]
        if not present:  # no inter block anywhere: one cell covering the frame, vector zero
            return cls(np.zeros((count, 2, 1, 1), dtype=np.int16), max(height, width), height, width, 0)
        # Concatenated as raw bytes: np.concatenate on structured arrays promotes field by field (slow).
        records = np.concatenate([vectors.view(np.uint8) for vectors in present]).view(present[0].dtype)
        frame_of = np.repeat(np.arange(count), [len(vectors) for vectors in block_vectors])
        sizes = np.stack([records["w"], records["h"]]).astype(np.int32)
        corners = np.stack([records["dst_x"], records["dst_y"]]).astype(np.int32) - sizes // 2
        motion = np.stack([records["motion_x"], records["motion_y"]]).astype(np.int32)
        scale = np.maximum(records["motion_scale"], 1).astype(np.int32)
        inside = (corners.min(axis=0) >= 0) & (corners[0] < width) & (corners[1] < height)
        if not inside.all():
            sizes, corners, motion, scale, frame_of = (
                sizes[:, inside], corners[:, inside], motion[:, inside], scale[inside], frame_of[inside]
            )
        if not frame_of.size:
            return cls(np.zeros((count, 2, 1, 1), dtype=np.int16), max(height, width), height, width, 0)
        vectors = _round_half_away(-motion, scale)
        # A vector longer than the frame predicts from the border like one exactly as long: limiting
        # it changes no prediction and bounds the padding a broken stream could ask for.
        limit = max(height, width)
        np.clip(vectors, -limit, limit, out=vectors)
        # Padding by the longest vector always suffices (p − v stays within it of the frame).
        margin = int(np.abs(vectors).max())
        # Every block edge lies on a grid of `cell` pixels (16 or 8: FFmpeg exports H.264 partitions down to
        # 8×8 only): fill that grid with one vectorised assignment per block shape.
        cell = int(np.gcd.reduce(np.concatenate((sizes, corners), axis=None)))
        rows, cols = -(-height // cell), -(-width // cell)
        extent = sizes.max(axis=1) // cell
        # Blocks of the last row/column may reach past the frame: room for them, cropped below.
        coarse = np.zeros((2, count, rows + int(extent[1]), cols + int(extent[0])), dtype=np.int16)
        first_col, first_row = corners // cell
        if (sizes == cell).all():  # every block is one cell (MPEG-4 without 4MV)
            coarse[:, frame_of, first_row, first_col] = vectors
        else:
            shapes = sizes[0] * 256 + sizes[1]
            for shape in np.unique(shapes).tolist():
                chosen = shapes == shape
                shape_w, shape_h = divmod(shape, 256)
                cell_rows = first_row[chosen, None, None] + np.arange(shape_h // cell)[:, None]
                cell_cols = first_col[chosen, None, None] + np.arange(shape_w // cell)
                coarse[:, frame_of[chosen, None, None], cell_rows, cell_cols] = vectors[:, chosen, None, None]
        return cls(np.ascontiguousarray(coarse[:, :, :rows, :cols].swapaxes(0, 1)), cell, height, width, margin)

    def __len__(self) -> int:
        return len(self.coarse)

    def frame(self, index: int) -> BlockFields:
        """The field of one frame of the batch, as a batch of one."""
        return BlockFields(self.coarse[index : index + 1], self.cell, self.height, self.width, self.margin)

    def dense(self, out: np.ndarray | None = None) -> np.ndarray:
        """The per-pixel fields, T×2×H×W int16 (written into `out` when given)."""
        if out is None:
            out = np.empty((len(self), 2, self.height, self.width), dtype=np.int16)
        rows = self.coarse.shape[2]
        if rows * self.cell == self.height:  # one broadcast copy of the column-repeated grid
            columns = self.coarse.repeat(self.cell, axis=-1)[..., None, : self.width]
            np.copyto(out.reshape(len(self), 2, rows, self.cell, self.width), columns)
        else:
            out[...] = _expand(self.coarse, self.cell, self.height, self.width)
        return out

    def pad(self, references: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """References (T×H×W×C, or a list of H×W×C) stacked and edge-padded as `residuals` needs them."""
        rows, cols = self.coarse.shape[2:]
        return pad_edges(references, self.margin, rows * self.cell - self.height, cols * self.cell - self.width)

    def _source_blocks(self, padded: np.ndarray) -> np.ndarray:
        """T×rows×cols×cell×cell×C: for every grid cell, the window of its (padded) reference it points at.

        One cell-sized window per grid cell is copied out of the edge-padded references (a strided
        view indexed by the cells' source corners), never a gather per pixel.
        """
        cell, margin = self.cell, self.margin
        rows, cols = self.coarse.shape[2:]
        frame_stride, row_stride, col_stride, channel_stride = padded.strides
        count, padded_rows, padded_cols, channels = padded.shape
        windows = np.lib.stride_tricks.as_strided(
            padded,
            shape=(count, padded_rows - cell + 1, padded_cols - cell + 1, cell, cell, channels),
            strides=(frame_stride, row_stride, col_stride, row_stride, col_stride, channel_stride),
            writeable=False,
        )
        source_rows = np.arange(rows)[:, None] * cell + margin - self.coarse[:, 1]
        source_cols = np.arange(cols)[None, :] * cell + margin - self.coarse[:, 0]
        return windows[np.arange(count)[:, None, None], source_rows, source_cols]

    def predict(self, references: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Motion-compensated predictions from T H×W×C `references`: exactly `warp(references[t], dense()[t])`."""
        blocks = self._source_blocks(self.pad(references))
        count, rows, cols = blocks.shape[:3]
        frames = blocks.swapaxes(2, 3).reshape(count, rows * self.cell, cols * self.cell, blocks.shape[-1])
        return frames[:, : self.height, : self.width]

    def residuals(self, currents: np.ndarray, padded_references: np.ndarray, out: np.ndarray) -> np.ndarray:
        """out (T×H×W×C int16) = currents − predictions from `pad(references)`, block-wise in one pass
        when the grid tiles the frame."""
        rows, cols = self.coarse.shape[2:]
        blocks = self._source_blocks(padded_references)
        if (rows * self.cell, cols * self.cell) != (self.height, self.width):
            frames = blocks.swapaxes(2, 3).reshape(len(self), rows * self.cell, cols * self.cell, blocks.shape[-1])
            return np.subtract(currents, frames[:, : self.height, : self.width], out=out, dtype=np.int16)
        tiles = (len(self), rows, self.cell, cols, self.cell, currents.shape[-1])
        np.subtract(currents.reshape(tiles).swapaxes(2, 3), blocks, out=out.reshape(tiles).swapaxes(2, 3), dtype=np.int16)
        return out


def source_indices(motion_vectors: np.ndarray) -> np.ndarray:
    """Flat (row-major) index into the reference of the pixel each pixel is predicted from: H×W int32.

    Source coordinates are clamped to the frame.
    """
    _, height, width = motion_vectors.shape
    rows, cols = _pixel_grid(height, width)
    source_rows = np.clip(rows - motion_vectors[1], 0, height - 1)
    source_cols = np.clip(cols - motion_vectors[0], 0, width - 1)
    return (source_rows * width + source_cols).astype(np.int32)


def gather(reference: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Pixels of an H×W×C `reference` at flat `indices` (any shape), as an indices.shape×C array."""
    height, width, channels = reference.shape
    return reference.reshape(height * width, channels).take(indices.ravel(), axis=0).reshape(*indices.shape, channels)


def warp(reference: np.ndarray, motion_vectors: np.ndarray) -> np.ndarray:
    """Motion-compensated prediction: out[p] = reference[clamp(p − T[:, p])] (Sec. 3.1, P_i^t = P^{t-1}_{i−T_i}).

    `reference` is H×W×C (any dtype), `motion_vectors` 2×H×W `dst − src` in whole pixels; source
    coordinates outside the frame are clamped to the nearest border pixel.
    """
    reference = np.asarray(reference)
    motion_vectors = np.asarray(motion_vectors)
    if reference.ndim != 3 or motion_vectors.shape != (2, *reference.shape[:2]):
        raise ValueError(f"motion vectors of shape {motion_vectors.shape} do not match a reference of shape {reference.shape}")
    return gather(reference, source_indices(motion_vectors))


def vectors_from_indices(indices: np.ndarray) -> np.ndarray:
    """The 2×H×W int16 `dst − src` field whose warp reads the (unpadded) reference at flat `indices`."""
    height, width = indices.shape
    rows, cols = _pixel_grid(height, width)
    source_rows = indices // width
    field = np.empty((2, height, width), dtype=np.int16)
    np.subtract(cols, indices - source_rows * width, out=field[0], casting="unsafe")
    np.subtract(rows, source_rows, out=field[1], casting="unsafe")
    return field
