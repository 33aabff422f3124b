"""Onset→apex clips with real facial motion from still images: a landmark-driven piecewise-affine morph.

A cross-fade from a neutral photo to the peak photo has residuals but no motion. Here each frame's face
shape is interpolated between the key images' 68 dlib landmarks (plus fixed points on the image border,
so the background stays put), both neighbouring key images are warped onto that shape triangle by
triangle, and their textures are blended with the same weight. The brows rise, the mouth opens and the
jaw drops over the clip, so an encoder's motion vectors follow the landmarks; the first frame is the
first key image and the last frame is the last key image, exactly. Time runs through a smoothstep, so
the clip starts and ends slowly, as a posed onset→apex does. Limits: docs/datasets.md ("pairs").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.tri import LinearTriInterpolator, Triangulation
from scipy import ndimage
from skimage.transform import SimilarityTransform, warp

from cvfer.errors import ConfigError

BORDER_POINTS_PER_SIDE = 4  # fixed points along each image side, corners included
# Landmarks an expression barely moves (nose bridge and base, the eyes' corners): they register the key
# images onto the first one, so photos framed differently do not turn into a global motion.
STABLE_LANDMARKS = (27, 28, 29, 30, 31, 33, 35, 36, 39, 42, 45)


def border_points(height: int, width: int) -> np.ndarray:
    """Points one pixel outside the image border (x y) that every frame keeps in place, so the mesh covers
    every pixel centre strictly inside."""
    xs = np.linspace(-1, width, BORDER_POINTS_PER_SIDE)
    ys = np.linspace(-1, height, BORDER_POINTS_PER_SIDE)
    top = np.stack([xs, np.full_like(xs, -1.0)], axis=1)
    bottom = np.stack([xs, np.full_like(xs, float(height))], axis=1)
    left = np.stack([np.full_like(ys[1:-1], -1.0), ys[1:-1]], axis=1)
    right = np.stack([np.full_like(ys[1:-1], float(width)), ys[1:-1]], axis=1)
    return np.concatenate([top, bottom, left, right])


def warp_to_shape(image: np.ndarray, points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """`image` (H×W×C) warped piecewise-affinely so that its `points` land on `target` (both N×2, x y, the
    target covering the image, as `border_points` make sure); float64 in the image's value range.

    The source position of each output pixel is interpolated linearly over the Delaunay triangles of
    `target` (skimage's PiecewiseAffineTransform does the same, ~30× slower), then sampled bilinearly.
    """
    target, points = np.asarray(target, float), np.asarray(points, float)
    try:
        mesh = Triangulation(target[:, 0], target[:, 1])
    except (ValueError, RuntimeError) as error:
        raise ConfigError(f"the landmarks do not form a triangle mesh ({error})", fix="check that each image shows one whole face") from None
    rows, cols = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    source = [LinearTriInterpolator(mesh, points[:, axis])(cols, rows) for axis in (1, 0)]
    if any(np.ma.is_masked(coordinate) for coordinate in source):
        raise ConfigError("the landmark mesh does not cover the image", fix="include the image's border points")
    coordinates = np.stack([np.ma.getdata(coordinate) for coordinate in source])
    channels = [ndimage.map_coordinates(image[..., c].astype(float), coordinates, order=1, mode="nearest") for c in range(image.shape[2])]
    return np.stack(channels, axis=-1)


def align_to(image: np.ndarray, landmarks: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`image` and its 68 `landmarks` moved by the similarity transform that best maps its
    `STABLE_LANDMARKS` onto `reference`'s (the image unchanged when that transform is the identity)."""
    stable = list(STABLE_LANDMARKS)
    transform = SimilarityTransform.from_estimate(np.asarray(landmarks, float)[stable], np.asarray(reference, float)[stable])
    if not transform:
        raise ConfigError("the landmarks cannot be registered", fix="check that each image shows one whole face")
    if np.allclose(transform.params, np.eye(3), atol=1e-9):
        return image, np.asarray(landmarks, float)
    aligned = warp(image, transform.inverse, order=1, mode="edge", preserve_range=True)
    return np.clip(np.rint(aligned), 0, 255).astype(np.uint8), transform(np.asarray(landmarks, float))


def smoothstep(t: float) -> float:
    """3t² − 2t³: 0 → 1 with zero speed at both ends."""
    return t * t * (3.0 - 2.0 * t)


def morph_sequence(keyframes: Sequence[np.ndarray], landmarks: Sequence[np.ndarray], num_frames: int) -> list[np.ndarray]:
    """`num_frames` uint8 frames moving through `keyframes` (H×W×3 uint8, same size) in order.

    `landmarks[k]` are the points (N×2, x y, the same N for every key) of `keyframes[k]`. Global time is
    eased by `smoothstep` and split evenly over the segments between consecutive keys; a frame that falls
    on a key is that key image, unchanged, so the first and last frames are the first and last keys.
    """
    if len(keyframes) < 2 or len(keyframes) != len(landmarks):
        raise ConfigError(f"a morph needs two or more key images, each with landmarks; got {len(keyframes)} and {len(landmarks)}")
    if num_frames < len(keyframes):
        raise ConfigError(f"num_frames={num_frames} is fewer than the {len(keyframes)} key images", fix="ask for more frames")
    shape = keyframes[0].shape
    if any(frame.shape != shape for frame in keyframes) or len(shape) != 3:
        raise ConfigError(f"key images must all be H×W×3 of one size, got {[frame.shape for frame in keyframes]}")
    border = border_points(*shape[:2])
    points = [np.concatenate([np.asarray(marks, float), border]) for marks in landmarks]
    segments = len(keyframes) - 1
    frames: list[np.ndarray] = []
    for index in range(num_frames):
        position = smoothstep(index / (num_frames - 1)) * segments
        segment = min(int(position), segments - 1)
        weight = position - segment
        if weight <= 0.0 or weight >= 1.0:
            frames.append(keyframes[segment + int(weight >= 1.0)].copy())
            continue
        target = (1.0 - weight) * points[segment] + weight * points[segment + 1]
        start = warp_to_shape(keyframes[segment], points[segment], target)
        end = warp_to_shape(keyframes[segment + 1], points[segment + 1], target)
        frames.append(np.clip(np.rint((1.0 - weight) * start + weight * end), 0, 255).astype(np.uint8))
    return frames
