"""The run's configuration: one typed object, the only home of defaults.

Sources, later wins: defaults here < YAML file < command-line flags. The same
object flows from the CLI into `create_pipeline`, and its `train` section
travels to the Trainer as `custom_config`.
"""
from __future__ import annotations

import copy as copy_module
import dataclasses
import math
import os
import pathlib
import posixpath
import re
import typing
import unicodedata
from typing import Any

import yaml

from components.train_settings import TrainConfig
from pipeline import storage

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Curated schemas, one per dataset, named <pipeline name>.pbtxt.
SCHEMAS_DIR = PROJECT_ROOT / "schemas"
# Kubeflow Pipelines' rule for pipeline names; the local runner accepts them too.
PIPELINE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")


class ConfigError(ValueError):
  """A configuration value is missing or invalid; the message names the field."""


@dataclasses.dataclass
class DataConfig:
  root: str = ""                      # folder of class folders (see README)
  # Hash-split ratios, used only when the data has no train/validation/test folders.
  split_ratios: dict[str, int] = dataclasses.field(
      default_factory=lambda: {"train": 8, "validation": 1, "test": 1})
  max_image_side: int = 1024          # larger photos are downscaled at ingestion; 0 = keep
  # Default: schemas/<pipeline name>.pbtxt if it exists (curated), else the
  # schema inferred on the first run, <output>/<pipeline name>/schema.pbtxt.
  schema_path: str = ""
  fail_on_anomalies: bool = True      # False: report anomalies but keep going
  # With span-N/ folders: "all" (every span: more photos, a better model),
  # "latest" (the newest only) or N (the N newest). The newest span's test
  # photos are the test split either way.
  spans: str = "all"


@dataclasses.dataclass
class EvaluateConfig:
  # The blessing gate on the test split (README, "When a model is blessed").
  # Balanced accuracy (mean per-class recall) must beat always answering one
  # class (1/N) by this share of the way to perfect: 0.75 for 2 classes, 0.6 for 5.
  min_gain_over_chance: float = 0.5
  min_class_recall: float = 0.2       # every class's recall; 0 = no floor
  accuracy_threshold: float = 0.0     # plain test accuracy; 0 = no absolute floor
  max_accuracy_drop: float = 0.0      # tolerated drop vs the served model


@dataclasses.dataclass
class ServingConfig:
  base_dir: str = ""                  # default: <output_dir>/<pipeline_name>/serving
  model_name: str = ""                # default: the pipeline name
  # An on-device model in each pushed version (assets.extra/model.tflite):
  # off | float16 (half the size, same accuracy) | int8 (a quarter, calibrated
  # on training photos). Its test accuracy is in the summary and model card.
  tflite: str = "off"


@dataclasses.dataclass
class KubeflowConfig:
  """Kubeflow Pipelines only (finetune kubeflow compile); the local runner ignores it."""
  image: str = ""                     # the project's image (deploy/kubeflow/Dockerfile)
  trainer_cpu: str = "4"              # Trainer's CPU request and limit (Kubernetes quantity)
  trainer_memory: str = "16G"         # Trainer's memory request and limit
  trainer_gpus: int = 0               # accelerators for the Trainer; 0 = CPU only
  gpu_resource: str = "nvidia.com/gpu"  # the accelerators' Kubernetes resource name
  # s3:// only (MinIO, AWS S3). The keys come from this Kubernetes secret into
  # every task as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; the defaults are
  # a standard Kubeflow install's MinIO. The package names the secret, never its values.
  s3_secret: str = "mlpipeline-minio-artifact"
  s3_secret_access_key_id: str = "accesskey"      # the secret's key holding the key id
  s3_secret_secret_access_key: str = "secretkey"  # the secret's key holding the secret key
  s3_endpoint: str = "http://minio-service.kubeflow:9000"  # "" for AWS S3 itself
  s3_region: str = "us-east-1"


