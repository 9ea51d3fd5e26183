"""The run's configuration: one typed object, the only home of defaults.

Sources, later wins: defaults here < YAML file < command-line flags. The same
object flows from the CLI into `create_pipeline`, and its `train` section
travels to the Trainer as `custom_config`.
"""
from __future__ import annotations

import copy as copy_module
import dataclasses
import pathlib
import typing
from typing import Any

import yaml

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]


class ConfigError(ValueError):
  """A configuration value is missing or invalid; the message names the field."""


@dataclasses.dataclass
class DataConfig:
  root: str = ""                      # folder of class folders (see README)
  # Hash-split ratios, used only when the data has no train/validation/test folders.
  split_ratios: dict[str, int] = dataclasses.field(
      default_factory=lambda: {"train": 8, "validation": 1, "test": 1})
  max_image_side: int = 1024          # larger photos are downscaled at ingestion; 0 = keep
  schema_path: str = str(PROJECT_ROOT / "schemas" / "schema.pbtxt")
  fail_on_anomalies: bool = True      # False: report anomalies but keep going


@dataclasses.dataclass
class TrainConfig:
  base_model: str = "mobilenet_v2"    # mobilenet_v2 | vgg16 | resnet50 | xception | efficientnet_b0 | inception_v3
  alpha: float = 1.0                  # MobileNetV2 width multiplier
  weights: str = "imagenet"           # imagenet | none | path to a .h5 file | folder of Keras weight files
  image_size: int = 224               # the ImageNet weights' native size
  batch_size: int = 32
  phase1_epochs: int = 10             # head only, base frozen
  # Phase 1 on base features computed once (seconds per epoch instead of a
  # forward pass of every photo); False runs the whole model with augmentation.
  phase1_on_features: bool = True
  phase1_optimizer: str = "adam"
  phase1_learning_rate: float = 1e-3
  phase2_epochs: int = 5              # top of the base unfrozen
  phase2_optimizer: str = "rmsprop"
  phase2_learning_rate: float = 1e-5
  # Which base layers phase 2 trains: "auto" (per-base default), "all", "0"
  # (skip phase 2), N (the last N layers) or a layer name (from it onwards).
  unfreeze: str = "auto"
  dropout: float = 0.2
  flip: bool = True                   # augmentation, training only
  rotation: float = 0.1               # fraction of a full turn
  zoom: float = 0.2
  translation: float = 0.1            # fraction of width/height
  early_stopping_patience: int = 3    # epochs without val_loss improvement, per phase
  cache_images: bool = True           # keep decoded images in memory across epochs
  max_train_examples: int = 0         # 0 = all; a subset for quick trials
  seed: int = 42


@dataclasses.dataclass
class EvaluateConfig:
  accuracy_threshold: float = 0.90    # test accuracy needed for a blessing
  max_accuracy_drop: float = 0.0      # tolerated drop vs the last blessed model


@dataclasses.dataclass
class ServingConfig:
  base_dir: str = ""                  # default: <output_dir>/<pipeline_name>/serving
  model_name: str = ""                # default: the pipeline name


