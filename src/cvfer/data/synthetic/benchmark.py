"""The built-in synthetic face-video benchmark: `generate_benchmark(out, preset, seed, **knobs)`.

Each subject is a random identity with its own expression style (intensity, asymmetry, dropped or
optional AUs, one emotion blended with a confusable one). Each clip ramps from neutral to an apex
(CK+-like: apex last; MMI-like: apex mid-clip, back to neutral) under small head motion, lighting drift
and sensor noise, and is written as an MPEG-4 clip with a single GOP plus its apex frame as PNG.
Everything random is drawn from `np.random.SeedSequence(seed, spawn_key=(space, ...))`, so the
output depends only on the seed and the knobs, not on worker count or order.
"""

from __future__ import annotations

import io
import multiprocessing
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cvfer.codec.writer import write_video
from cvfer.data.manifest import EXPRESSIONS, ClipRecord, Manifest, write_manifest
from cvfer.data.splits import subject_kfold, write_splits
from cvfer.data.synthetic.expressions import (
    AU_CODES,
    AU_INDEX,
    CONFUSABLE,
    EMOTION_AUS,
    OPTIONAL_AUS,
    UNILATERAL_EMOTIONS,
    action_unit_array,
    intensity_ramp,
)
from cvfer.data.synthetic.render import IdentityParams, Lighting, Pose, render_face, sample_identity
from cvfer.errors import ConfigError
from cvfer.io import atomic_write_bytes

# Disjoint seed spaces: benchmark identities, subject styles and clips never share a stream with the
# identities of `identity_images` (PRETRAIN_SPACE).
BENCHMARK_SPACE, STYLE_SPACE, CLIP_SPACE, PRETRAIN_SPACE = 0, 1, 2, 3
NEUTRAL = "neutral"
PROTOCOLS = ("ckplus", "mmi", "mixed")