@dataclasses.dataclass
class PipelineConfig:
  pipeline_name: str = ""             # default: from the data folder's name (see name_for)
  output_dir: str = "outputs"
  # Added to the Beam arguments below. For big data pass e.g.
  # --runner=DataflowRunner (or FlinkRunner) to scale out.
  beam_args: list[str] = dataclasses.field(default_factory=list)
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)
  serving: ServingConfig = dataclasses.field(default_factory=ServingConfig)
  kubeflow: KubeflowConfig = dataclasses.field(default_factory=KubeflowConfig)

  @property
  def beam_pipeline_args(self) -> list[str]:
    """`beam_args`, with the DirectRunner kept in this process when it is used.

    Ingestion reads photos on a thread per core itself (3,000 photos in 5 s).
    The DirectRunner's multi-threading mode lost a record in 2 of 10 runs here
    with Beam's gzip TFRecord sink, and worker processes each import TensorFlow first.
    """
    if uses_direct_runner(self.beam_args) and not _arg_value(self.beam_args,
                                                             "--direct_running_mode"):
      return [*self.beam_args, f"--direct_running_mode={SAFE_DIRECT_MODE}"]
    return list(self.beam_args)

  @property
  def run_dir(self) -> str:
    return posixpath.join(self.output_dir, self.pipeline_name)  # a path or a bucket URI

  @property
  def pipeline_root(self) -> str:
    return posixpath.join(self.run_dir, "pipeline_root")

  @property
  def metadata_path(self) -> str:
    return posixpath.join(self.run_dir, "metadata.sqlite")

  @property
  def serving_dir(self) -> str:
    return self.serving.base_dir or posixpath.join(self.run_dir, "serving")

  @property
  def model_name(self) -> str:
    return self.serving.model_name or self.pipeline_name

  @property
  def reports_dir(self) -> str:
    return posixpath.join(self.run_dir, "reports")

  @property
  def curated_schema_path(self) -> str:
    return str(SCHEMAS_DIR / f"{self.pipeline_name}.pbtxt")

  @property
  def inferred_schema_path(self) -> str:
    return posixpath.join(self.run_dir, "schema.pbtxt")

  @property
  def schema_file(self) -> str:
    """The schema the run validates against (it may not exist yet: see README)."""
    if self.data.schema_path:
      return self.data.schema_path
    curated = self.curated_schema_path
    return curated if pathlib.Path(curated).is_file() else self.inferred_schema_path

  def validate(self) -> "PipelineConfig":
    """Checks every setting before any work starts; fills in the pipeline name.

    Raises ConfigError naming the first offending setting.
    """
    _check_finite(self)
    if not self.data.root:
      raise ConfigError("data.root is not set: pass --data-root or set data.root in the YAML file")
    if not self.pipeline_name:
      self.pipeline_name = name_for(self.data.root)
    # Recorded in the metadata: relative paths would be read against whatever
    # folder a later command (report, history, a cron job) starts in.
    for section, name in ((self.data, "root"), (self, "output_dir")):
      if "://" not in getattr(section, name):
        setattr(section, name, os.path.abspath(getattr(section, name)))
    check_pipeline_name(self.pipeline_name)
    if set(self.data.split_ratios) != {"train", "validation", "test"} or min(
        self.data.split_ratios.values()) < 1:
      raise ConfigError("data.split_ratios needs positive train, validation and test entries, "
                        f"got {self.data.split_ratios}")
    _check_range("data.max_image_side", self.data.max_image_side, 0, at_most=MAX_IMAGE_SIDE)
    spans = str(self.data.spans)
    if spans not in ("all", "latest") and not (spans.isdigit() and int(spans) > 0):
      raise ConfigError(f"data.spans must be all, latest or a positive number of spans, "
                        f"got {spans!r}")
    self.data.spans = spans
    if 0 < self.data.max_image_side < 32:
      raise ConfigError(f"data.max_image_side must be 0 (keep) or at least 32, "
                        f"got {self.data.max_image_side}")
    _validate_train(self.train)
    for name in ("min_gain_over_chance", "min_class_recall", "accuracy_threshold",
                 "max_accuracy_drop"):
      _check_range(f"evaluate.{name}", getattr(self.evaluate, name), 0.0, 1.0)
    if self.serving.tflite not in ("off", "float16", "int8"):
      raise ConfigError(f"serving.tflite must be off, float16 or int8, got {self.serving.tflite!r}")
    _validate_beam_args(self.beam_args)
    _check_range("kubeflow.trainer_gpus", self.kubeflow.trainer_gpus, 0)
    return self

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def recorded_config(path: str | None, output_dir: str | None, pipeline_name: str | None
                    ) -> PipelineConfig:
  """The configuration of earlier runs, for commands that read them (report, predict).

  Without a pipeline name: the data root's name, else the only pipeline under
  the output folder.
  """
  overrides = {k: v for k, v in (("output_dir", output_dir), ("pipeline_name", pipeline_name))
               if v is not None}
  config = load_config(path, overrides)
  if not config.pipeline_name and config.data.root:
    config.pipeline_name = name_for(config.data.root)
  if not config.pipeline_name:
    found = sorted(p.parent.name for p in pathlib.Path(config.output_dir).glob("*/metadata.sqlite"))
    if len(found) != 1:
      raise ConfigError(
          f"{'several pipelines' if found else 'no pipeline runs'} under {config.output_dir}"
          + (f" ({', '.join(found)}): pass --pipeline-name" if found else
             ": run `finetune run` first, or pass --outputs/--pipeline-name"))
    config.pipeline_name = found[0]
  check_pipeline_name(config.pipeline_name)
  return config