@dataclasses.dataclass
class PipelineConfig:
  pipeline_name: str = "cats_vs_dogs"
  output_dir: str = "outputs"
  # The DirectRunner in this process. Its multi-threading mode lost records
  # here (1998 of 2000 written, no error), and worker processes each import
  # TensorFlow first; in-process ingestion of 3,000 photos takes 15 s.
  # For big data pass e.g. --runner=DataflowRunner (or FlinkRunner) to scale out.
  beam_args: list[str] = dataclasses.field(default_factory=lambda: [
      "--direct_running_mode=in_memory"])
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)
  serving: ServingConfig = dataclasses.field(default_factory=ServingConfig)

  @property
  def run_dir(self) -> str:
    return str(pathlib.Path(self.output_dir) / self.pipeline_name)

  @property
  def pipeline_root(self) -> str:
    return str(pathlib.Path(self.run_dir) / "pipeline_root")

  @property
  def metadata_path(self) -> str:
    return str(pathlib.Path(self.run_dir) / "metadata.sqlite")

  @property
  def serving_dir(self) -> str:
    return self.serving.base_dir or str(pathlib.Path(self.run_dir) / "serving")

  @property
  def model_name(self) -> str:
    return self.serving.model_name or self.pipeline_name

  @property
  def reports_dir(self) -> str:
    return str(pathlib.Path(self.run_dir) / "reports")

  def validate(self) -> "PipelineConfig":
    if not self.data.root:
      raise ConfigError("data.root is not set: pass --data-root or set data.root in the YAML file")
    if set(self.data.split_ratios) != {"train", "validation", "test"} or min(
        self.data.split_ratios.values()) < 1:
      raise ConfigError("data.split_ratios needs positive train, validation and test entries, "
                        f"got {self.data.split_ratios}")
    if not 0 <= self.evaluate.accuracy_threshold <= 1.01:
      raise ConfigError(f"evaluate.accuracy_threshold must be in [0, 1], got {self.evaluate.accuracy_threshold}")
    if self.train.image_size < 32:
      raise ConfigError(f"train.image_size must be at least 32, got {self.train.image_size}")
    return self

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def uses_direct_runner(beam_args: list[str]) -> bool:
  """True when Beam runs in this process's machine (no --runner, or the DirectRunner)."""
  runners = [a.split("=", 1)[1] if "=" in a else (beam_args[i + 1:] or [""])[0]
             for i, a in enumerate(beam_args) if a == "--runner" or a.startswith("--runner=")]
  return not runners or runners[-1] in ("DirectRunner", "direct")


def _coerce(field_type: Any, value: Any, key: str) -> Any:
  """Turns YAML/CLI values into the field's type, naming the field on failure."""
  origin = typing.get_origin(field_type) or field_type
  try:
    if origin is bool and isinstance(value, str):
      if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(value)
      return value.lower() in ("true", "1", "yes")
    if origin in (int, float, str, bool):
      if origin is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
      return origin(value)
    if origin in (list, dict):
      value = yaml.safe_load(value) if isinstance(value, str) else value
      if not isinstance(value, origin):
        raise ValueError(value)
      return value
  except (TypeError, ValueError):
    raise ConfigError(f"{key}: expected {getattr(origin, '__name__', origin)}, got {value!r}") from None
  return value


def _apply(target: Any, values: dict[str, Any], prefix: str = "") -> None:
  hints = typing.get_type_hints(type(target))
  for key, value in values.items():
    name = prefix + key
    if key not in hints:
      known = ", ".join(prefix + k for k in hints)
      raise ConfigError(f"unknown setting {name!r}; known: {known}")
    current = getattr(target, key)
    if dataclasses.is_dataclass(current):
      if not isinstance(value, dict):
        raise ConfigError(f"{name}: expected a mapping, got {value!r}")
      _apply(current, value, name + ".")
    else:
      setattr(target, key, _coerce(hints[key], value, name))


def load_config(path: str | None = None, overrides: dict[str, Any] | None = None
                ) -> PipelineConfig:
  """Defaults, then the YAML file at `path`, then `overrides` ("train.image_size": 160)."""
  config = PipelineConfig()
  if path:
    try:
      with open(path) as f:
        values = yaml.safe_load(f) or {}
    except OSError as e:
      raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
      raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(values, dict):
      raise ConfigError(f"config file {path} must hold a mapping at the top")
    _apply(config, values)
  return with_overrides(config, overrides or {}, copy=False)


def with_overrides(config: PipelineConfig, overrides: dict[str, Any],
                   copy: bool = True) -> PipelineConfig:
  """`config` with dotted settings ("train.unfreeze": "all") applied; a copy by default."""
  if copy:
    config = copy_module.deepcopy(config)
  for dotted, value in overrides.items():
    nested: Any = value
    for part in reversed(dotted.split(".")):
      nested = {part: nested}
    _apply(config, nested)
  return config

