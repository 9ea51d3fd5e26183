"""`finetune schema`: propose a schema from a trusted run, as a diff to review.

The curated schema in schemas/ is reviewed like code. This infers a schema
from a run's training-split statistics (what SchemaGen would produce), writes
it next to the run, and shows how it differs from the curated one, so that a
person decides which changes to carry over.
"""
from __future__ import annotations

import difflib
import os
import pathlib

from pipeline import runs
from pipeline.config import PipelineConfig


def infer_schema_text(statistics_uri: str, split: str = "train") -> str:
  import tensorflow_data_validation as tfdv
  from google.protobuf import text_format
  stats = tfdv.load_stats_binary(os.path.join(statistics_uri, f"Split-{split}",
                                              "FeatureStats.pb"))
  # A single-valued feature is exactly what the pipeline writes: say so, as the curated one does.
  schema = tfdv.infer_schema(stats, infer_feature_shape=True)
  return text_format.MessageToString(schema)


def _normalized(schema_text: str) -> str:
  """Same printing as the inferred schema, so the diff shows content, not layout."""
  from google.protobuf import text_format
  from tensorflow_metadata.proto.v0 import schema_pb2
  return text_format.MessageToString(text_format.Parse(schema_text, schema_pb2.Schema()))


def propose_schema(config: PipelineConfig, run: runs.PipelineRun,
                   output: str | None = None) -> tuple[pathlib.Path, str]:
  """Writes the inferred schema; returns its path and a unified diff from the curated one."""
  statistics = run.artifact("StatisticsGen", "statistics")
  if statistics is None:
    raise LookupError(f"run {run.run_id} has no StatisticsGen output; pick a run that got "
                      "past validation")
  inferred = infer_schema_text(statistics.uri)
  path = pathlib.Path(output) if output else (
      pathlib.Path(config.run_dir) / "schema" / "inferred.pbtxt")
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(inferred)
  curated = _normalized(pathlib.Path(config.data.schema_path).read_text())
  diff = "".join(difflib.unified_diff(curated.splitlines(keepends=True),
                                      inferred.splitlines(keepends=True),
                                      fromfile=str(config.data.schema_path), tofile=str(path)))
  return path, diff