def name_for(data_root: str) -> str:
  """A pipeline name from the data folder's name, legal for both runners.

  "../photos/cats_vs_dogs" -> "cats-vs-dogs"; "s3://bucket/My Flowers/" -> "my-flowers".
  """
  folder = posixpath.basename(str(data_root).replace("\\", "/").rstrip("/"))
  if folder in ("", ".", ".."):
    folder = pathlib.Path(data_root).resolve().name
  folder = unicodedata.normalize("NFKD", folder).encode("ascii", "ignore").decode()
  name = re.sub(r"[^a-z0-9]+", "-", folder.lower()).strip("-")[:128].rstrip("-")
  return name or "photos"


def check_pipeline_name(name: str) -> None:
  if not PIPELINE_NAME.match(name):
    raise ConfigError(
        f"pipeline_name {name!r} is not allowed: use lower-case letters, digits and '-', "
        f"starting with a letter or digit, at most 128 characters (Kubeflow's rule), "
        f"e.g. {name_for(name)!r}")


# Upper bounds: beyond them a setting is a typo, and would fail (or run for
# days) long after the run started.
MAX_IMAGE_SIZE = 1024     # px per side: 20x the pixels of 224, beyond what the bases were trained at
MAX_IMAGE_SIDE = 16384    # data.max_image_side: a downscaling cap, not a size to train at
MAX_EPOCHS = 1000
MAX_PHASE2_VIEWS = 8  # each costs a forward pass and disk space per photo
MAX_BATCH_SIZE = 4096
MAX_PATIENCE = 1000


def _check_finite(target: Any, prefix: str = "") -> None:
  """Every float setting is a number: nan passes every comparison, so no
  range check would catch it, and inf overflows the first step that uses it."""
  for field in dataclasses.fields(target):
    value = getattr(target, field.name)
    if dataclasses.is_dataclass(value):
      _check_finite(value, f"{prefix}{field.name}.")
    elif isinstance(value, float) and not math.isfinite(value):
      raise ConfigError(f"{prefix}{field.name} must be a finite number, got {value}")


def _check_range(name: str, value, low, high=None, at_most=None) -> None:
  """`high`: the domain's end ("between low and high"); `at_most`: a sanity cap."""
  if value < low or (high is not None and value > high):
    span = f"at least {low}" if high is None else f"between {low} and {high}"
    raise ConfigError(f"{name} must be {span}, got {value}")
  if at_most is not None and value > at_most:
    raise ConfigError(f"{name} must be at most {at_most}, got {value}")


