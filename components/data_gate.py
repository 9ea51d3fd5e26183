"""Stops the run before training when ExampleValidator found anomalies."""

import os

from tensorflow_metadata.proto.v0 import anomalies_pb2
import tensorflow as tf
from tfx.dsl.component.experimental.annotations import InputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils
from tfx.types.standard_artifacts import ExampleAnomalies


class DataAnomaliesError(RuntimeError):
  """The ingested data does not match the curated schema."""


def read_anomalies(anomalies_uri: str, split_names: str) -> list[str]:
  """One line per anomaly: split, feature, kind and description."""
  lines = []
  for split in artifact_utils.decode_split_names(split_names):
    path = os.path.join(anomalies_uri, f"Split-{split}", "SchemaDiff.pb")
    if not tf.io.gfile.exists(path):
      continue
    result = anomalies_pb2.Anomalies.FromString(tf.io.gfile.GFile(path, "rb").read())
    for feature, info in sorted(result.anomaly_info.items()):
      kinds = ", ".join(r.short_description for r in info.reason) or info.short_description
      lines.append(f"[{split}] feature '{feature}': {kinds}: {info.description}")
    if result.HasField("dataset_anomaly_info"):
      info = result.dataset_anomaly_info
      lines.append(f"[{split}] dataset: {info.short_description}: {info.description}")
  return lines


def stop_or_warn(message: str, hint: str, fail_on_anomalies: bool) -> None:
  """Stops the run (DataAnomaliesError: the message and what to do), or only warns."""
  if fail_on_anomalies:
    raise DataAnomaliesError(f"{message}\n{hint}")
  print("WARNING: " + message, flush=True)


@component
def DataGate(anomalies: InputArtifact[ExampleAnomalies],
             fail_on_anomalies: Parameter[bool] = True):
  """Raises DataAnomaliesError listing every anomaly (or only logs them)."""
  lines = read_anomalies(anomalies.uri, anomalies.split_names)
  if not lines:
    return
  stop_or_warn("Data validation found anomalies against the curated schema:\n  "
               + "\n  ".join(lines),
               "Fix the data, update schemas/ if the change is intended, "
               "or rerun with --warn-on-anomalies.", fail_on_anomalies)
