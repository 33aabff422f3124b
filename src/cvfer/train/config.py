"""`TrainConfig`: every knob of a training run, JSON round-trippable, with the paper's presets."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cvfer.errors import ConfigError
from cvfer.runs import CONFIG_JSON

# Accepted Python types of each annotation used by TrainConfig (JSON gives ints where floats are meant).
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "str | None": (str, type(None)),
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
    "dict[str, Any]": (dict,),
    "dict[str, float]": (dict,),
}
OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "step", "cosine")
DEVICES = ("cpu", "cuda")
AUTO_IDENTITY_ENCODER = "auto"


@dataclass
class TrainConfig:
    """A training run: model, optimisation, data sampling and where it runs.

    `lr_schedule` is applied per epoch as a factor of each group's base lr:
    - "constant": 1;
    - "step": params `milestones` (epochs, 0-based) and either `gamma` (multiply at each milestone) or
      `factors` (the factor from each milestone on, e.g. MIC's AFEW 1e-4 → 8e-6 → 1e-7 is
      `{"milestones": [30, 60], "factors": [0.08, 0.001]}`);
    - "cosine": params `min_factor` (default 0) and `warmup_epochs` (linear warm-up, default 0).
    `group_lr` overrides the base lr of named parameter groups (e.g. `{"mine": 1e-4}`).
    """

    model: str = "mic"
    model_cfg: dict[str, Any] = field(default_factory=dict)
    epochs: int = 15
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-5
    optimizer: str = "adam"
    momentum: float = 0.9  # Adam's beta1, SGD's momentum
    lr_schedule: str = "constant"
    lr_schedule_params: dict[str, Any] = field(default_factory=dict)
    group_lr: dict[str, float] = field(default_factory=dict)
    critic_steps: int = 1  # updates of each critic (MINE's T_θ, the identity adversary) per step; 1 = Algorithm 1
    # True: the critic_steps − 1 extra updates come *before* the encoder's step, on this batch's features, so
    # the MI the encoder minimises is read by a T_θ fitted to the batch it penalises (docs/training.md).
    critic_first: bool = False
    seed: int = 0
    num_frames: int = 8
    # Residuals and vectors traced back to the I frame (CoViAR's representation, which the MIC reproduction's
    # loader uses); False gives frame-to-frame Δ_t, which loses what skipped P frames hold (docs/training.md).
    accumulate: bool = True
    # f_I, loaded only for models taking z_I: "synthetic", "dlib", a path, or "auto" (`for_data`: the synthetic
    # recogniser on the synthetic benchmark, dlib's on any other dataset).
    identity_encoder: str | None = AUTO_IDENTITY_ENCODER
    device: str = "cpu"
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    val_fraction: float = 0.0  # share of training subjects held out for validation metrics
    max_bad_steps: int = 20  # consecutive skipped (non-finite) steps before the run stops
    cache_dir: str | None = None  # decoded-input cache shared by runs (cvfer.codec.cache)
    sync_batchnorm: bool = False  # torchrun on CUDA: BatchNorm statistics over the global batch

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `ConfigError` naming the first invalid field and its allowed values."""
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            expected = _FIELD_TYPES[str(item.type)]
            if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
                names = "/".join("null" if kind is type(None) else kind.__name__ for kind in expected)
                raise ConfigError(f"training option {item.name}={value!r} is invalid: {item.name} must be {names}")
        checks = [
            (self.epochs >= 1, "epochs", "must be >= 1"),
            (self.batch_size >= 2, "batch_size", "must be >= 2 (MI estimators and BatchNorm need pairs)"),
            (self.lr > 0 and math.isfinite(self.lr), "lr", "must be a positive number"),
            (self.weight_decay >= 0, "weight_decay", "must be >= 0"),
            (self.optimizer in OPTIMIZERS, "optimizer", f"must be one of {OPTIMIZERS}"),
            (self.lr_schedule in LR_SCHEDULES, "lr_schedule", f"must be one of {LR_SCHEDULES}"),
            (all(value > 0 for value in self.group_lr.values()), "group_lr", "values must be positive"),
            (self.critic_steps >= 1, "critic_steps", "must be >= 1"),
            (self.num_frames >= 1, "num_frames", "must be >= 1"),
            (self.device in DEVICES, "device", f"must be one of {DEVICES}"),
            (self.threads >= 0, "threads", "must be >= 0"),
            (0 <= self.val_fraction < 1, "val_fraction", "must be in [0, 1)"),
            (self.max_bad_steps >= 1, "max_bad_steps", "must be >= 1"),
            (not self.sync_batchnorm or self.device == "cuda", "sync_batchnorm", "needs device 'cuda' (torch's SyncBatchNorm)"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise ConfigError(f"training option {name}={getattr(self, name)!r} is invalid: {name} {rule}")
        if self.lr_schedule == "step":
            params = self.lr_schedule_params
            milestones = params.get("milestones", [])
            if "factors" in params and len(params["factors"]) != len(milestones):
                raise ConfigError(
                    f"lr_schedule_params {params}: `factors` needs one value per milestone",
                    fix="give as many factors as milestones, or use `gamma`",
                )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys are a `ConfigError` (typos must not pass silently)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training options {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_flat(cls, settings: dict[str, Any]) -> TrainConfig:
        """Build from a flat preset such as `MIC_PRESETS["ckplus"]`: keys naming a field set it, the
        others (e.g. `alpha`) are model options and go to `model_cfg`."""
        fields = {f.name for f in dataclasses.fields(cls)}
        model_cfg = {key: value for key, value in settings.items() if key not in fields}
        known = {key: value for key, value in settings.items() if key in fields}
        return cls.from_dict({**known, "model_cfg": {**known.get("model_cfg", {}), **model_cfg}})

    def changed_from(self, saved: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
        """Fields (not in `ignore`) whose value differs from a saved `to_dict()`. A field missing from `saved`
        (written before the field existed) counts as its default, so adding an option keeps old runs usable."""
        defaults, current = TrainConfig().to_dict(), self.to_dict()
        return sorted(key for key in current if key not in ignore and saved.get(key, defaults[key]) != current[key])

    def to_json(self) -> str:
        """The config as indented JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str | Path | None = None) -> TrainConfig:
        """Parse `to_json` output; `source` names the file in errors."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"not valid JSON ({error})", source) from None
        if not isinstance(data, dict):
            raise ConfigError("a training config must be a JSON object", source)
        return cls.from_dict(data)

    def for_data(self, data_dir: str | Path) -> TrainConfig:
        """This config with `identity_encoder` "auto" resolved for the dataset `data_dir` when the model takes
        z_I (`identity_encoder_for`); unchanged otherwise."""
        from cvfer.models.registry import builder_accepts

        if self.identity_encoder != AUTO_IDENTITY_ENCODER or not builder_accepts(self.model, "identity_dim"):
            return self
        return self.replace(identity_encoder=identity_encoder_for(data_dir))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with `changes` applied (validated)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def with_setting(self, assignment: str) -> TrainConfig:
        """Apply one `key=value` (value parsed as JSON, else a string); `model.KEY=...` sets model_cfg."""
        key, sep, raw = assignment.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {assignment!r} is not key=value", fix="e.g. --set lr=0.01 or --set model.alpha=0.2")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if key.startswith("model."):
            return self.replace(model_cfg={**self.model_cfg, key.removeprefix("model."): value})
        if key not in {f.name for f in dataclasses.fields(self)}:
            raise ConfigError(
                f"--set {key}: unknown training option",
                fix=f"use one of {sorted(f.name for f in dataclasses.fields(self))} or model.KEY for model options",
            )
        return self.replace(**{key: value})


# A quick CPU run of MIC on a synthetic benchmark (`make demo`, docs/results.md): same losses and groups,
# 6 epochs, small lr; β falls to 0 over the first 4 (the paper: 30 of 100).
DEMO_PRESET: dict[str, Any] = {
    "model": "mic",
    "model_cfg": {"beta_epochs": 4},
    "epochs": 6,
    "batch_size": 16,
    "lr": 1e-3,
    "num_frames": 8,
}


def preset_names() -> list[str]:
    """Names accepted by `preset_config`."""
    return ["demo", "ckplus", "mmi", "afew"]


def preset_config(name: str) -> TrainConfig:
    """The `demo` preset, or MIC's per-dataset settings (`cvfer.models.mic.MIC_PRESETS`, paper §4.1).

    Preset keys naming a `TrainConfig` field set it; any other key (e.g. `alpha`) goes to `model_cfg`.
    """
    if name == "demo":
        return TrainConfig.from_dict(DEMO_PRESET)
    if name not in preset_names():
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(preset_names())}")
    from cvfer.models.mic import MIC_PRESETS

    return TrainConfig.from_flat({"model": "mic", **MIC_PRESETS[name]})


def identity_encoder_for(data_dir: str | Path) -> str:
    """The f_I that "auto" stands for on the prepared dataset `data_dir`: "synthetic" on the synthetic benchmark
    (`cvfer synth` writes `"source": "synthetic"` into dataset.json), "dlib" on any other (`cvfer prepare`)."""
    from cvfer.data.manifest import read_manifest

    return "synthetic" if read_manifest(data_dir).meta.get("source") == "synthetic" else "dlib"


def build_config(
    *,
    preset: str | None = None,
    config_path: str | Path | None = None,
    options: dict[str, Any] | None = None,
    model_options: dict[str, Any] | None = None,
    settings: tuple[str, ...] | list[str] = (),
) -> TrainConfig:
    """The CLI's layering: a preset or a JSON file (or the defaults), then `options` (TrainConfig fields;
    None values ignored), then `model_options` (into model_cfg; None ignored), then each `key=value`.

    When the layers choose another model than the starting point's, the starting point's model options that
    the chosen model does not take (or that its variant fixes, e.g. `alpha` for mic-mi), and all of them for
    a model of another system, are dropped; options given in the layers are kept, so the model rejects them
    when it is built.
    """
    if preset and config_path:
        raise ConfigError("give --preset or --config, not both")
    if config_path:
        path = Path(config_path)
        if not path.is_file():
            raise ConfigError("missing", path, f"give an existing TrainConfig JSON file (a run's {CONFIG_JSON})")
        start = TrainConfig.from_json(path.read_text(encoding="utf-8"), source=path)
    elif preset:
        start = preset_config(preset)
    else:
        start = TrainConfig()
    config = _layered(start, options or {}, model_options or {}, settings)
    if config.model != start.model:
        taken = _options_taken_by(config.model, start.model, start.model_cfg)
        if taken != start.model_cfg:
            config = _layered(start.replace(model_cfg=taken), options or {}, model_options or {}, settings)
    return config


def _options_taken_by(model: str, preset_model: str, options: dict[str, Any]) -> dict[str, Any]:
    """The entries of `options` (set for `preset_model`) that `model` takes: none unless both are variants
    of one system (`same_family`), since an option name can mean another thing to another system."""
    from cvfer.models.registry import builder_accepts, same_family

    if not same_family(model, preset_model):
        return {}
    return {key: value for key, value in options.items() if builder_accepts(model, key)}


def _layered(
    config: TrainConfig, options: dict[str, Any], model_options: dict[str, Any], settings: tuple[str, ...] | list[str]
) -> TrainConfig:
    """`config` with the `build_config` layers applied."""
    changes = {key: value for key, value in options.items() if value is not None}
    model_changes = {key: value for key, value in model_options.items() if value is not None}
    if model_changes:
        changes["model_cfg"] = {**config.model_cfg, **model_changes}
    if changes:
        config = config.replace(**changes)
    for assignment in settings:
        config = config.with_setting(assignment)
    return config