def _validate_train(train: "TrainConfig") -> None:
  # The model code owns the list of bases and optimizers; import it only here.
  from components.trainer.model import BASES, OPTIMIZERS
  if train.base_model not in BASES:
    raise ConfigError(f"train.base_model: unknown base {train.base_model!r}; "
                      f"choose from {', '.join(BASES)}")
  minimum = BASES[train.base_model].min_image_size
  if train.image_size and train.image_size < minimum:
    raise ConfigError(f"train.image_size must be at least {minimum} for {train.base_model}, "
                      f"got {train.image_size}")
  if train.image_size < 0 or train.image_size > MAX_IMAGE_SIZE:
    raise ConfigError(f"train.image_size must be 0 (the photos' own size) or between {minimum} "
                      f"and {MAX_IMAGE_SIZE}, got {train.image_size}")
  _check_range("train.batch_size", train.batch_size, 1, at_most=MAX_BATCH_SIZE)
  _check_range("train.phase1_epochs", train.phase1_epochs, 1, at_most=MAX_EPOCHS)
  _check_range("train.phase2_epochs", train.phase2_epochs, 0, at_most=MAX_EPOCHS)
  _check_range("train.phase2_views", train.phase2_views, 0, at_most=MAX_PHASE2_VIEWS)
  _check_range("train.early_stopping_patience", train.early_stopping_patience, 1,
               at_most=MAX_PATIENCE)
  _check_range("train.phase2_max_accuracy", train.phase2_max_accuracy, 0.0, 1.0)
  _check_range("train.max_train_examples", train.max_train_examples, 0)
  for phase in (1, 2):
    optimizer = getattr(train, f"phase{phase}_optimizer")
    if optimizer not in OPTIMIZERS:
      raise ConfigError(f"train.phase{phase}_optimizer: unknown optimizer {optimizer!r}; "
                        f"choose from {', '.join(OPTIMIZERS)}")
    rate = getattr(train, f"phase{phase}_learning_rate")
    if not 0 < rate <= 1:
      raise ConfigError(f"train.phase{phase}_learning_rate must be in (0, 1], got {rate}")
  if train.phase2_schedule not in ("constant", "cosine"):
    raise ConfigError(f"train.phase2_schedule must be constant or cosine, "
                      f"got {train.phase2_schedule!r}")
  _check_range("train.dropout", train.dropout, 0.0, 0.95)
  for name in ("rotation", "zoom", "translation"):
    _check_range(f"train.{name}", getattr(train, name), 0.0, 1.0)
  if train.base_model == "mobilenet_v2" and train.alpha not in MOBILENET_V2_ALPHAS:
    raise ConfigError(f"train.alpha must be one of {', '.join(map(str, MOBILENET_V2_ALPHAS))}, "
                      f"got {train.alpha}")
  unfreeze = str(train.unfreeze)
  if not unfreeze.strip():
    raise ConfigError("train.unfreeze is empty: use auto, all, 0, a number or a layer name")
  from components.trainer.weights import WeightsNotFoundError, resolve_weights
  if "://" in str(train.weights):
    return  # a bucket: the Trainer reads it where it runs (settings touch no storage)
  try:
    resolve_weights(train.weights, train.base_model, train.alpha, train.image_size)
  except WeightsNotFoundError as e:
    raise ConfigError(f"train.weights: {e}") from None


MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
SAFE_DIRECT_MODE = "in_memory"


def _arg_value(beam_args: list[str], flag: str) -> str | None:
  """The last value given for `flag` ("--flag=value" or "--flag value")."""
  values = [a.split("=", 1)[1] if "=" in a else (beam_args[i + 1:] or [""])[0]
            for i, a in enumerate(beam_args) if a == flag or a.startswith(flag + "=")]
  return values[-1] if values else None


def uses_direct_runner(beam_args: list[str]) -> bool:
  """True when Beam runs in this process's machine (no --runner, or the DirectRunner)."""
  return _arg_value(beam_args, "--runner") in (None, "DirectRunner", "direct")


def _validate_beam_args(beam_args: list[str]) -> None:
  mode = _arg_value(beam_args, "--direct_running_mode")
  if uses_direct_runner(beam_args) and mode not in (None, SAFE_DIRECT_MODE):
    raise ConfigError(
        f"beam_args: --direct_running_mode={mode} is not safe here (the multi-threading "
        f"mode lost records without an error); the DirectRunner runs {SAFE_DIRECT_MODE}. "
        "To scale out, pass --runner=DataflowRunner or FlinkRunner instead")


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
      mark = getattr(e, "problem_mark", None)
      where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
      raise ConfigError(f"config file {path} is not valid YAML: "
                        f"{getattr(e, 'problem', None) or e}{where}") from None
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