@dataclass(frozen=True)
class SynthConfig:
    """Size and hardness knobs of a synthetic benchmark (see docs/synthetic.md)."""

    num_subjects: int
    clips_per_class: int
    num_frames: int
    size: int = 64
    fps: float = 25.0
    protocol: str = "ckplus"  # ckplus | mmi | mixed (alternating per clip)
    include_neutral: bool = False
    expression_scale: float = 1.0  # multiplies every AU intensity
    intensity_min: float = 0.7  # a subject's expression intensity is uniform in [intensity_min, 1]
    asymmetry: float = 0.3  # one face side of a subject is weaker by up to this share
    au_dropout: float = 0.3  # chance a subject never recruits one of an emotion's core AUs
    confusion: float = 0.15  # chance a subject's emotion is blended with a confusable one
    au_jitter: float = 0.3  # per-subject gain of each AU is uniform in [1 - au_jitter, 1 + au_jitter / 2]
    head_motion: float = 1.0  # scales head translation/rotation (0 = still)
    illumination: float = 1.0  # scales per-clip lighting spread and within-clip drift (0 = fixed)
    # Lighting change within a clip, × illumination (1: gain ±8 %, light direction ±0.3 rad over the clip).
    # 0 by default: CK+'s frames are seconds apart under fixed lights, and a drift fills the residuals with
    # change that is not expression (a CNN on the apex residual: 44 % with drift 1, 55 % without, against 52 %
    # and 56 % on the apex frame; on real faces residual and frame give the same 91 %; docs/synthetic.md).
    lighting_drift: float = 0.0
    noise: float = 2.0  # sensor noise standard deviation in grey levels
    folds: int = 10  # subject-independent folds in splits.json (at most num_subjects)

    def classes(self) -> list[str]:
        """Class names in label order."""
        return [*EXPRESSIONS, NEUTRAL] if self.include_neutral else list(EXPRESSIONS)

    def validate(self) -> None:
        """Raise `ConfigError` on an impossible knob value."""
        checks = [
            (self.num_subjects >= 2, "num_subjects must be at least 2"),
            (self.clips_per_class >= 1, "clips_per_class must be at least 1"),
            (self.num_frames >= 3, "num_frames must be at least 3"),
            (self.size >= 16 and self.size % 2 == 0, "size must be an even number >= 16"),
            (self.fps > 0, "fps must be positive"),
            (self.protocol in PROTOCOLS, f"protocol must be one of {PROTOCOLS}"),
            (self.expression_scale > 0, "expression_scale must be positive"),
            (0 <= self.intensity_min <= 1, "intensity_min must be in [0, 1]"),
            (0 <= self.asymmetry <= 1, "asymmetry must be in [0, 1]"),
            (0 <= self.au_dropout <= 1, "au_dropout must be in [0, 1]"),
            (0 <= self.confusion <= 1, "confusion must be in [0, 1]"),
            (0 <= self.au_jitter <= 1, "au_jitter must be in [0, 1]"),
            (self.head_motion >= 0, "head_motion must be >= 0"),
            (self.illumination >= 0, "illumination must be >= 0"),
            (self.lighting_drift >= 0, "lighting_drift must be >= 0"),
            (self.noise >= 0, "noise must be >= 0"),
            (self.folds >= 2, "folds must be at least 2"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"synthetic benchmark: {message}", fix="see docs/synthetic.md for the knobs")


PRESETS: dict[str, SynthConfig] = {
    "tiny": SynthConfig(num_subjects=6, clips_per_class=1, num_frames=10, size=48),
    "small": SynthConfig(num_subjects=24, clips_per_class=2, num_frames=16, size=64),
    "full": SynthConfig(num_subjects=120, clips_per_class=3, num_frames=20, size=64),
}


@dataclass(frozen=True)
class SubjectStyle:
    """How one subject expresses: intensity and an apex AU array per emotion."""

    intensity: float
    patterns: dict[str, np.ndarray]


@dataclass(frozen=True)
class _ClipJob:
    index: int
    subject: str
    label: str
    protocol: str
    identity: IdentityParams
    pattern: np.ndarray
    intensity: float
    seed_key: tuple[int, ...]


def preset_config(preset: str, **knobs: Any) -> SynthConfig:
    """The preset's config with `knobs` (SynthConfig field names) overriding it; validated."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown synthetic preset {preset!r}", fix=f"use one of {sorted(PRESETS)}")
    known = {field.name for field in fields(SynthConfig)}
    unknown = sorted(set(knobs) - known)
    if unknown:
        raise ConfigError(f"unknown synthetic knob(s) {unknown}", fix=f"use some of {sorted(known)}")
    config = replace(PRESETS[preset], **knobs)
    config.validate()
    return config


def benchmark_identity(seed: int, subject_index: int) -> IdentityParams:
    """Identity of benchmark subject `subject_index` for `seed`."""
    return sample_identity(_rng(seed, BENCHMARK_SPACE, subject_index))


def subject_style(config: SynthConfig, seed: int, subject_index: int) -> SubjectStyle:
    """Draw a subject's expression style: which AUs it recruits for each emotion, and how strongly."""
    rng = _rng(seed, STYLE_SPACE, subject_index)
    intensity = rng.uniform(config.intensity_min, 1.0)
    weak_side = int(rng.integers(2))
    side_gain = np.ones(2)
    side_gain[weak_side] = 1 - rng.uniform(0, config.asymmetry)
    au_gain = rng.uniform(1 - config.au_jitter, 1 + config.au_jitter / 2, len(AU_CODES))
    contempt_side = int(rng.integers(2))
    prototypes = {}
    for emotion in EXPRESSIONS:
        weights = dict(EMOTION_AUS[emotion])
        if rng.random() < config.au_dropout and len(weights) > 1:
            del weights[sorted(weights)[rng.integers(len(weights))]]
        for code, weight in OPTIONAL_AUS[emotion].items():
            if rng.random() < 0.5:
                weights[code] = weight
        pattern = action_unit_array(weights)
        if emotion in UNILATERAL_EMOTIONS:
            pattern[:, 1 - contempt_side] = 0.0
        prototypes[emotion] = pattern
    patterns = {}
    for emotion in EXPRESSIONS:
        pattern = prototypes[emotion]
        if rng.random() < config.confusion:
            blend = rng.uniform(0.3, 0.6)
            pattern = (1 - blend) * pattern + blend * prototypes[CONFUSABLE[emotion]]
        patterns[emotion] = pattern * au_gain[:, None] * side_gain[None, :]
    patterns[NEUTRAL] = np.zeros((len(AU_CODES), 2))
    return SubjectStyle(intensity=float(intensity), patterns=patterns)


def render_clip(
    config: SynthConfig,
    identity: IdentityParams,
    pattern: np.ndarray,
    intensity: float,
    protocol: str,
    rng: np.random.Generator,
) -> tuple[np.ndarray, int, np.ndarray]:
    """Frames (T×H×W×3 uint8), apex index and per-frame ramp of one clip of `pattern` at `intensity`."""
    ramp, apex = intensity_ramp(config.num_frames, protocol, rng)
    apex_strength = intensity * rng.uniform(0.85, 1.0) * config.expression_scale
    time = np.linspace(0.0, 1.0, config.num_frames)
    motion = config.head_motion
    base = Pose(
        dx=rng.normal(0, 0.03) * motion,
        dy=rng.normal(0, 0.03) * motion,
        roll=rng.normal(0, 3.0) * motion,
        scale=1 + rng.normal(0, 0.03) * motion,
        yaw=rng.normal(0, 0.05) * motion,
    )
    # Smooth head motion: one slow sinusoid per pose parameter, at most about a pixel or two.
    frequency = rng.uniform(0.3, 1.0, 5)
    phase = rng.uniform(0, 2 * np.pi, 5)
    amplitude = np.array([0.025, 0.025, 1.5, 0.01, 0.03]) * motion
    wobble = amplitude[:, None] * np.sin(2 * np.pi * frequency[:, None] * time[None, :] + phase[:, None])
    light = config.illumination
    lighting = Lighting(
        gain=rng.uniform(1 - 0.15 * light, 1 + 0.08 * light),
        ambient=rng.uniform(0.65 - 0.15 * light, 0.7),
        side=rng.uniform(0, 0.6 * light),
        azimuth=rng.uniform(0, 2 * np.pi),
        tint=tuple(float(v) for v in np.clip(1 + rng.normal(0, 0.03 * light, 3), 0.8, 1.2)),
    )
    drift = light * config.lighting_drift  # drawn even when 0, so the other draws stay the same
    gain_drift = rng.uniform(-0.08, 0.08) * drift
    azimuth_drift = rng.uniform(-0.3, 0.3) * drift
    frames = np.empty((config.num_frames, config.size, config.size, 3), dtype=np.uint8)
    for t in range(config.num_frames):
        pose = Pose(
            dx=base.dx + wobble[0, t],
            dy=base.dy + wobble[1, t],
            roll=base.roll + wobble[2, t],
            scale=base.scale + wobble[3, t],
            yaw=base.yaw + wobble[4, t],
        )
        frame_lighting = replace(
            lighting, gain=lighting.gain * (1 + gain_drift * time[t]), azimuth=lighting.azimuth + azimuth_drift * time[t]
        )
        frames[t] = render_face(
            identity,
            pattern * (apex_strength * ramp[t]),
            pose,
            frame_lighting,
            config.size,
            noise_std=config.noise,
            rng=rng,
        )
    return frames, apex, ramp


def generate_benchmark(
    out: str | Path,
    preset: str = "tiny",
    seed: int = 0,
    *,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    **knobs: Any,
) -> Manifest:
    """Write a synthetic benchmark into `out`: clips/, apex/, manifest.csv, dataset.json, splits.json.

    `knobs` override the preset's `SynthConfig` fields. `workers` > 1 renders clips in processes;
    the result is the same for any worker count.
    """
    config = preset_config(preset, **knobs)
    if seed < 0:
        raise ConfigError(f"seed {seed} is negative", fix="use a seed >= 0")
    out = Path(out)
    if (out / "manifest.csv").exists():
        if not overwrite:
            raise ConfigError(f"{out} already holds a dataset", fix="choose a new folder or pass overwrite=True (--force)")
        for stale in [*out.glob("clips/*.mp4"), *out.glob("apex/*.png")]:
            stale.unlink()
    jobs = _clip_jobs(config, seed)
    records: list[ClipRecord | None] = [None] * len(jobs)
    bar = tqdm(total=len(jobs), desc=f"synth {preset}", unit="clip", disable=not progress)
    work = [(config, seed, job, str(out)) for job in jobs]
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for index, record in pool.imap_unordered(_make_clip, work, chunksize=4):
                records[index] = record
                bar.update()
    else:
        for item in work:
            index, record = _make_clip(item)
            records[index] = record
            bar.update()
    bar.close()
    clips = [record for record in records if record is not None]
    meta = {
        "source": "synthetic",
        "preset": preset,
        "seed": seed,
        "size": [config.size, config.size],
        "fps": config.fps,
        "knobs": asdict(config),
        "emotion_aus": {emotion: {str(code): w for code, w in aus.items()} for emotion, aus in EMOTION_AUS.items()},
    }
    write_manifest(out, clips, config.classes(), meta)
    manifest = Manifest(root=out, clips=clips, classes=config.classes(), meta=meta)
    write_splits(out, subject_kfold(manifest, k=min(config.folds, config.num_subjects), seed=seed))
    return manifest


def _clip_jobs(config: SynthConfig, seed: int) -> list[_ClipJob]:
    jobs = []
    classes = config.classes()
    for subject_index in range(config.num_subjects):
        identity = benchmark_identity(seed, subject_index)
        style = subject_style(config, seed, subject_index)
        subject = f"S{subject_index + 1:03d}"
        for class_index, label in enumerate(classes):
            for repeat in range(config.clips_per_class):
                if config.protocol == "mixed":
                    protocol = ("ckplus", "mmi")[(subject_index + class_index + repeat) % 2]
                else:
                    protocol = config.protocol
                jobs.append(
                    _ClipJob(
                        index=len(jobs),
                        subject=subject,
                        label=label,
                        protocol=protocol,
                        identity=identity,
                        pattern=style.patterns[label],
                        intensity=style.intensity,
                        seed_key=(CLIP_SPACE, subject_index, class_index, repeat),
                    )
                )
    return jobs


def _make_clip(item: tuple[SynthConfig, int, _ClipJob, str]) -> tuple[int, ClipRecord]:
    """Render, encode and record one clip (runs in a worker process when workers > 1)."""
    config, seed, job, out = item
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=job.seed_key))
    frames, apex, _ = render_clip(config, job.identity, job.pattern, job.intensity, job.protocol, rng)
    stem = f"{job.subject}_{job.label}_{job.seed_key[-1] + 1}"
    clip_path = f"clips/{stem}.mp4"
    write_video(Path(out) / clip_path, frames, fps=config.fps)
    atomic_write_bytes(Path(out) / "apex" / f"{stem}.png", _png_bytes(frames[apex]))
    active = [str(code) for code in AU_CODES if job.pattern[AU_INDEX[code]].max() > 0.05]
    record = ClipRecord(
        path=clip_path,
        subject=job.subject,
        label=job.label,
        apex_index=apex,
        num_frames=config.num_frames,
        protocol=job.protocol,
        extra={
            "apex_path": f"apex/{stem}.png",
            "aus": "+".join(active),
            "intensity": f"{job.intensity * config.expression_scale:.3f}",
        },
    )
    return job.index, record


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _rng(seed: int, space: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(space, index)))
