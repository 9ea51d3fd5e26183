"""SpanDrift: stops the run when the newest data drop differs from the one before.

The comparison is TFDV's: the newest span's statistics against the previous
span's, with the drift comparators the schema sets (class balance as an
L-infinity distance on `class_name`, format likewise, height and width as a
Jensen-Shannon divergence). Without two spans there is nothing to compare.
"""
import os

import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types.standard_artifacts import ExampleAnomalies, Examples, Schema

from components.data_gate import read_anomalies, stop_or_warn
from components.data_facts import report_path
from components.schema_importer import SCHEMA_FILE_NAME

SPLIT = "drift"  # the one "split" of the anomalies artifact: newest vs previous span
_STRING = ("class_name", "format", "path")


def _span_frames(examples_uri: str, features: list[str]):
  """{span number: DataFrame of `features`}, from every split's records."""
  import pandas as pd
  spec = {name: tf.io.FixedLenFeature([], tf.string if name in _STRING else tf.int64)
          for name in {*features, "path"}}
  files = tf.io.gfile.glob(os.path.join(examples_uri, "Split-*", "*.gz"))
  rows = {name: [] for name in spec}
  for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(512):
    parsed = tf.io.parse_example(batch, spec)
    for name, values in parsed.items():
      rows[name] += [v.decode() if isinstance(v, bytes) else int(v) for v in values.numpy()]
  frame = pd.DataFrame(rows)
  span = frame.pop("path").str.extract(r"^span-(\d+)/", expand=False).astype(float)
  return {int(n): group[features].reset_index(drop=True) for n, group in frame.groupby(span)}


def drift_anomalies(examples_uri: str, schema_text: str, newest: int, previous: int):
  """TFDV's drift anomalies of span `newest` against span `previous`."""
  import tensorflow_data_validation as tfdv
  from google.protobuf import text_format
  from tensorflow_metadata.proto.v0 import schema_pb2
  schema = text_format.Parse(schema_text, schema_pb2.Schema())
  compared = schema_pb2.Schema()
  compared.CopyFrom(schema)
  del compared.feature[:]
  compared.feature.extend(f for f in schema.feature if f.HasField("drift_comparator"))
  names = [f.name for f in compared.feature]
  if not names:
    return None
  frames = _span_frames(examples_uri, names)
  stats = {n: tfdv.generate_statistics_from_dataframe(frames[n]) for n in (newest, previous)}
  anomalies = tfdv.validate_statistics(stats[newest], compared,
                                       previous_statistics=stats[previous])
  for name in list(anomalies.anomaly_info):  # only drift: the schema check is ExampleValidator's
    reasons = anomalies.anomaly_info[name].reason
    if not any("COMPARATOR" in anomalies_pb2.AnomalyInfo.Type.Name(r.type) for r in reasons):
      del anomalies.anomaly_info[name]
  anomalies.ClearField("dataset_anomaly_info")
  return anomalies


@component
def SpanDrift(examples: InputArtifact[Examples], schema: InputArtifact[Schema],
              drift: OutputArtifact[ExampleAnomalies], fail_on_anomalies: Parameter[bool] = True):
  """Raises DataAnomaliesError naming each drifted feature and its distance."""
  import json
  drift.split_names = json.dumps([SPLIT])
  with tf.io.gfile.GFile(report_path(examples.uri)) as f:
    spans = (json.load(f).get("spans") or {}).get("train") or []
  if len(spans) < 2:
    print("Drift: one span or none, nothing to compare", flush=True)
    return
  previous, newest = spans[-2], spans[-1]
  with tf.io.gfile.GFile(os.path.join(schema.uri, SCHEMA_FILE_NAME)) as f:
    anomalies = drift_anomalies(examples.uri, f.read(), newest, previous)
  if anomalies is None:
    print("Drift: the schema sets no drift comparators, nothing compared", flush=True)
    return
  out = os.path.join(drift.uri, f"Split-{SPLIT}")
  tf.io.gfile.makedirs(out)
  with tf.io.gfile.GFile(os.path.join(out, "SchemaDiff.pb"), "wb") as f:
    f.write(anomalies.SerializeToString())
  drift.set_string_custom_property("compared", f"span-{newest} vs span-{previous}")
  lines = read_anomalies(drift.uri, drift.split_names)
  if not lines:
    print(f"Drift: span-{newest} vs span-{previous}: within the schema's thresholds", flush=True)
    return
  stop_or_warn(f"The newest data drop, span-{newest}, drifted from span-{previous}:\n  "
               + "\n  ".join(lines),
               "Check the new photos; if the change is intended, raise the drift thresholds "
               "in the schema, or rerun with --warn-on-anomalies.", fail_on_anomalies)
