"""Whether a run has anything new to train on, and the record that says so.

A run's key is its photos (components/image_example_gen/fingerprint.py), its
settings and its schema. A finished run (blessed or not) records its key in
`<run dir>/last_run.json`; a later run with the same key has nothing to do.

`finetune run` checks before it starts anything (pipeline/freshness.py). On
Kubeflow no code of ours runs before a scheduled run: the package's first
task, NewDataCheck, checks, every other task runs only when it says so
(tfx.dsl.Cond), and the last one, RecordRun, writes the record.
"""

import hashlib
import json
import posixpath
import time

import tensorflow as tf
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types.artifact import Artifact
from tfx.types.standard_artifacts import Examples, PushedModel

from components.data_facts import report_path
from components.image_example_gen.fingerprint import data_fingerprint
from components.files import atomic_write_text

RECORD_FILE = "last_run.json"
NEW_DATA = "new_data"  # NewDataCheck's verdict on its output artifact: 1 or 0


def run_key(photos: str, settings_digest: str) -> str:
  """The photos (their data_fingerprint) with the settings and schema `settings_digest`
  stands for."""
  return hashlib.sha256(f"{photos}\n{settings_digest}".encode()).hexdigest()


def read_record(path: str, warn=None) -> dict | None:
  """The last finished run's record, or None.

  An unreadable record (a run killed while writing it, before writes were
  atomic) counts as no previous run, with a line to `warn`: the run goes
  ahead and writes a good one.
  """
  if not tf.io.gfile.exists(path):
    return None
  try:
    with tf.io.gfile.GFile(path) as f:
      record = json.load(f)
    if not isinstance(record, dict) or not {"key", "finished"} <= record.keys():
      raise ValueError("not a run record")
  except (ValueError, UnicodeDecodeError) as e:
    if warn:
      warn(f"Warning: {path} is unreadable ({type(e).__name__}); treating it as no "
           "previous run")
    return None
  return record


def write_record(path: str, key: str, run_id: str | None, spans: list[int]) -> None:
  record = {"key": key, "run_id": run_id, "spans": spans,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
  atomic_write_text(path, json.dumps(record, indent=1))


def nothing_new_line(record: dict) -> str:
  spans = record.get("spans") or []
  seen = f"span {', '.join(map(str, spans))} already seen" if spans else "the same photos"
  by = f"run {record['run_id']}" if record.get("run_id") else "the run"
  return (f"No new data: {seen} by {by} that finished {record['finished']}, "
          "settings unchanged; nothing to retrain or push.")


class DataChange(Artifact):
  """NewDataCheck's answer: custom properties `new_data` (1/0) and `run_key`."""
  TYPE_NAME = "components.DataChange"  # importable: see components/__init__.py


@component
def NewDataCheck(change: OutputArtifact[DataChange], data_root: Parameter[str],
                 settings_digest: Parameter[str], record_path: Parameter[str]):
  """Compares this run's key with the last finished run's record."""
  key = run_key(data_fingerprint(data_root), settings_digest)
  record = read_record(record_path, warn=lambda line: print(line, flush=True))
  new = not (record and record["key"] == key)
  change.set_int_custom_property(NEW_DATA, int(new))
  change.set_string_custom_property("run_key", key)
  # Also as a file, for whoever opens the artifact: what was compared with what.
  atomic_write_text(posixpath.join(change.uri, "change.json"), json.dumps(
      {NEW_DATA: new, "run_key": key, "last_run": record}, indent=1))
  print(nothing_new_line(record) if not new else
        "New photos or settings since the last finished run: training" if record else
        "No finished run recorded yet: training", flush=True)


@component
def RecordRun(change: InputArtifact[DataChange], examples: InputArtifact[Examples],
              pushed_model: InputArtifact[PushedModel], record_path: Parameter[str]):
  """The run finished (pushed or not): its photos and settings are now seen."""
  with tf.io.gfile.GFile(report_path(examples.uri)) as f:
    spans = sorted({s for split in json.load(f).get("spans", {}).values() for s in split})
  write_record(record_path, change.get_string_custom_property("run_key"), None, spans)
  pushed = pushed_model.get_int_custom_property("pushed")
  print(f"Recorded in {record_path}: " + (
      f"version {pushed_model.get_string_custom_property('pushed_version')} pushed."
      if pushed else "nothing pushed (not blessed)."), flush=True)
