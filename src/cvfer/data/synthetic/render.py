"""Procedural RGB faces: identity parameters, action-unit deformations, pose and lighting.

Every part of the face is a soft-edged shape (signed distance -> coverage over one pixel), so the
faces are anti-aliased and every deformation changes pixels continuously. Coordinates are "face
units": x to the image right, y down, origin at the face centre, face half-height about 1.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import astuple, dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from cvfer.data.synthetic.expressions import AU_INDEX, action_unit_array
from cvfer.errors import ConfigError

Color = tuple[float, float, float]

# Half the image side in face units at pose scale 1: the head, its hair and the neck fit inside.
IMAGE_EXTENT = 1.05
HAIR_STYLES = ("buzz", "short", "long", "volume")

_SKIN_LIGHT = np.array([0.96, 0.80, 0.69])
_SKIN_DARK = np.array([0.33, 0.21, 0.14])
_HAIR_COLORS = np.array(
    [[0.07, 0.06, 0.05], [0.22, 0.13, 0.07], [0.42, 0.27, 0.14], [0.82, 0.67, 0.38], [0.58, 0.24, 0.10], [0.62, 0.62, 0.60]]
)
_HAIR_WEIGHTS = np.array([0.3, 0.25, 0.18, 0.12, 0.07, 0.08])
_IRIS_COLORS = np.array([[0.30, 0.18, 0.09], [0.12, 0.08, 0.06], [0.28, 0.42, 0.62], [0.30, 0.42, 0.28], [0.45, 0.35, 0.18]])


@dataclass(frozen=True)
class IdentityParams:
    """What makes one synthetic person recognisable: shape, proportions, colours, hair, glasses."""

    face_width: float
    face_height: float
    jaw_taper: float
    skin: Color
    eye_y: float
    eye_spacing: float
    eye_width: float
    eye_open_upper: float
    eye_open_lower: float
    eye_tilt: float
    iris_radius: float
    iris_color: Color
    brow_gap: float
    brow_thickness: float
    brow_inner: float
    brow_outer: float
    brow_arch: float
    brow_slant: float
    nose_y: float
    nose_width: float
    mouth_y: float
    mouth_width: float
    upper_lip: float
    lower_lip: float
    lip_color: Color
    fold_depth: float
    hair_color: Color
    hair_style: int
    hairline: float
    hair_length: float
    ear_size: float
    glasses: bool
    glasses_size: float
    glasses_color: Color
    beard: float
    moustache: bool
    background: Color
    shirt: Color

    def as_vector(self) -> np.ndarray:
        """All parameters flattened to one float vector (to compare identities)."""
        values: list[float] = []
        for value in astuple(self):
            values.extend(value if isinstance(value, tuple) else [float(value)])
        return np.asarray(values, dtype=float)


@dataclass(frozen=True)
class Pose:
    """Head pose: translation (fraction of half the image side), in-plane roll (degrees), scale, yaw."""

    dx: float = 0.0
    dy: float = 0.0
    roll: float = 0.0
    scale: float = 1.0
    yaw: float = 0.0


@dataclass(frozen=True)
class Lighting:
    """Illumination: overall gain, ambient share, strength and image-plane direction of a side light, tint."""

    gain: float = 1.0
    ambient: float = 0.65
    side: float = 0.3
    azimuth: float = 2.5
    tint: Color = (1.0, 1.0, 1.0)


def sample_identity(rng: np.random.Generator) -> IdentityParams:
    """Draw a random identity; the ranges are wide so identities differ far more than expressions do."""
    u = rng.uniform
    face_width = u(0.64, 0.86)
    skin = np.clip((_SKIN_LIGHT + rng.beta(1.2, 2.0) * (_SKIN_DARK - _SKIN_LIGHT)) * (1 + rng.normal(0, 0.04, 3)), 0.05, 1)
    hair = np.clip(_HAIR_COLORS[rng.choice(len(_HAIR_COLORS), p=_HAIR_WEIGHTS)] * u(0.8, 1.2), 0, 1)
    eye_y = u(-0.17, 0.0)
    eye_width = u(0.11, 0.16)
    eye_spacing = u(0.24, 0.36)
    nose_y = eye_y + u(0.3, 0.44)
    has_beard = rng.random() < 0.18
    return IdentityParams(
        face_width=face_width,
        face_height=u(0.9, 1.05),
        jaw_taper=u(0.0, 0.4),
        skin=_color(skin),
        eye_y=eye_y,
        eye_spacing=eye_spacing,
        eye_width=eye_width,
        eye_open_upper=u(0.045, 0.075),
        eye_open_lower=u(0.03, 0.05),
        eye_tilt=u(-0.015, 0.03),
        iris_radius=u(0.04, 0.055),
        iris_color=_color(_IRIS_COLORS[rng.integers(len(_IRIS_COLORS))] * u(0.85, 1.15)),
        brow_gap=u(0.1, 0.17),
        brow_thickness=u(0.025, 0.06),
        brow_inner=eye_spacing - eye_width * u(0.8, 1.1),
        brow_outer=eye_spacing + eye_width * u(1.0, 1.35),
        brow_arch=u(0.0, 0.05),
        brow_slant=u(-0.03, 0.03),
        nose_y=nose_y,
        nose_width=u(0.07, 0.12),
        mouth_y=nose_y + u(0.17, 0.27),
        mouth_width=u(0.16, 0.26),
        upper_lip=u(0.022, 0.045),
        lower_lip=u(0.032, 0.06),
        lip_color=_color(np.clip(skin * np.array([0.95, 0.6, 0.6]) + np.array([0.08, 0.0, 0.02]) * u(0, 1), 0, 1)),
        fold_depth=u(0.0, 0.25),
        hair_color=_color(hair),
        hair_style=int(rng.integers(len(HAIR_STYLES))),
        hairline=u(-0.8, -0.5),
        hair_length=u(0.3, 1.3),
        ear_size=u(0.8, 1.2),
        glasses=bool(rng.random() < 0.3),
        glasses_size=u(0.9, 1.15),
        glasses_color=_color(rng.choice([[0.08, 0.08, 0.08], [0.45, 0.3, 0.15], [0.7, 0.7, 0.72]]) * u(0.8, 1.2)),
        beard=float(u(0.25, 0.85)) if has_beard else 0.0,
        moustache=bool(has_beard or rng.random() < 0.08),
        background=_color(rng.uniform(0.15, 0.9, 3)),
        shirt=_color(rng.uniform(0.05, 0.95, 3)),
    )


def render_face(
    identity: IdentityParams,
    action_units: Mapping[int, float | tuple[float, float]] | np.ndarray | None = None,
    pose: Pose | None = None,
    lighting: Lighting | None = None,
    size: int = 64,
    *,
    noise_std: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Render one face as a size×size×3 uint8 RGB image.

    `action_units`: {AU code: intensity or (left, right)} or an array from `action_unit_array`.
    `noise_std`: Gaussian sensor noise in grey levels (needs `rng`).
    """
    if size < 16 or size % 2:
        raise ConfigError(f"image size {size} is not an even number >= 16", fix="use an even size such as 64")
    if noise_std > 0 and rng is None:
        raise ConfigError("noise_std > 0 needs an rng", fix="pass rng=np.random.default_rng(seed)")
    aus = action_unit_array(action_units)
    pose = pose or Pose()
    lighting = lighting or Lighting()
    canvas = _Canvas(identity, aus, pose, size)
    canvas.draw()
    image = canvas.shade(lighting)
    image = gaussian_filter(image, sigma=(0.45, 0.45, 0))
    image = image * 255.0
    if noise_std > 0:
        image = image + rng.normal(0.0, noise_std, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _color(values: np.ndarray | list[float]) -> Color:
    r, g, b = (float(v) for v in np.clip(values, 0.0, 1.0))
    return (r, g, b)


def _soft(distance: np.ndarray, pixel: float) -> np.ndarray:
    """Coverage of a shape from its signed distance (negative inside), anti-aliased over one pixel."""
    return np.clip(0.5 - distance / pixel, 0.0, 1.0)


def _stroke(distance: np.ndarray, width: float | np.ndarray, pixel: float) -> np.ndarray:
    """Coverage of a line of `width` around a centre line; lines thinner than a pixel fade instead."""
    effective = np.maximum(width, pixel)
    return _soft(np.abs(distance) - effective / 2, pixel) * (width / effective)


def _ellipse_distance(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse (exact near its edge)."""
    dx, dy = (x - cx) / rx, (y - cy) / ry
    gradient = 2 * np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2) + 1e-6
    return (dx * dx + dy * dy - 1) / gradient


def _segment_distance(x: np.ndarray, y: np.ndarray, start: tuple[float, float], end: tuple[float, float]) -> np.ndarray:
    """Distance to the segment start-end."""
    (x0, y0), (x1, y1) = start, end
    vx, vy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * vx + (y - y0) * vy) / (vx * vx + vy * vy + 1e-12), 0, 1)
    return np.hypot(x - x0 - t * vx, y - y0 - t * vy)


class _Canvas:
    """One frame being painted back to front in face coordinates."""

    def __init__(self, identity: IdentityParams, aus: np.ndarray, pose: Pose, size: int):
        self.identity = identity
        self.aus = np.clip(aus, 0.0, 1.5)
        self.pose = pose
        coords = ((np.arange(size) + 0.5) / size * 2 - 1) * IMAGE_EXTENT
        self.image_y, image_x = np.meshgrid(coords, coords, indexing="ij")
        tx, ty = image_x - pose.dx * IMAGE_EXTENT, self.image_y - pose.dy * IMAGE_EXTENT
        cos, sin = np.cos(np.radians(pose.roll)), np.sin(np.radians(pose.roll))
        self.x = (cos * tx + sin * ty) / pose.scale
        self.y = (-sin * tx + cos * ty) / pose.scale
        # Inner features sit in front of the outline: yaw shifts them sideways (a cheap 3-D cue).
        self.fx = self.x - 0.22 * pose.yaw
        self.pixel = 2 * IMAGE_EXTENT / size / pose.scale
        self.rgb = np.empty((size, size, 3))
        self.head = np.zeros((size, size))

    def au(self, code: int, side: int | None = None) -> float:
        """Intensity of AU `code` on `side` (0 left, 1 right), or the mean of both sides."""
        values = self.aus[AU_INDEX[code]]
        return float(values.mean() if side is None else values[side])

    def paint(self, alpha: np.ndarray, color: Color | np.ndarray) -> None:
        """Alpha-blend the RGB `color` over the canvas with per-pixel `alpha`, inside alpha's bounding box."""
        rows = np.flatnonzero(alpha.any(axis=1))
        if rows.size == 0:
            return
        cols = np.flatnonzero(alpha.any(axis=0))
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        region = self.rgb[box]
        region += np.clip(alpha[box], 0, 1)[..., None] * (np.asarray(color) - region)

    def skin(self, factor: float) -> np.ndarray:
        return np.clip(np.asarray(self.identity.skin) * factor, 0, 1)

    def draw(self) -> None:
        idp, x, y, pixel = self.identity, self.x, self.y, self.pixel
        background = np.asarray(idp.background)
        self.rgb[:] = background * (1.0 - 0.1 * self.image_y[..., None])
        self.paint(_soft(_ellipse_distance(x, y, 0, 1.8, 1.3, 0.62), pixel), idp.shirt)
        neck = _soft(np.abs(x) - 0.36 * idp.face_width, pixel) * _soft(0.4 - y, pixel)
        self.paint(neck, self.skin(0.8))
        if HAIR_STYLES[idp.hair_style] == "long":
            top = _soft(_ellipse_distance(x, y, 0, -0.08, idp.face_width + 0.17, idp.face_height + 0.17), pixel)
            hang = _soft(np.abs(x) - idp.face_width - 0.17, pixel) * _soft(y - idp.hair_length, pixel) * _soft(-y - 0.08, pixel)
            self.paint(np.maximum(top, hang), idp.hair_color)
        for sx in (-1, 1):
            ear = _ellipse_distance(x, y, sx * 0.97 * idp.face_width, idp.eye_y + 0.12, 0.085 * idp.ear_size, 0.16 * idp.ear_size)
            self.paint(_soft(ear, pixel), self.skin(0.9))
        self._face()
        self._beard()
        self._nose_and_folds()
        self._mouth()
        self._eyes()
        self._brows()
        self._hair_front()
        if idp.glasses:
            self._glasses()

    def _face(self) -> None:
        idp, x, y = self.identity, self.x, self.y
        chin = idp.face_height + 0.1 * self.au(26)
        lower = np.clip(y / chin, 0, 1)
        half_width = idp.face_width * (1 - idp.jaw_taper * lower**2)
        half_height = np.where(y < 0, idp.face_height, chin)
        radius = np.hypot(x / half_width, y / half_height)
        self.head = _soft((radius - 1) * np.minimum(half_width, half_height), self.pixel)
        self.paint(self.head, idp.skin)
        for side, sx in ((0, -1), (1, 1)):
            lift = float(np.clip(self.au(6, side) + 0.3 * self.au(12, side), 0, 1))
            blob = _ellipse_distance(self.fx, y, sx * (idp.eye_spacing + 0.03), idp.eye_y + 0.27 - 0.06 * lift, 0.15, 0.09)
            self.paint(0.45 * lift * _soft(blob, 3 * self.pixel), self.skin(1.15))
        # Forehead wrinkles (AU1 + AU2) and glabellar furrows (AU4).
        raise_amount = float(np.clip(0.5 * (self.au(1) + self.au(2)) - 0.1, 0, 1))
        brow_y = idp.eye_y - idp.brow_gap
        for k in range(3):
            line = y - (brow_y - 0.14 - 0.065 * k + 0.05 * (self.fx / 0.45) ** 2)
            extent = _soft(np.abs(self.fx) - (0.42 - 0.06 * k), self.pixel)
            self.paint(0.55 * raise_amount * _stroke(line, 0.014, self.pixel) * extent, self.skin(0.68))
        furrow = 0.6 * self.au(4)
        for sx in (-1, 1):
            segment = _segment_distance(self.fx, y, (sx * 0.045, brow_y - 0.03), (sx * 0.035, brow_y + 0.07))
            self.paint(furrow * _stroke(segment, 0.014, self.pixel), self.skin(0.65))

    def _beard(self) -> None:
        idp, x, y = self.identity, self.x, self.y
        if idp.beard <= 0:
            return
        edge = idp.mouth_y - 0.08 - 0.55 * (x / idp.face_width) ** 2
        self.paint(idp.beard * self.head * _soft(edge - y, self.pixel), idp.hair_color)

    def _nose_and_folds(self) -> None:
        idp, y, pixel = self.identity, self.y, self.pixel
        nose_x = self.fx - 0.08 * self.pose.yaw
        tip_y = idp.nose_y - 0.03 * self.au(9) - 0.01 * self.au(10)
        flare = 1 + 0.3 * self.au(9)
        self.paint(0.35 * _soft(_ellipse_distance(nose_x, y, 0, tip_y + 0.03, idp.nose_width * 0.9, 0.035), pixel), self.skin(0.72))
        for sx in (-1, 1):
            wing = _ellipse_distance(nose_x, y, sx * idp.nose_width * flare, tip_y - 0.005, 0.045, 0.05)
            self.paint(0.3 * _stroke(wing, 0.012, pixel) * _soft(tip_y - 0.02 - y, pixel), self.skin(0.7))
            nostril = _ellipse_distance(nose_x, y, sx * idp.nose_width * 0.5 * flare, tip_y + 0.02, 0.03 * flare, 0.016)
            self.paint(0.8 * _soft(nostril, pixel), self.skin(0.35))
        wrinkle = 0.65 * self.au(9)
        for k in range(3):
            line = y - (idp.eye_y + 0.03 + 0.04 * k)
            self.paint(wrinkle * _stroke(line, 0.013, pixel) * _soft(np.abs(nose_x) - 0.075, pixel), self.skin(0.66))
        corners = self._mouth_corners()
        for side, sx in ((0, -1), (1, 1)):
            fold = float(
                np.clip(
                    idp.fold_depth
                    + 0.6 * self.au(12, side)
                    + 0.45 * self.au(10, side)
                    + 0.4 * self.au(9, side)
                    + 0.2 * self.au(6, side),
                    0,
                    0.85,
                )
            )
            (start_x, start_y) = (sx * (idp.nose_width * flare + 0.035), tip_y - 0.02)
            end_x, end_y = corners[side][0] + sx * 0.05, corners[side][1] + 0.06
            t = (y - start_y) / (end_y - start_y)
            centre = start_x + (end_x - start_x) * t + sx * (0.04 + 0.02 * self.au(12, side)) * 4 * t * (1 - t)
            span = _soft(-t * (end_y - start_y), pixel) * _soft((t - 1) * (end_y - start_y), pixel)
            self.paint(fold * _stroke(self.fx - centre, 0.018, pixel) * span, self.skin(0.7))

    def _mouth_corners(self) -> list[tuple[float, float]]:
        """(x, y) of the left and right lip corners after the lip AUs."""
        idp = self.identity
        corners = []
        for side, sx in ((0, -1), (1, 1)):
            au = functools.partial(self.au, side=side)
            width = idp.mouth_width * (1 + 0.25 * au(12) + 0.35 * au(20) - 0.15 * au(23) - 0.15 * au(14) - 0.08 * au(24))
            height = idp.mouth_y - 0.11 * au(12) - 0.035 * au(14) + 0.09 * au(15) + 0.02 * au(20) - 0.03 * au(10)
            corners.append((sx * width, height))
        return corners

    def _mouth(self) -> None:
        idp, y, pixel = self.identity, self.y, self.pixel
        x = self.fx
        (left_x, left_y), (right_x, right_y) = self._mouth_corners()
        right = x >= 0
        half_width = np.where(right, right_x, -left_x)
        corner_y = np.where(right, right_y, left_y)
        s = x / half_width
        u = np.clip(1 - s * s, 0, 1)
        root = np.sqrt(u)
        centre_y = idp.mouth_y - 0.015 * self.au(10) + 0.01 * self.au(15) - 0.012 * self.au(17)
        line = centre_y + (corner_y - centre_y) * s * s
        press = 1 - 0.45 * self.au(23) - 0.55 * self.au(24)
        gap = max(0.0, 0.04 * self.au(25) + 0.22 * self.au(26) + 0.03 * self.au(10) + 0.03 * self.au(20)) * (1 - 0.8 * min(1, self.au(24)))
        upper_inner = line - 0.25 * gap * root
        lower_inner = line + 0.75 * gap * root
        upper_outer = upper_inner - (idp.upper_lip * press + 0.02 * self.au(10)) * root * (1 - 0.3 * np.exp(-((s / 0.16) ** 2)))
        lower_outer = lower_inner + (idp.lower_lip * press + 0.012 * self.au(17)) * root
        inside = _soft((np.abs(s) - 1) * half_width, pixel)
        if idp.moustache:
            band = _soft(upper_outer - 0.06 - y, pixel) * _soft(y - upper_outer + 0.005, pixel)
            self.paint(0.85 * band * _soft(np.abs(x) - half_width - 0.02, pixel), idp.hair_color)
        lips = np.asarray(idp.lip_color)
        self.paint(_soft(upper_outer - y, pixel) * _soft(y - upper_inner, pixel) * inside, lips * 0.88)
        self.paint(_soft(lower_inner - y, pixel) * _soft(y - lower_outer, pixel) * inside, lips)
        interior = _soft(upper_inner - y, pixel) * _soft(y - lower_inner, pixel) * inside
        self.paint(interior, (0.22, 0.07, 0.07))
        teeth = _soft(upper_inner - y, pixel) * _soft(y - upper_inner - min(0.4 * gap, 0.035), pixel) * inside
        self.paint(0.9 * teeth, (0.92, 0.9, 0.84))
        for side, sx, (cx, cy) in ((0, -1, (left_x, left_y)), (1, 1, (right_x, right_y))):
            dimple = _ellipse_distance(x, y, cx + sx * 0.03, cy, 0.02, 0.025)
            self.paint(0.55 * self.au(14, side) * _soft(dimple, pixel), self.skin(0.62))
            droop = _segment_distance(x, y, (cx, cy), (cx + sx * 0.03, cy + 0.075))
            self.paint(0.45 * self.au(15, side) * _stroke(droop, 0.014, pixel), self.skin(0.65))
        chin_y = centre_y + 0.75 * gap + idp.lower_lip + 0.09
        chin = _ellipse_distance(x, y, 0, chin_y, 0.08, 0.03)
        self.paint(0.45 * self.au(17) * _stroke(chin, 0.014, pixel), self.skin(0.68))

    def _eyes(self) -> None:
        idp, y, pixel = self.identity, self.y, self.pixel
        x = self.fx
        lash_color = np.asarray(idp.hair_color) * 0.5
        for side, sx in ((0, -1), (1, 1)):
            au = functools.partial(self.au, side=side)
            cx, cy = sx * idp.eye_spacing, idp.eye_y
            upper = idp.eye_open_upper * max(0.12, 1 + 1.0 * au(5) - 0.6 * au(7) - 0.35 * au(6) - 0.2 * au(4) - 0.15 * au(9))
            lower = idp.eye_open_lower * max(0.1, 1 - 0.65 * au(6) - 0.6 * au(7) + 0.2 * au(5))
            s = (x - cx) / idp.eye_width
            u = np.clip(1 - s * s, 0, 1) ** 0.75
            tilt = cy - idp.eye_tilt * s * sx
            upper_lid, lower_lid = tilt - upper * u, tilt + lower * u
            inside = _soft(np.abs(x - cx) - idp.eye_width, pixel)
            socket = _ellipse_distance(x, y, cx, cy - 0.02, idp.eye_width * 1.3, idp.eye_open_upper + 0.06)
            self.paint(0.18 * _soft(socket, 3 * pixel), self.skin(0.75))
            sclera = _soft(upper_lid - y, pixel) * _soft(y - lower_lid, pixel) * inside
            self.paint(sclera, (0.93, 0.91, 0.87))
            iris = _soft(np.hypot(x - cx, y - cy) - idp.iris_radius, pixel) * sclera
            self.paint(iris, idp.iris_color)
            self.paint(_soft(np.hypot(x - cx, y - cy) - 0.45 * idp.iris_radius, pixel) * sclera, (0.03, 0.03, 0.03))
            self.paint(0.85 * _stroke(y - upper_lid, 0.022, pixel) * inside, lash_color)
            crease = 0.3 * max(0.0, 1 - au(5)) * _stroke(y - (upper_lid - 0.045), 0.012, pixel) * inside
            self.paint(crease, self.skin(0.7))
            lower_crease = (0.12 + 0.45 * au(6)) * _stroke(y - (lower_lid + 0.035), 0.012, pixel) * inside
            self.paint(lower_crease, self.skin(0.7))
            outer = (cx + sx * idp.eye_width * 1.08, cy)
            for angle in (-0.35, 0.0, 0.35):
                end = (outer[0] + sx * 0.07 * np.cos(angle), outer[1] + 0.07 * np.sin(angle))
                self.paint(0.45 * au(6) * _stroke(_segment_distance(x, y, outer, end), 0.011, pixel), self.skin(0.66))

    def _brows(self) -> None:
        idp, y, pixel = self.identity, self.y, self.pixel
        x = self.fx
        color = np.clip(np.asarray(idp.hair_color) * 0.8, 0, 1)
        base_y = idp.eye_y - idp.brow_gap
        for side, sx in ((0, -1), (1, 1)):
            au = functools.partial(self.au, side=side)
            inner_x = sx * (idp.brow_inner - 0.05 * au(4))
            inner_y = base_y + 0.07 * au(4) - 0.11 * au(1) + 0.03 * au(9)
            outer_x = sx * idp.brow_outer
            outer_y = base_y - idp.brow_slant - 0.11 * au(2) + 0.02 * au(4)
            arch = idp.brow_arch + 0.025 * au(2) - 0.01 * au(4)
            length = abs(outer_x - inner_x)
            t = (x - inner_x) / (outer_x - inner_x)
            centre = inner_y + (outer_y - inner_y) * t - arch * 4 * t * (1 - t)
            thickness = idp.brow_thickness * (1 - 0.4 * np.clip(t, 0, 1))
            span = _soft(-t * length, pixel) * _soft((t - 1) * length, pixel)
            self.paint(_stroke(y - centre, thickness, pixel) * span, color)

    def _hair_front(self) -> None:
        idp, x, y, pixel = self.identity, self.x, self.y, self.pixel
        style = HAIR_STYLES[idp.hair_style]
        grow = 1.14 if style == "volume" else 1.06
        cap = _soft(_ellipse_distance(x, y, 0, -0.06, idp.face_width * grow, idp.face_height * (grow + 0.06)), pixel)
        temple_y = idp.eye_y - 0.06
        hairline = idp.hairline + (temple_y - idp.hairline) * np.clip(np.abs(x) / idp.face_width, 0, 1) ** 3
        alpha = 0.35 if style == "buzz" else 1.0
        self.paint(alpha * cap * _soft(y - hairline, pixel), idp.hair_color)

    def _glasses(self) -> None:
        idp, y, pixel = self.identity, self.y, self.pixel
        x = self.fx
        rx, ry = idp.eye_width * 1.5 * idp.glasses_size, idp.eye_width * 1.05 * idp.glasses_size
        cy = idp.eye_y + 0.01
        for sx in (-1, 1):
            cx = sx * idp.eye_spacing
            ring = _ellipse_distance(x, y, cx, cy, rx, ry)
            self.paint(0.1 * _soft(ring, pixel), (0.85, 0.92, 1.0))
            self.paint(_stroke(ring, 0.026, pixel), idp.glasses_color)
            temple = _segment_distance(self.x, y, (cx + sx * rx, cy - 0.02), (sx * idp.face_width, cy - 0.03))
            self.paint(_stroke(temple, 0.022, pixel), idp.glasses_color)
        bridge = _segment_distance(x, y, (-idp.eye_spacing + rx, cy - 0.02), (idp.eye_spacing - rx, cy - 0.02))
        self.paint(_stroke(bridge, 0.022, pixel), idp.glasses_color)

    def shade(self, lighting: Lighting) -> np.ndarray:
        """Apply Lambertian shading of a rounded head plus an ambient term, gain and tint."""
        idp = self.identity
        nx = self.x / (idp.face_width * 1.1)
        ny = self.y / (idp.face_height * 1.1)
        nz = np.sqrt(np.clip(1 - nx * nx - ny * ny, 0, 1))
        head = self.head
        light = np.array(
            [
                lighting.side * np.cos(lighting.azimuth),
                lighting.side * np.sin(lighting.azimuth),
                np.sqrt(max(0.0, 1 - lighting.side**2)),
            ]
        )
        facing = head * (nx * light[0] + ny * light[1] + nz * light[2]) + (1 - head) * light[2]
        shading = lighting.ambient + (1 - lighting.ambient) * np.clip(facing, 0, 1)
        return np.clip(self.rgb * shading[..., None] * lighting.gain * np.asarray(lighting.tint), 0, 1)
