"""`TrainConfig`: every knob of a training run, JSON round-trippable; presets (registered beside each model),
the one `key=value` parser, and which options are command-line flags or may change on resume."""

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
_SET_FIX = "e.g. --set lr=0.01 or --set model.alpha=0.2"


@dataclass
class TrainConfig:
    """A training run: model, optimisation, data sampling and where it runs.

    Field metadata: `help` makes the field a command-line flag of `cvfer train`, `cv` and `compare`
    (`batch_size` → `--batch-size`, `flag_fields`); `resumable` marks what may change on resume
    (`resumable_options`).

    `lr_schedule` is applied per epoch as a factor of each group's base lr:
    - "constant": 1;
    - "step": params `milestones` (epochs, 0-based) and either `gamma` (multiply at each milestone) or
      `factors` (the factor from each milestone on, e.g. MIC's AFEW 1e-4 → 8e-6 → 1e-7 is
      `{"milestones": [30, 60], "factors": [0.08, 0.001]}`);
    - "cosine": params `min_factor` (default 0) and `warmup_epochs` (linear warm-up, default 0).
    `group_lr` overrides the base lr of named parameter groups (e.g. `{"mine": 1e-4}`).
    """

    model: str = field(default="mic", metadata={"help": "registered model name (default mic)"})
    model_cfg: dict[str, Any] = field(default_factory=dict)
    epochs: int = field(default=15, metadata={"help": "training epochs", "resumable": "checkpoint"})
    batch_size: int = field(default=16, metadata={"help": "global batch size (split over torchrun processes)"})
    lr: float = field(default=1e-3, metadata={"help": "base learning rate of every parameter group"})
    weight_decay: float = 1e-5
    optimizer: str = "adam"
    momentum: float = 0.9  # Adam's beta1, SGD's momentum
    lr_schedule: str = "constant"
    lr_schedule_params: dict[str, Any] = field(default_factory=dict)
    group_lr: dict[str, float] = field(default_factory=dict)
    # Updates of each critic (MINE's T_θ, the identity adversary) per step; 1 = Algorithm 1.
    critic_steps: int = field(default=1, metadata={"help": "updates of T_θ (or the adversary) per training step"})
    # True: the critic_steps − 1 extra updates come *before* the encoder's step, on this batch's features, so
    # the MI the encoder minimises is read by a T_θ fitted to the batch it penalises (docs/training.md).
    critic_first: bool = field(
        default=False,
        metadata={"help": "do the extra critic updates before the encoder's step, on the same batch (critic_first)"},
    )
    seed: int = field(default=0, metadata={"help": "random seed"})
    num_frames: int = field(default=8, metadata={"help": "time steps T per clip: P frames, or decoded frames"})
    # Residuals and vectors traced back to the I frame (CoViAR's representation, which the MIC reproduction's
    # loader uses); False gives frame-to-frame Δ_t, which loses what skipped P frames hold (docs/training.md).
    accumulate: bool = True
    # f_I, loaded only for models taking z_I: "synthetic", "dlib", a path, or "auto" (`for_data`: the synthetic
    # recogniser on the synthetic benchmark, dlib's on any other dataset).
    identity_encoder: str | None = field(
        default=AUTO_IDENTITY_ENCODER,
        metadata={
            "help": "frozen face recogniser for z_I (models that take it): auto (default: synthetic on `cvfer synth` "
            "data, else dlib), synthetic, dlib or a path"
        },
    )
    # Where and how fast a run goes ("resumable": "always") changes no result, so it may change on any resume.
    device: str = field(
        default="cpu", metadata={"help": "device to train on", "choices": DEVICES, "resumable": "always"}
    )
    threads: int = field(
        default=0, metadata={"help": "torch intra-op threads (0: torch's default)", "resumable": "always"}
    )
    val_fraction: float = 0.0  # share of training subjects held out for validation metrics
    # Consecutive skipped (non-finite) steps before the run stops; a resumed run may be given more patience.
    max_bad_steps: int = field(default=20, metadata={"resumable": "checkpoint"})
    cache_dir: str | None = field(  # cvfer.codec.cache
        default=None, metadata={"help": "decoded-input cache shared by runs", "resumable": "always"}
    )
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
        unknown = sorted(set(data) - set(_field_names()))
        if unknown:
            raise ConfigError(f"unknown training options {unknown}; known: {sorted(_field_names())}")
        return cls(**data)

    @classmethod
    def from_flat(cls, settings: dict[str, Any]) -> TrainConfig:
        """Build from flat settings such as a preset's (`with_flat` on the defaults)."""
        return cls().with_flat(settings)

    def with_flat(self, settings: dict[str, Any]) -> TrainConfig:
        """A copy with flat `settings` applied: keys naming a field set it, options of the model's builder
        (`settings["model"]`, else this config's model) go to `model_cfg`; any other key is a `ConfigError`
        listing the valid ones."""
        from cvfer.models.registry import builder_options

        fields = _field_names()
        model = settings.get("model", self.model)
        options = [name for name in builder_options(model) if name not in fields]
        unknown = sorted(set(settings) - set(fields) - set(options))
        if unknown:
            raise ConfigError(
                f"unknown options {unknown} for model {model!r}",
                fix=f"use TrainConfig fields {sorted(fields)} or the model's options {options}",
            )
        known = {key: value for key, value in settings.items() if key in fields}
        model_cfg = {**self.model_cfg, **known.pop("model_cfg", {})}
        model_cfg.update((key, value) for key, value in settings.items() if key not in fields)
        return self.replace(**known, model_cfg=model_cfg)

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
        """Apply one `--set key=value` (`split_assignment`, `parse_value`); `model.KEY=...` sets model_cfg."""
        key, raw = split_assignment(assignment, "--set", _SET_FIX)
        value = parse_value(raw)
        if key.startswith("model."):
            return self.replace(model_cfg={**self.model_cfg, key.removeprefix("model."): value})
        if key not in _field_names():
            raise ConfigError(
                f"--set {key}: unknown training option",
                fix=f"use one of {sorted(_field_names())} or model.KEY for model options",
            )
        return self.replace(**{key: value})


