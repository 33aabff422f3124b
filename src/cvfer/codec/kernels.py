"""Compiled inner loops of the reader (numba): block vectors -> dense field, warp + residual, CoViAR's trace.

A P frame's motion is constant on the squares of one grid (16×16 macroblocks, 8×8 blocks), so the kernels
walk each pixel row in *runs*: maximal stretches of squares sharing one vector. A run's source is one
contiguous stretch of one reference row, except where it crosses the left or right border, where every
source pixel is the border pixel (clamping, docs/codec.md); no per-pixel index is ever built. Loops over
a stretch count with unsigned integers, which spares numba's negative-index check and lets LLVM
vectorise them (signed counters made the residual 20× slower).

Kernels compile on first use and are cached on disk by numba (`cache=True`: beside this file, or in
numba's per-user cache folder when the package folder is read-only; else compiled once per process).
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np
from numba import uint64


def _compiled(function: Callable) -> Callable:
    """`numba.njit`, cached on disk where numba finds a writable folder, else compiled once per process."""
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError:  # numba: "cannot cache function …: no locator available"
        return numba.njit(nogil=True)(function)


@_compiled
def _corner(record) -> tuple[int, int]:
    """(left, top) of an `AVMotionVector` block (its `dst` is the block's centre)."""
    return record.dst_x - record.w // 2, record.dst_y - record.h // 2


@_compiled
def _whole_pixels(motion: int, scale: int, limit: int) -> int:
    """`dst − src` in whole pixels from FFmpeg's `src − dst` = motion / scale, rounded half away from zero
    and limited to ±limit (a longer vector predicts from the border exactly like one that long)."""
    magnitude = (2 * abs(motion) + scale) // (2 * scale)
    return max(-limit, min(limit, -magnitude if motion > 0 else magnitude))


@_compiled
def block_grid(records: np.ndarray, height: int, width: int) -> tuple[np.ndarray, int]:
    """(grid, cell) from a frame's `AVMotionVector` records: grid is 2×rows×cols int16 (x, y) `dst − src`,
    one vector per cell×cell square, cropped to the frame.

    `cell` is the largest power of two every block's corner and sides are multiples of (16 or 8 in
    practice; the lowest bit set in any of them: half the time of their greatest common divisor, and runs
    of equal squares make the result the same); squares no block covers (intra macroblocks) get zero,
    and so does the whole frame without blocks. Records whose corner lies outside the frame come from a
    broken stream and are ignored.
    """
    bits = 0
    for record in records:
        left, top = _corner(record)
        if 0 <= left < width and 0 <= top < height:
            bits |= record.w | record.h | left | top
    cell = bits & -bits
    if cell == 0:
        return np.zeros((2, 1, 1), dtype=np.int16), max(height, width)
    rows, cols = (height + cell - 1) // cell, (width + cell - 1) // cell
    grid = np.zeros((2, rows, cols), dtype=np.int16)
    limit = max(height, width)
    for record in records:
        left, top = _corner(record)
        if not (0 <= left < width and 0 <= top < height):
            continue
        scale = max(int(record.motion_scale), 1)
        vector_x = _whole_pixels(record.motion_x, scale, limit)
        vector_y = _whole_pixels(record.motion_y, scale, limit)
        for row in range(top // cell, min(rows, (top + record.h) // cell)):
            for col in range(left // cell, min(cols, (left + record.w) // cell)):
                grid[0, row, col] = vector_x
                grid[1, row, col] = vector_y
    return grid, cell


@_compiled
def _runs(grid: np.ndarray, cell: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(counts, runs): grid row r has runs[r, :counts[r]], each (first column, stop column, x, y)."""
    rows, cols = grid.shape[1:]
    counts = np.zeros(rows, dtype=np.int64)
    runs = np.empty((rows, cols, 4), dtype=np.int64)
    for row in range(rows):
        col = 0
        while col < cols:
            end = col + 1
            while end < cols and grid[0, row, end] == grid[0, row, col] and grid[1, row, end] == grid[1, row, col]:
                end += 1
            run = runs[row, counts[row]]
            run[0], run[1] = col * cell, min(end * cell, width)
            run[2], run[3] = grid[0, row, col], grid[1, row, col]
            counts[row] += 1
            col = end
    return counts, runs


@_compiled
def _unclamped(first: int, stop: int, vector_x: int, width: int) -> tuple[int, int]:
    """The part [inner_first, inner_stop) of columns [first, stop) whose source column x − vector_x lies in
    the frame; the columns before it read column 0, those after it column width − 1."""
    inner_first = min(max(first, vector_x), stop)
    return inner_first, max(min(stop, width + vector_x), inner_first)


@_compiled
def _fill_field_row(field: np.ndarray, y: int, first: int, stop: int, vector_x: int, vector_y: int) -> None:
    field[0, y, first:stop] = vector_x
    field[1, y, first:stop] = vector_y


@_compiled
def motion_field(block_vectors: np.ndarray, field: np.ndarray) -> None:
    """field (2×H×W int16) = the frame's vectors (FFmpeg's AVMotionVector records) at every pixel."""
    height, width = field.shape[1:]
    grid, cell = block_grid(block_vectors, height, width)
    counts, runs = _runs(grid, cell, width)
    for y in range(height):
        row = y // cell
        for run in range(counts[row]):
            first, stop, vector_x, vector_y = runs[row, run]
            _fill_field_row(field, y, first, stop, vector_x, vector_y)


@_compiled
def _subtract(
    minuend: np.ndarray, start: int, subtrahend: np.ndarray, source_start: int, count: int, out: np.ndarray
) -> None:
    """out[start:start+count] = minuend[start:…] − subtrahend[source_start:…] (uint8 rows in, int16 out).

    Offsets instead of slices: a slice costs numba a reference count, and a run can be 8 pixels long.
    """
    start, source_start = uint64(start), uint64(source_start)  # int64 + uint64 would be float64 in numba
    for index in range(uint64(count)):
        out[start + index] = np.int16(minuend[start + index]) - np.int16(subtrahend[source_start + index])


@_compiled
def motion_field_and_residual(
    block_vectors: np.ndarray, current: np.ndarray, reference: np.ndarray, field: np.ndarray, residual: np.ndarray
) -> None:
    """In one pass: `field` as `motion_field` writes it, and residual = current − warp(reference, field).

    current and reference are C-contiguous H×W×C uint8, residual H×W×C int16.
    """
    height, width, channels = current.shape
    grid, cell = block_grid(block_vectors, height, width)
    counts, runs = _runs(grid, cell, width)
    current_rows, reference_rows = current.reshape(height, -1), reference.reshape(height, -1)
    residual_rows = residual.reshape(height, -1)
    for y in range(height):
        row = y // cell
        target, written = current_rows[y], residual_rows[y]
        for run in range(counts[row]):
            first, stop, vector_x, vector_y = runs[row, run]
            _fill_field_row(field, y, first, stop, vector_x, vector_y)
            source = reference_rows[min(max(y - vector_y, 0), height - 1)]
            inner_first, inner_stop = _unclamped(first, stop, vector_x, width)
            for x in range(first, inner_first):
                _subtract(target, x * channels, source, 0, channels, written)
            begin = inner_first * channels
            _subtract(target, begin, source, begin - vector_x * channels, (inner_stop - inner_first) * channels, written)
            for x in range(inner_stop, stop):
                _subtract(target, x * channels, source, (width - 1) * channels, channels, written)


@_compiled
def trace(block_vectors: np.ndarray, sources: np.ndarray, out: np.ndarray) -> None:
    """One step of CoViAR's trace: out(p) = sources(clamp(p − field(p))), where `sources` (2×H×W int32)
    holds the I-frame row and column each pixel of the previous frame comes from."""
    height, width = sources.shape[1:]
    grid, cell = block_grid(block_vectors, height, width)
    counts, runs = _runs(grid, cell, width)
    for y in range(height):
        row = y // cell
        for run in range(counts[row]):
            first, stop, vector_x, vector_y = runs[row, run]
            source_row = min(max(y - vector_y, 0), height - 1)
            inner_first, inner_stop = _unclamped(first, stop, vector_x, width)
            for plane in range(2):
                source, written = sources[plane, source_row], out[plane, y]
                written[first:inner_first] = source[0]
                shift = uint64(inner_first - vector_x)
                for index in range(uint64(inner_stop - inner_first)):
                    written[uint64(inner_first) + index] = source[shift + index]
                written[inner_stop:stop] = source[width - 1]


@_compiled
def accumulated_outputs(
    sources: np.ndarray, iframe: np.ndarray, current: np.ndarray, field: np.ndarray, out: np.ndarray
) -> None:
    """field (2×H×W int16) = p − sources(p) and out (H×W×C int16) = current − iframe[sources(p)]."""
    height, width, channels = current.shape
    pixels, current_rows, out_rows = iframe.reshape(-1), current.reshape(height, -1), out.reshape(height, -1)
    for y in range(height):
        source_rows, source_cols = sources[0, y], sources[1, y]
        target, written = current_rows[y], out_rows[y]
        for x in range(width):
            source_row, source_col = source_rows[x], source_cols[x]
            field[0, y, x] = x - source_col
            field[1, y, x] = y - source_row
            start = (source_row * width + source_col) * channels
            for channel in range(channels):
                written[x * channels + channel] = np.int16(target[x * channels + channel]) - np.int16(pixels[start + channel])
