"""Clips with real facial motion from stills: the landmark-driven morph and the `pairs` dataset mode,
on skimage's astronaut (a real face) and a 'peak' made from it by moving its landmarks."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from PIL import Image
from skimage import data

from cvfer.codec import read_compressed, read_frames
from cvfer.codec.motion import warp
from cvfer.codec.writer import write_video
from cvfer.data import faces, morph
from cvfer.data.datasets import pairs, prepare_dataset
from cvfer.data.manifest import read_manifest
from cvfer.errors import ConfigError

MOUTH = slice(48, 68)
BROWS = slice(17, 27)
JAW = slice(5, 12)
MOUTH_DROP = 10.0  # pixels the mouth and chin move down from neutral to peak
BROW_RISE = 5.0


@functools.cache
def neutral_face() -> tuple[np.ndarray, np.ndarray]:
    """A 192×192 crop of the astronaut's face and its 68 landmarks."""
    image = np.ascontiguousarray(data.astronaut()[30:222, 126:318])
    return image, faces.face_landmarks(image)


@functools.cache
def peak_face() -> tuple[np.ndarray, np.ndarray]:
    """The neutral face with the mouth and jaw pulled down and the brows raised (a 'surprise')."""
    image, landmarks = neutral_face()
    moved = landmarks.copy()
    moved[MOUTH, 1] += MOUTH_DROP
    moved[JAW, 1] += MOUTH_DROP
    moved[BROWS, 1] -= BROW_RISE
    border = morph.border_points(*image.shape[:2])
    warped = morph.warp_to_shape(image, np.concatenate([landmarks, border]), np.concatenate([moved, border]))
    return np.clip(np.rint(warped), 0, 255).astype(np.uint8), moved


def region(landmarks: np.ndarray, margin: int = 2) -> tuple[slice, slice]:
    """Rows and columns of the box around `landmarks`."""
    low, high = np.floor(landmarks.min(axis=0)).astype(int), np.ceil(landmarks.max(axis=0)).astype(int)
    return slice(low[1] - margin, high[1] + margin), slice(low[0] - margin, high[0] + margin)


def test_first_and_last_frames_are_the_key_images():
    (neutral, neutral_marks), (peak, peak_marks) = neutral_face(), peak_face()
    frames = morph.morph_sequence([neutral, peak], [neutral_marks, peak_marks], 8)
    assert len(frames) == 8 and all(frame.dtype == np.uint8 and frame.shape == neutral.shape for frame in frames)
    assert np.array_equal(frames[0], neutral) and np.array_equal(frames[-1], peak)
    # The face changes step by step, not in one jump: every step differs, none holds most of the change.
    steps = [np.abs(b.astype(int) - a).mean() for a, b in zip(frames, frames[1:])]
    assert min(steps) > 0 and max(steps) < 0.5 * sum(steps)


def test_motion_vectors_point_where_the_landmarks_move(tmp_path):
    (neutral, neutral_marks), (peak, peak_marks) = neutral_face(), peak_face()
    frames = morph.morph_sequence([neutral, peak], [neutral_marks, peak_marks], 8)
    video = read_compressed(write_video(tmp_path / "morph.mp4", frames, fps=25), accumulate=True)
    vertical = video.motion_vectors[-1, 1].astype(float)  # dst − src: down is positive
    chin = region(neutral_marks[JAW] + (0, MOUTH_DROP / 2))
    brows = region(neutral_marks[BROWS] - (0, BROW_RISE / 2))
    assert vertical[chin].mean() > MOUTH_DROP / 4
    assert vertical[brows].mean() < -BROW_RISE / 4


def test_align_to_registers_a_shifted_photo_and_keeps_an_aligned_one():
    neutral, marks = neutral_face()
    same, same_marks = morph.align_to(neutral, marks, marks)
    assert same is neutral and np.allclose(same_marks, marks)
    shifted = np.roll(neutral, (6, -4), axis=(0, 1))
    aligned, aligned_marks = morph.align_to(shifted, marks + (-4, 6), marks)
    assert np.allclose(aligned_marks, marks, atol=1e-6)
    inner = (slice(20, -20), slice(20, -20))
    assert np.abs(aligned[inner].astype(int) - neutral[inner]).mean() < 1.0


def test_bad_key_images_are_refused():
    neutral, marks = neutral_face()
    with pytest.raises(ConfigError, match="two or more key images"):
        morph.morph_sequence([neutral], [marks], 8)
    with pytest.raises(ConfigError, match="fewer than"):
        morph.morph_sequence([neutral, neutral, neutral], [marks, marks, marks], 2)


