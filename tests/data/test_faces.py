"""Face detection, alignment and the fixed per-clip crop, on skimage's astronaut (a real face)."""

from __future__ import annotations

import math

import av
from av.video.frame import PictureType
import cv2
import dlib
import numpy as np
import pytest
from skimage import data
from skimage.registration import phase_cross_correlation

from cvfer.codec import read_compressed
from cvfer.codec.writer import write_video
from cvfer.data import faces
from cvfer.data.datasets.common import SourceClip, Skipped
from cvfer.data.datasets import prepare_dataset
from cvfer.data.datasets.prepare import CropSettings, prepare_clip
from cvfer.data.manifest import read_manifest

ASTRONAUT = data.astronaut()
FACE_CENTER = (222, 126)  # centre of the astronaut's face in the 512×512 image, by eye
MOTION = (3, 2)  # pixels per frame (x, y) of the moving test clip
NUM_FRAMES = 8


def moving_face_clip() -> list[np.ndarray]:
    """8 frames of 320×240: the astronaut's head on grey, moving by MOTION each frame."""
    patch = ASTRONAUT[30:230, 110:330]
    frames = []
    for t in range(NUM_FRAMES):
        canvas = np.full((240, 320, 3), 128, np.uint8)
        top, left = 10 + MOTION[1] * t, 30 + MOTION[0] * t
        canvas[top : top + patch.shape[0], left : left + patch.shape[1]] = patch
        frames.append(canvas)
    return frames


def test_hog_detector_finds_the_astronaut():
    box = faces.detect_face(ASTRONAUT)
    assert box is not None
    assert math.hypot(box.center_x - FACE_CENTER[0], box.center_y - FACE_CENTER[1]) < 20
    assert 100 < box.side < 200
    assert abs(box.angle) < 0.2
    assert faces.detect_face(np.full((240, 320, 3), 128, np.uint8)) is None


def test_align_face_returns_an_upright_chip_and_raises_without_a_face():
    chip = faces.align_face(ASTRONAUT, size=96)
    assert chip.shape == (96, 96, 3) and chip.dtype == np.uint8
    # The aligned chip is itself a detectable face, centred.
    again = faces.detect_face(np.pad(chip, ((48, 48), (48, 48), (0, 0)), mode="edge"))
    assert again is not None and abs(again.center_x - 96) < 12 and abs(again.center_y - 96) < 12
    with pytest.raises(faces.FaceNotFoundError, match="no face"):
        faces.align_face(np.zeros((200, 200, 3), np.uint8))


def test_face_box_geometry_matches_dlib_chips():
    image = np.zeros((300, 300, 3), np.uint8)
    point = np.array([[180.0, 60.0]])
    image[60, 180] = 255
    box = faces.FaceBox(150.0, 100.0, 100.0, 0.3)
    chip = faces.crop(image, box, 101)
    ys, xs = np.nonzero(chip[..., 0] > 60)
    found = np.array([xs.mean(), ys.mean()]) - 50
    expected = box.to_box_coordinates(point)[0] * 101 / 100
    assert np.allclose(found, expected, atol=1.5)
    # corners() is the inverse of to_box_coordinates.
    assert np.allclose(np.abs(box.to_box_coordinates(box.corners())), 50)


