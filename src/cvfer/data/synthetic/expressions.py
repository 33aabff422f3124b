"""Action units (AUs) and the FACS-like table of which AUs each emotion recruits.

An expression is an array of AU intensities in [0, 1] of shape (len(AU_CODES), 2): one column per face
side (0 = image left, 1 = image right), so asymmetric and unilateral expressions (contempt) are plain
data. The renderer turns each AU into a geometric deformation or a skin fold; no emotion is drawn as a
class-specific sticker.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cvfer.errors import ConfigError

AU_NAMES: dict[int, str] = {
    1: "inner brow raiser",
    2: "outer brow raiser",
    4: "brow lowerer",
    5: "upper lid raiser",
    6: "cheek raiser",
    7: "lid tightener",
    9: "nose wrinkler",
    10: "upper lip raiser",
    12: "lip corner puller",
    14: "dimpler",
    15: "lip corner depressor",
    17: "chin raiser",
    20: "lip stretcher",
    23: "lip tightener",
    24: "lip pressor",
    25: "lips part",
    26: "jaw drop",
}
AU_CODES: tuple[int, ...] = tuple(AU_NAMES)
AU_INDEX: dict[int, int] = {code: index for index, code in enumerate(AU_CODES)}

# Emotion -> {AU: weight at apex}; after EMFACS / Ekman & Friesen's prototypes. Core AUs are always
# recruited (unless a subject's style drops one); OPTIONAL_AUS are recruited by about half the subjects.
EMOTION_AUS: dict[str, dict[int, float]] = {
    "anger": {4: 1.0, 5: 0.5, 7: 0.8, 23: 0.9},
    "contempt": {12: 0.6, 14: 0.9},  # unilateral: one side only
    "disgust": {9: 1.0, 10: 0.8, 15: 0.5},
    "fear": {1: 0.9, 2: 0.6, 4: 0.6, 5: 1.0, 20: 1.0},
    "happiness": {6: 0.9, 12: 1.0},
    "sadness": {1: 1.0, 4: 0.6, 15: 1.0},
    "surprise": {1: 1.0, 2: 1.0, 5: 0.7, 26: 1.0},
}
OPTIONAL_AUS: dict[str, dict[int, float]] = {
    "anger": {24: 0.7, 17: 0.5},
    "contempt": {},
    "disgust": {17: 0.6, 25: 0.4},
    "fear": {7: 0.5, 25: 0.6, 26: 0.4},
    "happiness": {25: 0.7},
    "sadness": {17: 0.6, 6: 0.3},
    "surprise": {25: 0.8},
}
UNILATERAL_EMOTIONS = frozenset({"contempt"})
# The emotion a subject's idiosyncratic style may blend in (the classic confusions of FER).
CONFUSABLE: dict[str, str] = {
    "anger": "disgust",
    "contempt": "happiness",
    "disgust": "anger",
    "fear": "surprise",
    "happiness": "contempt",
    "sadness": "fear",
    "surprise": "fear",
}


def action_unit_array(action_units: Mapping[int, float | tuple[float, float]] | np.ndarray | None) -> np.ndarray:
    """AU intensities as a (len(AU_CODES), 2) float array from a {code: intensity or (left, right)} map."""
    if action_units is None:
        return np.zeros((len(AU_CODES), 2))
    if isinstance(action_units, np.ndarray):
        if action_units.shape != (len(AU_CODES), 2):
            raise ConfigError(f"AU array has shape {action_units.shape}, expected {(len(AU_CODES), 2)}")
        return action_units.astype(float)
    array = np.zeros((len(AU_CODES), 2))
    for code, intensity in action_units.items():
        if code not in AU_INDEX:
            raise ConfigError(f"unknown action unit {code}", fix=f"use one of {list(AU_CODES)}")
        array[AU_INDEX[code]] = intensity
    return array


def emotion_action_units(emotion: str, intensity: float = 1.0, side: int = 1) -> np.ndarray:
    """Prototype AU array of `emotion` (core AUs only) at `intensity`; unilateral emotions on `side`."""
    if emotion == "neutral":
        return np.zeros((len(AU_CODES), 2))
    if emotion not in EMOTION_AUS:
        raise ConfigError(f"unknown emotion {emotion!r}", fix=f"use one of {sorted(EMOTION_AUS)} or 'neutral'")
    array = action_unit_array({code: weight * intensity for code, weight in EMOTION_AUS[emotion].items()})
    if emotion in UNILATERAL_EMOTIONS:
        array[:, 1 - side] = 0.0
    return array


def intensity_ramp(num_frames: int, protocol: str, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Expression intensity per frame in [0, 1] and the apex index, where the ramp reaches exactly 1.

    `ckplus`: neutral, then a smooth rise to the apex at the last frame. `mmi`: neutral, rise to an apex
    near the middle, fall back to neutral at the end. The ramp is an ease-in smoothstep that still
    rises at the apex, so the apex is the single most intense frame.
    """
    if num_frames < 3:
        raise ConfigError(f"num_frames={num_frames} is too short", fix="use at least 3 frames")
    if protocol == "ckplus":
        apex = num_frames - 1
        onset = int(rng.integers(0, max(1, round(0.3 * num_frames))))
        rise = _ease_in((np.arange(num_frames) - onset) / max(1, apex - onset))
        return rise, apex
    if protocol == "mmi":
        middle = (num_frames - 1) / 2
        apex = int(np.clip(round(middle + rng.uniform(-0.1, 0.1) * num_frames), 1, num_frames - 2))
        onset = int(rng.integers(0, max(1, round(0.15 * num_frames))))
        offset = num_frames - 1 - int(rng.integers(0, max(1, round(0.15 * num_frames))))
        onset, offset = min(onset, apex - 1), max(offset, apex + 1)
        frames = np.arange(num_frames)
        rise = _ease_in((frames - onset) / (apex - onset))
        fall = _ease_in((offset - frames) / (offset - apex))
        return np.where(frames <= apex, rise, fall), apex
    raise ConfigError(f"unknown protocol {protocol!r}", fix="use 'ckplus', 'mmi' or 'mixed'")


def _ease_in(progress: np.ndarray) -> np.ndarray:
    """Smoothstep on [0, 0.8] rescaled to reach 1 at progress 1 with a non-zero slope there."""
    x = 0.8 * np.clip(progress, 0.0, 1.0)
    return (x * x * (3 - 2 * x)) / 0.896