def test_prepare_pairs_makes_moving_clips_per_subject(tmp_path):
    (neutral, _), (peak, _) = neutral_face(), peak_face()
    root = tmp_path / "pairs"
    for folder in ("neutral", "surprise", "err"):
        (root / folder).mkdir(parents=True)
    for subject, flip in (("S001", False), ("S002", True)):
        def save(image: np.ndarray, path: str) -> None:
            Image.fromarray(image[:, ::-1] if flip else image).save(root / path)

        save(neutral, f"neutral/{subject}_001_00000001.png")
        save(peak, f"surprise/{subject}_001_00000009.png")
    Image.fromarray(neutral).save(root / "err" / "S001_002_00000001.png")
    Image.fromarray(peak).save(root / "surprise" / "S003_001_00000009.png")  # no neutral of S003
    report = prepare_dataset(root, "pairs", tmp_path / "out", size=64, crop_faces=False, folds=2, morph_frames=10)
    manifest = read_manifest(tmp_path / "out")
    assert sorted(clip.subject for clip in manifest.clips) == ["S001", "S002"]
    assert {clip.label for clip in manifest.clips} == {"surprise"} and manifest.classes == ["surprise"]
    assert all(clip.num_frames == 10 and clip.apex_index == 9 for clip in manifest.clips)
    reasons = {item.source: item.reason for item in report.skipped}
    assert "no neutral image of subject S003" in reasons["surprise/S003_001_00000009.png"]
    assert "names no expression" in reasons["err"]
    clip = next(clip for clip in manifest.clips if clip.subject == "S001")
    video = read_compressed(tmp_path / "out" / clip.path, accumulate=True)
    assert video.iframe.shape == (64, 64, 3) and np.abs(video.motion_vectors[-1]).max() > 0
    # The last frame is the peak photo, registered onto the neutral one's framing, up to resizing and coding.
    registered, _ = morph.align_to(peak, faces.face_landmarks(peak), faces.face_landmarks(neutral))
    expected = faces.crop(registered, faces.center_box(*peak.shape[:2]), 64).astype(int)
    apex = warp(video.iframe, video.motion_vectors[-1]).astype(int) + video.residuals[-1]  # warp(I, T) + Δ
    assert np.abs(apex - expected).mean() < 4


def test_prepare_pairs_with_the_apex_in_the_middle_returns_to_neutral(tmp_path):
    (neutral, _), (peak, _) = neutral_face(), peak_face()
    for folder, image, name in (("neutral", neutral, "S001_001_00000001"), ("happy", peak, "S001_001_00000009"),
                                ("neutral", neutral[:, ::-1], "S002_001_00000001"), ("happy", peak[:, ::-1], "S002_001_00000009")):
        (tmp_path / "pairs" / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(image)).save(tmp_path / "pairs" / folder / f"{name}.png")
    prepare_dataset(tmp_path / "pairs", "pairs", tmp_path / "out", size=64, crop_faces=False, folds=2, morph_frames=6, apex="middle")
    clip = read_manifest(tmp_path / "out").clips[0]
    assert clip.num_frames == 11 and clip.apex_index == 5
    frames = read_frames(tmp_path / "out" / clip.path).astype(int)
    assert np.abs(frames[0] - frames[-1]).mean() < 2  # back to the neutral face
    assert np.abs(frames[5] - frames[0]).mean() > 3 * np.abs(frames[0] - frames[-1]).mean()
    with pytest.raises(ConfigError, match="--apex applies to --dataset pairs only"):
        prepare_dataset(tmp_path / "pairs", "folder", tmp_path / "out2", apex="middle", subject_pattern="(?P<subject>.*)")


def test_an_unreadable_second_crop_does_not_stop_the_scan(tmp_path):
    (neutral, _), (peak, _) = neutral_face(), peak_face()
    root = tmp_path / "pairs"
    for folder in ("neutral", "sad"):
        (root / folder).mkdir(parents=True)
    for subject, image in (("S001", neutral), ("S002", neutral[:, ::-1])):
        Image.fromarray(np.ascontiguousarray(image)).save(root / "neutral" / f"{subject}_001_000000010.png")
        (root / "neutral" / f"{subject}_001_000000011.png").write_bytes(b"not an image")
        Image.fromarray(np.ascontiguousarray(peak if subject == "S001" else peak[:, ::-1])).save(root / "sad" / f"{subject}_001_00000009.png")
    scan = pairs.scan(root)
    assert [clip.frames[0].name for clip in scan.clips] == ["S001_001_000000010.png", "S002_001_000000010.png"]


def test_prepare_pairs_lists_broken_symlinks_and_prepares_the_rest(tmp_path):
    (neutral, _), (peak, _) = neutral_face(), peak_face()
    root = tmp_path / "pairs"
    for folder in ("neutral", "surprise"):
        (root / folder).mkdir(parents=True)
    for subject, flip in (("S001", False), ("S002", True)):
        Image.fromarray(np.ascontiguousarray(neutral[:, ::-1] if flip else neutral)).save(root / "neutral" / f"{subject}_001_00000001.png")
        Image.fromarray(np.ascontiguousarray(peak[:, ::-1] if flip else peak)).save(root / "surprise" / f"{subject}_001_00000009.png")
    (root / "surprise" / "S003_001_00000009.png").symlink_to(tmp_path / "deleted.png")
    (root / "surprise" / "S004_001_00000009.png").symlink_to("S004_001_00000009.png")
    (root / "neutral" / "S003_001_00000001.png").symlink_to(tmp_path / "deleted.png")
    report = prepare_dataset(root, "pairs", tmp_path / "out", size=64, crop_faces=False, folds=2, morph_frames=4)
    assert sorted(clip.subject for clip in read_manifest(tmp_path / "out").clips) == ["S001", "S002"]
    reasons = {item.source: item.reason for item in report.skipped}
    assert reasons["surprise/S003_001_00000009.png"].startswith("dangling symlink to ")
    assert reasons["neutral/S003_001_00000001.png"].startswith("dangling symlink to ")
    assert reasons["surprise/S004_001_00000009.png"] == "symlink loop"