def test_downscaled_crop_does_not_alias_fine_texture():
    rows, cols = np.mgrid[:400, :400]
    checkerboard = np.repeat((((rows + cols) % 2) * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    chip = faces.crop(checkerboard, faces.FaceBox(200, 200, 380, 0.0), 64)  # the chip's footprint lies inside
    assert abs(chip.mean() - 127.5) < 2 and chip.std() < 4  # plain bilinear sampling of this box: std ≈ 16


def _whole_grid_chip(image: np.ndarray, box: faces.FaceBox, size: int) -> np.ndarray:
    """`faces.crop` as first written: the whole block grid around the footprint averaged, black outside the image."""
    extent = box.side * size / (size - 1)
    factor = int(extent / (1.5 * size))
    reach = extent / math.sqrt(2) + factor
    left, top = math.floor(box.center_x - reach), math.floor(box.center_y - reach)
    span = math.ceil(2 * reach / factor) * factor
    region = np.zeros((span, span, 3), np.uint8)
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + span, image.shape[1]), min(top + span, image.shape[0])
    if x0 < x1 and y0 < y1:
        region[y0 - top : y1 - top, x0 - left : x1 - left] = image[y0:y1, x0:x1]
    reduced = cv2.resize(region, (span // factor, span // factor), interpolation=cv2.INTER_AREA)
    center = ((box.center_x - left + 0.5) / factor - 0.5, (box.center_y - top + 0.5) / factor - 0.5)
    reduced_box = faces.FaceBox(*center, box.side / factor, box.angle)
    return faces.crop(reduced, reduced_box, size)  # a box under 3 pixels per chip pixel: no second reduction


@pytest.mark.parametrize("angle", [0.0, 0.3, -0.7])
@pytest.mark.parametrize("center", [(256.0, 250.5), (40.3, 300.8), (500.0, 20.0)])
def test_reduced_crop_averages_only_the_blocks_it_samples(angle, center):
    # Inside the frame (read straight from it) and across its edges (black-padded): the same chip, bit for bit,
    # as averaging the whole grid of blocks around the footprint.
    box = faces.FaceBox(*center, 420.0, angle)
    chip = faces.crop(ASTRONAUT, box, 64)
    assert np.array_equal(chip, _whole_grid_chip(ASTRONAUT, box, 64))
    outside = (chip == 0).all(axis=2).mean()
    assert (outside > 0.2) == (center != (256.0, 250.5))


def test_shipped_hog_detector_is_dlibs_own():
    # The binary copy loads in a millisecond instead of dlib's 1-2 s parse, and finds exactly the same faces.
    assert faces.HOG_DETECTOR_FILE.is_file()
    shipped, builtin = faces._detector(), dlib.get_frontal_face_detector()
    for upsample in (0, 1):
        rects, scores, _ = shipped.run(ASTRONAUT, upsample)
        expected, expected_scores, _ = builtin.run(ASTRONAUT, upsample)
        assert list(rects) == list(expected) and scores == pytest.approx(expected_scores)


def test_same_clip_at_two_resolutions_gets_the_same_crop():
    """640×480 and the same frames at 320×240: detection runs at one size for both, so the clip box (in
    pixels of the 64-px chip) and the chips agree."""
    large = []
    for t in range(4):
        canvas = np.full((480, 640, 3), 128, np.uint8)
        top, left = 20 + 4 * t, 60 + 6 * t
        canvas[top : top + 400, left : left + 400] = ASTRONAUT[:400, 40:440]
        large.append(canvas)
    small = [cv2.resize(frame, (320, 240), interpolation=cv2.INTER_AREA) for frame in large]
    large_box = faces.track_face(large, detect_every=2).clip_box
    small_box = faces.track_face(small, detect_every=2).clip_box
    chip_pixel = large_box.side / 64
    offsets = np.array([
        2 * small_box.center_x + 0.5 - large_box.center_x,  # pixel centres: x_large = 2 x_small + 0.5
        2 * small_box.center_y + 0.5 - large_box.center_y,
        2 * small_box.side - large_box.side,
    ]) / chip_pixel
    assert np.abs(offsets).max() < 1, offsets
    assert abs(large_box.angle - small_box.angle) * 32 < 1  # corner displacement, in chip pixels
    chips = [np.stack([faces.crop(frame, box, 64) for frame in frames]).astype(float)
             for frames, box in ((large, large_box), (small, small_box))]
    assert np.abs(chips[0] - chips[1]).mean() < 5  # of 255; the chip of a box moved by 2 chip pixels differs by 22


def test_union_box_holds_every_box():
    boxes = [faces.FaceBox(100, 100, 60, 0.2), faces.FaceBox(130, 90, 70, 0.25), faces.FaceBox(90, 140, 50, 0.1)]
    union = faces.union_box(boxes)
    assert union.angle == boxes[0].angle
    assert all(union.contains(box) for box in boxes)
    assert not faces.FaceBox(union.center_x, union.center_y, union.side * 0.9, union.angle).contains(boxes[1])


def test_track_face_follows_known_motion_with_one_fixed_box():
    frames = moving_face_clip()
    track = faces.track_face(frames, detect_every=3)
    assert track is not None and track.num_frames == NUM_FRAMES
    assert [index for index, _ in track.detections] == [0, 3, 6, 7]
    first_index, first = track.detections[0]
    for index, box in track.detections[1:]:
        moved = (box.center_x - first.center_x, box.center_y - first.center_y)
        assert np.allclose(moved, (MOTION[0] * index, MOTION[1] * index), atol=3), (index, moved)
        assert track.clip_box.contains(box)
    # The crop box is fixed, so inside the crops the face moves by the known motion (scaled).
    size = 128
    start, end = (faces.crop(frames[i], track.clip_box, size).mean(axis=2) for i in (0, NUM_FRAMES - 1))
    shift, _, _ = phase_cross_correlation(start, end, upsample_factor=4)
    scale = size / track.clip_box.side
    expected = -np.array([MOTION[1], MOTION[0]]) * (NUM_FRAMES - 1) * scale
    assert np.allclose(shift, expected, atol=1.5), (shift, expected)


def test_prepared_face_clip_is_mic_format(tmp_path):
    source = write_video(tmp_path / "face.avi", moving_face_clip(), fps=25)
    clip = SourceClip("s1/face", source, "s1", "happiness", "last", "face.avi")
    record = prepare_clip(clip, tmp_path / "out", "folder", CropSettings(size=64, detect_every=4))
    assert not isinstance(record, Skipped), record
    assert (record.path, record.num_frames, record.apex_index) == ("clips/s1/face.mp4", NUM_FRAMES, NUM_FRAMES - 1)
    with av.open(str(tmp_path / "out" / record.path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "mpeg4"
        frames = list(container.decode(stream))
    assert [(f.width, f.height) for f in frames] == [(64, 64)] * NUM_FRAMES
    assert "".join(PictureType(f.pict_type).name for f in frames) == "I" + "P" * (NUM_FRAMES - 1)
    assert read_compressed(tmp_path / "out" / record.path).frame_types == "I" + "P" * (NUM_FRAMES - 1)
    # The face fills the crop: its centre is skin-coloured, brighter than the grey background.
    iframe = frames[0].to_ndarray(format="rgb24")
    middle = iframe[24:40, 24:40].astype(float)
    assert middle[..., 0].mean() > middle[..., 2].mean() + 20
    # The identity encoder re-aligns the I frame of a prepared clip: the face is still found there.
    assert faces.align_face(iframe, size=64).shape == (64, 64, 3)


def test_clip_without_a_face_is_skipped_with_the_reason(tmp_path):
    source = write_video(tmp_path / "empty.mp4", [np.full((96, 128, 3), 90, np.uint8)] * 4)
    clip = SourceClip("s1/empty", source, "s1", "anger", "last", "empty.mp4")
    result = prepare_clip(clip, tmp_path / "out", "folder", CropSettings(size=32))
    assert isinstance(result, Skipped) and "no face found" in result.reason and result.source == "empty.mp4"
    assert not (tmp_path / "out" / "clips" / "s1" / "empty.mp4").exists()


def test_prepare_dataset_crops_faces_and_lists_faceless_clips(tmp_path):
    root = tmp_path / "mine"
    (root / "happy").mkdir(parents=True)
    write_video(root / "happy" / "ann_1.mp4", moving_face_clip()[:4])
    write_video(root / "happy" / "bob_1.mp4", moving_face_clip()[4:])
    write_video(root / "happy" / "cy_1.mp4", [np.full((96, 128, 3), 90, np.uint8)] * 3)
    report = prepare_dataset(root, "folder", tmp_path / "out", size=32, subject_pattern=r"^(?P<subject>[a-z]+)_", folds=2)
    manifest = read_manifest(tmp_path / "out")
    assert [(clip.path, clip.subject, clip.num_frames) for clip in manifest.clips] == [
        ("clips/happy/ann_1.mp4", "ann", 4),
        ("clips/happy/bob_1.mp4", "bob", 4),
    ]
    assert [(item.source, item.reason) for item in report.skipped] == [("happy/cy_1.mp4", "no face found in any checked frame")]
    assert manifest.meta["crop"] == "face"
    side = float(manifest.clips[0].extra["crop_box"].split()[2])
    assert 130 < side < 200  # the padded face box of the 87-pixel face, not the whole 320-pixel frame