def _field_names() -> list[str]:
    """TrainConfig's field names in declaration order."""
    return [item.name for item in dataclasses.fields(TrainConfig)]


def split_assignment(text: str, what: str, fix: str) -> tuple[str, str]:
    """`"key=value"` → ("key", "value"), the key stripped: cvfer's one `key=value` parser (with `parse_value`).
    A `ConfigError` naming `what` (e.g. "--set") and carrying `fix` when there is no `=` or no key."""
    key, separator, value = text.partition("=")
    if not separator or not key.strip():
        raise ConfigError(f"{what} {text!r} is not key=value", fix=fix)
    return key.strip(), value


def parse_value(text: str) -> Any:
    """A value given as text: JSON where it parses (`0.1`, `true`, `null`, `[30, 60]`), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def resumable_options(from_checkpoint: bool) -> tuple[str, ...]:
    """The fields that may change when a run is resumed, as marked on `TrainConfig` (metadata `resumable`):
    the "always" ones (where and how fast it runs), and, when one training run continues from its checkpoint,
    the "checkpoint" ones too (more epochs, more patience); a cross-validation run refuses those, as its
    finished folds would not match new ones."""
    marks = ("always", "checkpoint") if from_checkpoint else ("always",)
    return tuple(item.name for item in dataclasses.fields(TrainConfig) if item.metadata.get("resumable") in marks)


def flag_fields() -> list[dataclasses.Field[Any]]:
    """The fields that are command-line flags (those with `help` metadata), in declaration order."""
    return [item for item in dataclasses.fields(TrainConfig) if "help" in item.metadata]


def value_type(item: dataclasses.Field[Any]) -> type:
    """The type of a field's values without None (`str | None` → str): what a command-line value is read as."""
    return _FIELD_TYPES[str(item.type)][0]


def preset_names(model: str | None = None) -> list[str]:
    """The presets `preset_config` takes for `model` (None: the default model): its system's and the
    default model's (MIC's, which serve any model), sorted."""
    from cvfer.models.registry import model_presets

    return sorted({name for owner in (model or TrainConfig.model, TrainConfig.model) for name in model_presets(owner)})


def preset_config(name: str, model: str | None = None) -> TrainConfig:
    """The preset `name` of `model`'s system (`cvfer.models.registry.model_presets`), or, where that system
    has none of this name, of the default model's: MIC's presets serve any model (`build_config` switches
    to `model` and keeps the preset's model options only for its own system). None: the default model."""
    from cvfer.models.registry import model_presets, same_family

    chosen, default = model or TrainConfig.model, TrainConfig.model
    for owner in (chosen, default):
        presets = model_presets(owner)
        if name in presets:
            return TrainConfig.from_flat(presets[name].settings)
    listing = f"{default}'s, for any model: {', '.join(sorted(model_presets(default)))}"
    if not same_family(chosen, default):
        listing = f"{chosen}'s own: {', '.join(sorted(model_presets(chosen))) or 'none'}; {listing}"
    raise ConfigError(f"unknown preset {name!r} for model {chosen!r}", fix=f"presets are {listing}")


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
    """The CLI's layering: a preset (`preset_config` for the model the layers choose) or a JSON file (or the
    defaults), then `options` (TrainConfig fields; None values ignored), then `model_options` (into model_cfg;
    None ignored), then each `key=value`.

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
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ConfigError(f"not UTF-8 text ({error.reason} at byte {error.start})", path,
                              "save the config as UTF-8 JSON") from error
        start = TrainConfig.from_json(text, source=path)
    elif preset:
        start = preset_config(preset, _chosen_model(options or {}, settings))
    else:
        start = TrainConfig()
    config = _layered(start, options or {}, model_options or {}, settings)
    if config.model != start.model:
        taken = _options_taken_by(config.model, start.model, start.model_cfg)
        if taken != start.model_cfg:
            config = _layered(start.replace(model_cfg=taken), options or {}, model_options or {}, settings)
    return config


def _chosen_model(options: dict[str, Any], settings: tuple[str, ...] | list[str]) -> str | None:
    """The model the layers choose: the last `model=...` setting, else `options["model"]` (None: neither)."""
    chosen = options.get("model")
    for assignment in settings:
        key, raw = split_assignment(assignment, "--set", _SET_FIX)
        if key == "model":
            chosen = parse_value(raw)
    return chosen


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
