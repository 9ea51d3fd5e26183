"""The schema a run validates against: inferred once per dataset, then reviewed.

A dataset's schema is `schemas/<pipeline name>.pbtxt` when one is curated (the
cats-vs-dogs one is), else the one inferred from the training statistics of
the dataset's first run and kept next to its outputs. Inference here is
TFDV's, plus what inference cannot know: labels run from 0 to N-1, every
accepted image format is allowed, and no photo is smaller than ingestion allows.

`finetune schema` infers a schema from a later run the same way and shows how
it differs from the one in use, so that a person decides what to carry over.
"""
from __future__ import annotations

import difflib
import os
import pathlib

from pipeline import runs
from pipeline.config import PipelineConfig
from components.files import atomic_write_text

HEADER = """\
# Inferred by finetune from the training statistics of {source}.
# Review it: runs validate against it, and a new class or label stops them.
# To curate it, copy it to schemas/<pipeline name>.pbtxt in the project.
"""


# Drift between the newest span and the previous one (components/drift.py):
# feature -> (TFDV comparator, threshold). Class balance moves more than
# formats between honest data drops; sizes change when the camera does.
DRIFT_COMPARATORS = {"class_name": ("infinity_norm", 0.2), "format": ("infinity_norm", 0.25),
                     "height": ("jensen_shannon_divergence", 0.3),
                     "width": ("jensen_shannon_divergence", 0.3)}


def add_drift_comparators(schema) -> None:
  features = {f.name: f for f in schema.feature}
  for name, (comparator, threshold) in DRIFT_COMPARATORS.items():
    getattr(features[name].drift_comparator, comparator).threshold = threshold


def infer_schema(statistics_uri: str, class_names: list[str], split: str = "train"):
  """A schema_pb2.Schema for the examples ImageExampleGen wrote, from one split's statistics."""
  import tensorflow_data_validation as tfdv
  from components.image_example_gen.images import KEPT_AS_IS, MIN_SIDE, REENCODED
  stats = tfdv.load_stats_binary(os.path.join(statistics_uri, f"Split-{split}",
                                              "FeatureStats.pb"))
  # A single-valued feature is exactly what the pipeline writes: say so.
  schema = tfdv.infer_schema(stats, infer_feature_shape=True)
  features = {f.name: f for f in schema.feature}
  for name in ("image_raw", "path"):  # unique per photo: no domain
    features[name].ClearField("domain")
  features["label"].int_domain.min = 0
  features["label"].int_domain.max = len(class_names) - 1
  for name in ("height", "width"):
    features[name].int_domain.min = MIN_SIDE
  domains = {name: sorted(values) for name, values in (
      ("class_name", class_names), ("format", KEPT_AS_IS | REENCODED))}
  del schema.string_domain[:]
  for name, values in domains.items():
    features[name].domain = name
    schema.string_domain.add(name=name, value=values)
  add_drift_comparators(schema)
  return schema


class SchemaError(ValueError):
  """The schema file is missing or not a valid schema; the message names it."""


def read_schema(path: str) -> str:
  """The schema file's text, checked to parse as a TFMD Schema."""
  import tensorflow as tf
  from google.protobuf import text_format
  from tensorflow_metadata.proto.v0 import schema_pb2
  if not tf.io.gfile.exists(path):
    raise SchemaError(f"schema file not found: {path}")
  with tf.io.gfile.GFile(path) as f:
    text = f.read()
  try:
    text_format.Parse(text, schema_pb2.Schema())
  except text_format.ParseError as e:
    raise SchemaError(f"schema file {path} is not a valid schema: {e}") from None
  return text


def schema_text(schema, source: str) -> str:
  from google.protobuf import text_format
  return HEADER.format(source=source) + text_format.MessageToString(schema)


def _normalized(schema_text: str) -> str:
  """Same printing as the inferred schema, so the diff shows content, not layout."""
  from google.protobuf import text_format
  from tensorflow_metadata.proto.v0 import schema_pb2
  return text_format.MessageToString(text_format.Parse(schema_text, schema_pb2.Schema()))


def _class_names(run: runs.PipelineRun) -> list[str]:
  import json
  import tensorflow as tf
  from components.data_facts import labels_path
  with tf.io.gfile.GFile(labels_path(run.artifact("ImageExampleGen", "examples").uri)) as f:
    return json.load(f)["class_names"]


def create_schema(config: PipelineConfig, run: runs.PipelineRun) -> str:
  """Infers the dataset's schema from `run` and writes it to config.schema_file."""
  import tensorflow as tf
  schema = infer_schema(run.artifact("StatisticsGen", "statistics").uri, _class_names(run))
  path = config.schema_file
  tf.io.gfile.makedirs(os.path.dirname(path))
  # Later runs validate against it: a torn file would stop every one of them.
  atomic_write_text(path, schema_text(schema, f"run {run.run_id} of {config.data.root}"))
  return path


def propose_schema(config: PipelineConfig, run: runs.PipelineRun,
                   output: str | None = None) -> tuple[pathlib.Path, str]:
  """Writes the inferred schema; returns its path and a unified diff from the run's schema."""
  statistics = run.artifact("StatisticsGen", "statistics")
  if statistics is None:
    raise LookupError(f"run {run.run_id} has no StatisticsGen output; pick a run that got "
                      "past validation")
  from google.protobuf import text_format
  schema = infer_schema(statistics.uri, _class_names(run))
  inferred = text_format.MessageToString(schema)
  path = pathlib.Path(output) if output else (
      pathlib.Path(config.run_dir) / "schema" / "inferred.pbtxt")
  atomic_write_text(path, schema_text(schema, f"run {run.run_id}"))
  # The schema this run validated against, as SchemaImporter recorded it.
  from components.schema_importer import SCHEMA_FILE_NAME
  in_use = os.path.join(run.artifact("SchemaImporter", "schema").uri, SCHEMA_FILE_NAME)
  current = _normalized(pathlib.Path(in_use).read_text())
  diff = "".join(difflib.unified_diff(current.splitlines(keepends=True),
                                      inferred.splitlines(keepends=True),
                                      fromfile=str(in_use), tofile=str(path)))
  return path, diff
