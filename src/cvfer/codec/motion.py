"""Dense motion-vector fields and the warp that uses them: the definition the reader's kernels implement.

Convention (docs/codec.md): a field `T` is 2×H×W int16, channel 0 = x, channel 1 = y, holding
`dst − src` in whole pixels, so pixel p of the current frame is predicted from pixel `p − T[:, p]` of
the reference. Source coordinates outside the frame are clamped to the border (edge padding, as the
codecs' unrestricted motion vectors do).

`warp` takes any per-pixel field and gathers pixel by pixel; the reader never calls it. Its fields are
constant on a block grid, and `cvfer.codec.kernels` predicts from them run by run (tests check that
both agree exactly).
"""

from __future__ import annotations

import numpy as np


def warp(reference: np.ndarray, motion_vectors: np.ndarray) -> np.ndarray:
    """Motion-compensated prediction: out[p] = reference[clamp(p − T[:, p])] (Sec. 3.1, P_i^t = P^{t-1}_{i−T_i}).

    `reference` is H×W×C (any dtype), `motion_vectors` 2×H×W `dst − src` in whole pixels; source
    coordinates outside the frame are clamped to the nearest border pixel.
    """
    reference = np.asarray(reference)
    motion_vectors = np.asarray(motion_vectors)
    if reference.ndim != 3 or motion_vectors.shape != (2, *reference.shape[:2]):
        raise ValueError(f"motion vectors of shape {motion_vectors.shape} do not match a reference of shape {reference.shape}")
    height, width, channels = reference.shape
    rows, cols = np.indices((height, width))
    source_rows = np.clip(rows - motion_vectors[1], 0, height - 1)
    source_cols = np.clip(cols - motion_vectors[0], 0, width - 1)
    return reference.reshape(height * width, channels)[source_rows * width + source_cols]
