"""Dense motion-vector fields from the codec's block vectors, and the warp that uses them.

Convention (docs/codec.md): a field `T` is 2×H×W int16, channel 0 = x, channel 1 = y, holding
`dst − src` in whole pixels, so pixel p of the current frame is predicted from pixel `p − T[:, p]` of
the reference. Source coordinates outside the frame are clamped to the border (edge padding, as the
codecs' unrestricted motion vectors do).

The reader's hot path never loops over blocks or clips per pixel: a `BlockField` keeps one vector per
grid cell, and the prediction gathers from the reference padded by just enough border pixels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np


@functools.lru_cache(maxsize=32)
def _padded_positions(height: int, width: int, margin: int) -> np.ndarray:
    """Flat index of every pixel inside the reference padded by `margin` on each side (cached, read-only)."""
    rows, cols = np.indices((height, width), dtype=np.int32)
    positions = (rows + margin) * (width + 2 * margin) + (cols + margin)
    positions.flags.writeable = False
    return positions


@functools.lru_cache(maxsize=16)
def _pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column index of every pixel (cached, read-only)."""
    rows, cols = np.indices((height, width), dtype=np.int32)
    rows.flags.writeable = False
    cols.flags.writeable = False
    return rows, cols


_RECORD_FIELDS = ("w", "h", "dst_x", "dst_y", "motion_x", "motion_y", "motion_scale")


def _round_half_away(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Integer division rounded to nearest, halves away from zero (so ±0.5 px -> ±1 px)."""
    magnitude = (2 * np.abs(numerator) + denominator) // (2 * denominator)
    return np.sign(numerator) * magnitude


def _expand(coarse: np.ndarray, cell: int, height: int, width: int) -> np.ndarray:
    """Repeat each entry of a (…, rows, cols) grid over its cell×cell pixels, cropped to height×width."""
    full = coarse.repeat(cell, axis=-1).repeat(cell, axis=-2)
    return full if full.shape[-2:] == (height, width) else np.ascontiguousarray(full[..., :height, :width])


def pad_edges(image: np.ndarray, margin: int) -> np.ndarray:
    """`image` (H×W or H×W×C) with its border pixels repeated `margin` times on every side."""
    if margin == 0:
        return image
    padded = np.empty((image.shape[0] + 2 * margin, image.shape[1] + 2 * margin, *image.shape[2:]), dtype=image.dtype)
    padded[margin:-margin, margin:-margin] = image
    padded[:margin, margin:-margin] = image[:1]
    padded[-margin:, margin:-margin] = image[-1:]
    padded[:, :margin] = padded[:, margin : margin + 1]
    padded[:, -margin:] = padded[:, -margin - 1 : -margin]
    return padded


@dataclass(frozen=True)
class BlockField:
    """A motion field constant on cell×cell squares: `coarse` is 2×rows×cols int16 (x, y) `dst − src`.

    `margin` is how many pixels the farthest source coordinate lies outside the frame (0 if none).
    """

    coarse: np.ndarray
    cell: int
    height: int
    width: int
    margin: int

    @classmethod
    def from_side_data(cls, block_vectors: np.ndarray, height: int, width: int) -> BlockField:
        """Build from FFmpeg's `AVMotionVector` records of one frame (its MOTION_VECTORS side data).

        FFmpeg's `motion_x / motion_scale` is `src − dst` in (sub-)pixels; it is negated and rounded to
        whole pixels, halves away from zero. Pixels no block covers (intra macroblocks) get zero.
        """
        if block_vectors.size == 0:
            return cls(np.zeros((2, 1, 1), dtype=np.int16), max(height, width), height, width, 0)
        block_w, block_h, center_x, center_y, motion_x, motion_y, scale = (
            block_vectors[name].astype(np.int32) for name in _RECORD_FIELDS
        )
        left, top = center_x - block_w // 2, center_y - block_h // 2
        inside = (left >= 0) & (top >= 0) & (left < width) & (top < height)
        if not inside.all():
            if not inside.any():
                return cls(np.zeros((2, 1, 1), dtype=np.int16), max(height, width), height, width, 0)
            block_w, block_h, left, top, motion_x, motion_y, scale = (
                column[inside] for column in (block_w, block_h, left, top, motion_x, motion_y, scale)
            )
        scale = np.maximum(scale, 1)
        vectors = _round_half_away(-np.stack([motion_x, motion_y]), scale)
        # A vector longer than the frame predicts from the border like one exactly as long: limiting
        # it changes no prediction and bounds the padding a broken stream could ask for.
        np.clip(vectors[0], -width, width, out=vectors[0])
        np.clip(vectors[1], -height, height, out=vectors[1])
        vector_x, vector_y = vectors
        right = np.minimum(left + block_w, width) - 1
        bottom = np.minimum(top + block_h, height) - 1
        margin = max(0, int(max((vector_x - left).max(), (vector_y - top).max(),
                                (right - vector_x).max() - (width - 1), (bottom - vector_y).max() - (height - 1))))
        # Every block edge lies on a grid of `cell` pixels (16 or 8 for MPEG-4, 4 for H.264): fill
        # that grid with one vectorised assignment per block shape.
        cell = int(np.gcd.reduce(np.concatenate([block_w, block_h, left, top])))
        rows, cols = -(-height // cell), -(-width // cell)
        # Blocks of the last row/column may reach past the frame: room for them, cropped below.
        coarse = np.zeros((2, rows + int(block_h.max()) // cell, cols + int(block_w.max()) // cell), dtype=np.int16)
        shapes = block_w * 256 + block_h
        single_shape = bool((shapes == shapes[0]).all())
        for shape in [int(shapes[0])] if single_shape else np.unique(shapes).tolist():
            chosen = slice(None) if single_shape else shapes == shape
            shape_w, shape_h = divmod(shape, 256)
            cell_rows = (top[chosen] // cell)[:, None, None] + np.arange(shape_h // cell)[None, :, None]
            cell_cols = (left[chosen] // cell)[:, None, None] + np.arange(shape_w // cell)[None, None, :]
            coarse[:, cell_rows, cell_cols] = vectors[:, chosen, None, None]
        return cls(np.ascontiguousarray(coarse[:, :rows, :cols]), cell, height, width, margin)

    def dense(self) -> np.ndarray:
        """The per-pixel field, 2×H×W int16."""
        return _expand(self.coarse, self.cell, self.height, self.width)

    def padded_source_indices(self) -> np.ndarray:
        """H×W int32 flat indices, into the reference padded by `self.margin` (`pad_edges`), of each pixel's source."""
        padded_width = self.width + 2 * self.margin
        offsets = self.coarse[1].astype(np.int32) * padded_width + self.coarse[0]
        return _padded_positions(self.height, self.width, self.margin) - _expand(offsets, self.cell, self.height, self.width)

    def predict(self, reference: np.ndarray) -> np.ndarray:
        """Motion-compensated prediction from an H×W (single-channel or packed-pixel) `reference`."""
        return pad_edges(reference, self.margin).take(self.padded_source_indices())


def dense_motion_vectors(block_vectors: np.ndarray, height: int, width: int) -> np.ndarray:
    """Spread FFmpeg's per-block `AVMotionVector` records over pixels: 2×H×W int16 `dst − src`."""
    return BlockField.from_side_data(block_vectors, height, width).dense()


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
    source_rows, source_cols = np.divmod(indices, width)
    return np.stack([cols - source_cols, rows - source_rows]).astype(np.int16)
