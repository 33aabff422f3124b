"""ClipDataset on real tiny MPEG-4 clips: layout and scaling of every batch key, apex, z_I once, bad clips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.io import imsave

from cvfer.codec import read_compressed, read_frames, write_video
from cvfer.data.dataset import ClipDataset
from cvfer.data.manifest import ClipRecord, read_manifest, write_manifest
from cvfer.errors import DatasetError

SIZE, FRAMES, T = 16, 6, 3


class CountingEncoder:
    """A stand-in face recogniser: z_I = mean colour repeated; counts the images it encodes."""

    dim = 6

    def __init__(self):
        self.encoded = 0

    def encode(self, images: np.ndarray) -> np.ndarray:
        self.encoded += len(images)
        return np.tile(images.reshape(len(images), -1, 3).mean(1) / 255, (1, 2)).astype(np.float32)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    records = []
    for number, (subject, label) in enumerate([("b", "happiness"), ("a", "anger"), ("c", "anger")]):
        base = rng.integers(0, 256, size=(SIZE, SIZE, 3)).astype(np.uint8)
        frames = [np.roll(base, shift, axis=1) for shift in range(FRAMES)]
        path = f"clips/{number}.mp4"
        write_video(root / path, frames)
        extra = {}
        if number == 0:
            imsave(root / "apex0.png", frames[-1], check_contrast=False)
            extra = {"apex_path": "apex0.png"}
        records.append(ClipRecord(path, subject, label, FRAMES - 2, FRAMES, "test", extra))
    (root / "clips" / "broken.mp4").write_bytes(b"\x00\x00\x01\xb3 not really mpeg")
    records.append(ClipRecord("clips/broken.mp4", "a", "anger", 1, FRAMES, "test"))
    write_video(root / "clips" / "small.mp4", [np.zeros((SIZE // 2, SIZE // 2, 3), np.uint8)] * FRAMES)
    records.append(ClipRecord("clips/small.mp4", "c", "anger", 1, FRAMES, "test"))
    write_manifest(root, records, ["anger", "happiness"], {"size": [SIZE, SIZE]})
    return root


def test_every_batch_key_has_the_documented_layout_and_scale(clip_folder):
    manifest = read_manifest(clip_folder)
    inputs = ("residuals", "motion_vectors", "iframe", "frames", "apex", "identity")
    encoder = CountingEncoder()
    with pytest.warns(UserWarning) as caught:
        dataset = ClipDataset(manifest, [clip.path for clip in manifest.clips], inputs, T, encoder, progress=False)
    assert len(dataset) == 3 and [path for path, _ in dataset.skipped] == ["clips/broken.mp4", "clips/small.mp4"]
    messages = [str(warning.message) for warning in caught]
    assert any("broken.mp4: skipped" in message for message in messages)
    assert any("small.mp4: skipped (wrong size: apex (8, 8, 3), the other 3 clips (16, 16, 3))" in m for m in messages)
    assert encoder.encoded == 3  # z_I once per clip, at load time
    batch = dataset.batch([0, 1])
    assert batch["residuals"].shape == (2, T, 3, SIZE, SIZE) and batch["residuals"].dtype == torch.float32
    assert batch["motion_vectors"].shape == (2, T, 2, SIZE, SIZE)
    assert batch["iframe"].shape == batch["apex"].shape == (2, 3, SIZE, SIZE)
    assert batch["frames"].shape == (2, T, 3, SIZE, SIZE) and batch["identity"].shape == (2, 6)
    assert batch["label"].tolist() == [1, 0] and batch["subject"].tolist() == [1, 0]  # subjects sorted: a, b, c
    video = read_compressed(manifest.video_path(manifest.clips[1]), num_frames=T)
    torch.testing.assert_close(batch["residuals"][1], torch.from_numpy(video.residuals).permute(0, 3, 1, 2).float() / 255)
    torch.testing.assert_close(batch["motion_vectors"][1], torch.from_numpy(video.motion_vectors).float() / 16)
    torch.testing.assert_close(batch["iframe"][1], torch.from_numpy(video.iframe).permute(2, 0, 1).float() / 255)
    assert float(batch["residuals"].abs().max()) <= 1 and 0 <= float(batch["frames"].min()) <= float(batch["frames"].max()) <= 1
    for key in ("residuals", "frames", "iframe", "apex"):
        assert batch[key].is_contiguous(), key
    item = dataset[2]
    assert item["iframe"].shape == (3, SIZE, SIZE) and int(item["label"]) == 0


def test_the_one_clip_of_another_size_is_skipped_even_when_loaded_first(clip_folder):
    manifest = read_manifest(clip_folder)
    paths = ["clips/small.mp4", "clips/0.mp4", "clips/1.mp4", "clips/2.mp4"]
    with pytest.warns(UserWarning, match=r"small\.mp4: skipped \(wrong size: iframe \(8, 8, 3\), the other 3 clips"):
        dataset = ClipDataset(manifest, paths, ("iframe", "residuals"), T, progress=False)
    assert dataset.paths == paths[1:] and [path for path, _ in dataset.skipped] == ["clips/small.mp4"]
    assert dataset.frame_size == (SIZE, SIZE)


def test_apex_comes_from_the_png_else_from_the_apex_frame(clip_folder):
    manifest = read_manifest(clip_folder)
    dataset = ClipDataset(manifest, ["clips/0.mp4", "clips/1.mp4"], ("apex",), T, progress=False)
    from skimage.io import imread

    png = torch.from_numpy(imread(clip_folder / "apex0.png")).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(dataset[0]["apex"], png)
    decoded = read_frames(clip_folder / "clips/1.mp4", indices=[FRAMES - 2])[0]
    torch.testing.assert_close(dataset[1]["apex"], torch.from_numpy(decoded).permute(2, 0, 1).float() / 255)
    assert set(dataset[0]) == {"apex", "label", "subject"}


def test_unusable_requests_are_dataset_errors(clip_folder):
    manifest = read_manifest(clip_folder)
    with pytest.raises(DatasetError, match="no identity encoder"):
        ClipDataset(manifest, ["clips/0.mp4"], ("identity",), T, progress=False)
    with pytest.raises(DatasetError, match="absent from manifest.csv"):
        ClipDataset(manifest, ["clips/nope.mp4"], ("iframe",), T, progress=False)
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match="none of the 1 clips could be read"):
        ClipDataset(manifest, ["clips/broken.mp4"], ("iframe",), T, progress=False)


def test_cache_dir_stores_decoded_inputs_for_the_next_load(clip_folder, tmp_path):
    manifest = read_manifest(clip_folder)
    cache = tmp_path / "cache"
    first = ClipDataset(manifest, ["clips/1.mp4"], ("residuals", "motion_vectors"), T, cache_dir=cache, progress=False)
    assert len(list(cache.rglob("*.npz"))) == 1
    second = ClipDataset(manifest, ["clips/1.mp4"], ("residuals", "motion_vectors"), T, cache_dir=cache, progress=False)
    for key in ("residuals", "motion_vectors"):
        assert torch.equal(first[0][key], second[0][key])
