"""One finished run's results, read once from ML Metadata and the artifacts.

The summary, the report, `finetune check` and `finetune history` show what a
`RunResult` holds; none of them opens a run's files itself.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import posixpath

import tensorflow as tf

from components.blessing import read_verdict
from components.data_facts import report_path
from components.data_gate import read_anomalies
from pipeline import runs

# Written by components/trainer/train.py, named here: importing it loads Keras and Transform.
TRAINING_SUMMARY_FILE = "training_summary.json"
TRAINING_HISTORY_FILE = "history.json"


def _read_json(path: str):
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def _anomaly_lines(artifact) -> list[str] | None:
  if artifact is None:
    return None
  return read_anomalies(artifact.uri, artifact.properties["split_names"].string_value)


def _custom(artifact, name: str) -> str | None:
  value = artifact.custom_properties.get(name) if artifact is not None else None
  return value.string_value if value is not None else None


@dataclasses.dataclass
class RunResult:
  """None in a field: that stage did not run, or left nothing to read."""
  run: runs.PipelineRun            # id, each component's state and seconds, artifact URIs
  ingestion: dict | None           # ingestion/report.json: counts per split and class,
  ingestion_path: str | None       # rejected files with reasons, ignored files, spans
  num_examples: int | None
  anomalies: list[str] | None      # ExampleValidator's, one line each
  drift: list[str] | None          # the newest span against the previous one
  drift_compared: str | None       # "span-2 vs span-1"; None: nothing compared
  training: dict | None            # the Trainer's summary: base, settings, phases, exported epoch
  history: list[dict] | None       # the Trainer's epochs, both phases
  verdict: dict | None             # BlessingGate's verdict: the rules this run applied
  pushed: bool | None              # None: no Pusher output
  pushed_to: str | None            # where it went, and as which version, when pushed
  pushed_version: int | str | None

  @property
  def run_id(self) -> str:
    return self.run.run_id

  @property
  def pushed_now(self) -> bool:
    """A cached Pusher pushed nothing in this run: its artifact is an earlier run's push."""
    pusher = self.run.nodes.get("Pusher")
    return bool(self.pushed) and pusher is not None and pusher.state == "ran"

  @functools.cached_property
  def evaluation(self) -> dict | None:
    """TFMA's metrics ({slice: {metric: value}}) and confusion matrix of the candidate.
    Read on first use: only the report needs TFMA."""
    from components.evaluation import read_confusion_matrix, read_metrics
    evaluation = self.run.artifact("Evaluator", "evaluation")
    if evaluation is None or not self.training:
      return None
    return {"metrics": read_metrics(evaluation.uri, "candidate"),
            "confusion_matrix": read_confusion_matrix(evaluation.uri,
                                                      len(self.training["class_names"]))}


def read_result(run: runs.PipelineRun) -> RunResult:
  """Reads `run`'s results from its artifacts (URIs as ML Metadata recorded them)."""
  examples = run.artifact("ImageExampleGen", "examples")
  ingestion_path = report_path(examples.uri) if examples is not None else None
  ingestion = _read_json(ingestion_path) if ingestion_path else None
  num_examples = runs.int_property(examples, "num_examples", None) if ingestion_path else None
  model = run.artifact("Trainer", "model")
  blessing = run.artifact("BlessingGate", "blessing")
  pushed = run.artifact("Pusher", "pushed_model")
  drift = run.artifact("SpanDrift", "drift")
  done = None if pushed is None else runs.int_property(pushed, "pushed") == 1
  version = _custom(pushed, "pushed_version") if done else None
  return RunResult(
      run=run, ingestion=ingestion, ingestion_path=ingestion_path,
      num_examples=(ingestion or {}).get("num_examples", num_examples),
      anomalies=_anomaly_lines(run.artifact("ExampleValidator", "anomalies")),
      drift=_anomaly_lines(drift), drift_compared=_custom(drift, "compared"),
      training=model and _read_json(posixpath.join(model.uri, TRAINING_SUMMARY_FILE)),
      history=model and _read_json(posixpath.join(model.uri, TRAINING_HISTORY_FILE)),
      verdict=blessing and read_verdict(blessing.uri),
      pushed=done, pushed_to=_custom(pushed, "pushed_destination") if done else None,
      pushed_version=int(version) if version and version.isdigit() else version)
