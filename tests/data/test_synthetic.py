"""The synthetic benchmark: determinism, MIC format, apex placement, identity dominance, AU semantics."""

from __future__ import annotations

import itertools

import av
from av.video.frame import PictureType
import numpy as np
import pytest

from cvfer.cli import main
from cvfer.data.manifest import EXPRESSIONS, read_manifest
from cvfer.data.splits import check_subject_independent, read_splits
from cvfer.data.synthetic import (
    EMOTION_AUS,
    emotion_action_units,
    generate_benchmark,
    identity_images,
    preset_config,
    render_clip,
    render_face,
    sample_identity,
)
from cvfer.data.synthetic.benchmark import benchmark_identity, subject_style
from cvfer.data.synthetic.expressions import AU_INDEX
from cvfer.data.synthetic.pretrain import pretrain_identity
from cvfer.errors import ConfigError

SMALL = dict(num_subjects=3, num_frames=8, size=32, protocol="mixed")
STILL = dict(head_motion=0.0, illumination=0.0, noise=0.0)


def decode(path) -> tuple[np.ndarray, str]:
    """Decoded RGB frames and the picture type of each frame."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return np.stack([frame.to_ndarray(format="rgb24") for frame in frames]), "".join(PictureType(int(frame.pict_type)).name for frame in frames)


@pytest.fixture(scope="module")
def still_dataset(tmp_path_factory):
    return generate_benchmark(tmp_path_factory.mktemp("still"), "tiny", seed=3, progress=False, **SMALL, **STILL)


@pytest.fixture(scope="module")
def noisy_dataset(tmp_path_factory):
    return generate_benchmark(tmp_path_factory.mktemp("noisy"), "tiny", seed=5, progress=False, **SMALL)


def test_dataset_folder_is_complete(noisy_dataset):
    manifest = read_manifest(noisy_dataset.root)
    assert manifest.classes == list(EXPRESSIONS)
    assert len(manifest.clips) == 3 * 7
    assert manifest.meta["knobs"]["num_frames"] == 8 and manifest.meta["seed"] == 5
    for clip in manifest.clips:
        assert (manifest.root / clip.path).is_file()
        assert (manifest.root / clip.extra["apex_path"]).is_file()
        assert clip.num_frames == 8 and clip.protocol in ("ckplus", "mmi")
    splits = read_splits(manifest.root)
    assert len(splits.folds) == 3
    check_subject_independent(manifest, splits)


def test_same_seed_same_bytes_other_seed_differs(tmp_path, noisy_dataset):
    again = generate_benchmark(tmp_path / "again", "tiny", seed=5, progress=False, **SMALL)
    for first, second in zip(noisy_dataset.clips, again.clips, strict=True):
        assert first == second
        assert (noisy_dataset.root / first.path).read_bytes() == (again.root / second.path).read_bytes()
    assert (noisy_dataset.root / "splits.json").read_bytes() == (again.root / "splits.json").read_bytes()
    other = generate_benchmark(tmp_path / "other", "tiny", seed=6, progress=False, **SMALL)
    first_path = noisy_dataset.clips[0].path
    assert (noisy_dataset.root / first_path).read_bytes() != (other.root / first_path).read_bytes()


def test_workers_give_the_same_output(tmp_path, still_dataset):
    parallel = generate_benchmark(tmp_path / "par", "tiny", seed=3, workers=2, progress=False, **SMALL, **STILL)
    for clip in still_dataset.clips[:4]:
        assert (still_dataset.root / clip.path).read_bytes() == (parallel.root / clip.path).read_bytes()


def test_clips_are_mpeg4_with_one_i_frame(noisy_dataset):
    for clip in noisy_dataset.clips[:5]:
        with av.open(str(noisy_dataset.root / clip.path)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "mpeg4"
            assert (stream.codec_context.width, stream.codec_context.height) == (32, 32)
        _, types = decode(noisy_dataset.root / clip.path)
        assert types == "I" + "P" * (clip.num_frames - 1)


def test_rendered_apex_is_the_most_deformed_frame():
    config = preset_config("tiny", num_frames=12, size=32, **STILL)
    identity = benchmark_identity(0, 0)
    style = subject_style(config, seed=0, subject_index=0)
    for protocol, emotion in itertools.product(("ckplus", "mmi"), EXPRESSIONS):
        rng = np.random.default_rng(7)
        frames, apex, ramp = render_clip(config, identity, style.patterns[emotion], 1.0, protocol, rng)
        change = np.abs(frames.astype(float) - frames[0]).mean(axis=(1, 2, 3))
        assert int(np.argmax(ramp)) == apex and ramp[apex] == pytest.approx(1.0)
        assert int(np.argmax(change)) == apex, (protocol, emotion)
        assert np.all(np.diff(ramp[: apex + 1]) >= 0) and np.all(np.diff(ramp[apex:]) <= 0)
        if protocol == "mmi":
            assert ramp[-1] == 0 and np.array_equal(frames[-1], frames[0])


def test_decoded_apex_matches_the_manifest(still_dataset):
    protocols = set()
    for clip in still_dataset.clips:
        frames, _ = decode(still_dataset.root / clip.path)
        change = np.abs(frames.astype(float) - frames[0]).mean(axis=(1, 2, 3))
        # Up to compression error, no frame differs more from the neutral first frame than the apex.
        assert change[clip.apex_index] >= change.max() - 0.1, clip.path
        if clip.protocol == "ckplus":
            assert clip.apex_index == clip.num_frames - 1
        else:
            assert abs(clip.apex_index - (clip.num_frames - 1) / 2) <= 1.5
        protocols.add(clip.protocol)
    assert protocols == {"ckplus", "mmi"}


def test_apex_png_is_the_apex_frame(noisy_dataset):
    from PIL import Image

    clip = noisy_dataset.clips[2]
    frames, _ = decode(noisy_dataset.root / clip.path)
    apex = np.asarray(Image.open(noisy_dataset.root / clip.extra["apex_path"]).convert("RGB")).astype(float)
    errors = [np.abs(frame - apex).mean() for frame in frames.astype(float)]
    assert int(np.argmin(errors)) == clip.apex_index
    assert errors[clip.apex_index] < 4


def test_identity_changes_pixels_far_more_than_expression(noisy_dataset):
    first_frames, apex_frames = {}, {}
    for clip in noisy_dataset.clips:
        frames, _ = decode(noisy_dataset.root / clip.path)
        first_frames.setdefault(clip.subject, frames[0].astype(float))
        apex_frames.setdefault(clip.subject, []).append((frames[0].astype(float), frames[clip.apex_index].astype(float)))
    between = np.mean([np.abs(a - b).mean() for a, b in itertools.combinations(first_frames.values(), 2)])
    within = np.mean([np.abs(neutral - apex).mean() for pairs in apex_frames.values() for neutral, apex in pairs])
    assert between >= 3 * within > 0


def test_action_units_move_their_own_face_region():
    identity = sample_identity(np.random.default_rng(1))
    neutral = render_face(identity, size=64).astype(float)
    smile = np.abs(render_face(identity, {12: 1.0}, size=64) - neutral)
    brows = np.abs(render_face(identity, {1: 1.0, 2: 1.0}, size=64) - neutral)
    upper, lower = slice(0, 30), slice(36, 64)
    assert smile[lower].sum() > 10 * max(smile[upper].sum(), 1.0)
    assert brows[upper].sum() > 10 * max(brows[lower].sum(), 1.0)
    left_only = np.abs(render_face(identity, {12: (1.0, 0.0)}, size=64) - neutral)
    assert left_only[:, :32].sum() > 5 * max(left_only[:, 32:].sum(), 1.0)


def test_subject_style_recruits_the_table_aus():
    config = preset_config("tiny", au_dropout=0.0, confusion=0.0, asymmetry=0.0, au_jitter=0.0)
    style = subject_style(config, seed=0, subject_index=0)
    for emotion, core in EMOTION_AUS.items():
        active = {code for code in core if style.patterns[emotion][AU_INDEX[code]].max() > 0}
        assert active == set(core), emotion
    contempt = style.patterns["contempt"]
    assert (contempt[:, 0] == 0).all() != (contempt[:, 1] == 0).all()
    dropping = subject_style(preset_config("tiny", au_dropout=1.0, confusion=0.0), seed=0, subject_index=0)
    for emotion, core in EMOTION_AUS.items():
        active = {code for code in core if dropping.patterns[emotion][AU_INDEX[code]].max() > 0}
        assert len(active) == len(core) - 1, emotion


def test_identity_images_use_identities_outside_every_benchmark():
    images, ids = identity_images(3, 2, size=32, seed=0)
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8
    assert ids.tolist() == [0, 0, 1, 1, 2, 2]
    assert not np.array_equal(images[0], images[1])
    benchmark = [benchmark_identity(seed, index).as_vector() for seed in range(3) for index in range(20)]
    pretrain = [pretrain_identity(seed, index).as_vector() for seed in range(3) for index in range(20)]
    distances = np.abs(np.array(benchmark)[:, None] - np.array(pretrain)[None]).sum(axis=2)
    assert distances.min() > 0.1
    again, _ = identity_images(3, 2, size=32, seed=0)
    assert np.array_equal(images, again)


def test_bad_knobs_are_config_errors(tmp_path, still_dataset):
    with pytest.raises(ConfigError, match="even"):
        preset_config("tiny", size=33)
    with pytest.raises(ConfigError, match="unknown synthetic preset"):
        preset_config("huge")
    with pytest.raises(ConfigError, match="unknown synthetic knob"):
        preset_config("tiny", colour=1)
    with pytest.raises(ConfigError, match="already holds a dataset"):
        generate_benchmark(still_dataset.root, "tiny", progress=False, **SMALL)
    with pytest.raises(ConfigError, match="unknown action unit"):
        render_face(sample_identity(np.random.default_rng(0)), {3: 1.0})
    assert emotion_action_units("neutral").sum() == 0


def test_cli_synth_writes_a_dataset(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["synth", str(out), "--seed", "1", "--num-subjects", "2", "--num-frames", "4", "--size", "32", "--quiet"]
    assert main([*argv, "--neutral", "--protocol", "mmi"]) == 0
    manifest = read_manifest(out)
    assert manifest.classes[-1] == "neutral" and len(manifest.clips) == 2 * 8
    assert {clip.protocol for clip in manifest.clips} == {"mmi"}
    assert "wrote 16 clips of 2 subjects" in capsys.readouterr().out
    assert main(argv) == 2
    assert "already holds a dataset" in capsys.readouterr().err
