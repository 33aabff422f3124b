"""Built-in synthetic face-video benchmark and identity images (see docs/synthetic.md)."""

from cvfer.data.synthetic.benchmark import PRESETS, SynthConfig, generate_benchmark, preset_config, render_clip
from cvfer.data.synthetic.expressions import AU_CODES, AU_NAMES, EMOTION_AUS, action_unit_array, emotion_action_units
from cvfer.data.synthetic.pretrain import identity_images
from cvfer.data.synthetic.render import IdentityParams, Lighting, Pose, render_face, sample_identity

__all__ = [
    "AU_CODES",
    "AU_NAMES",
    "EMOTION_AUS",
    "PRESETS",
    "IdentityParams",
    "Lighting",
    "Pose",
    "SynthConfig",
    "action_unit_array",
    "emotion_action_units",
    "generate_benchmark",
    "identity_images",
    "preset_config",
    "render_clip",
    "render_face",
    "sample_identity",
]
