"""Whether `finetune run` has anything new to do, before any component starts.

The same key and record as Kubeflow's NewDataCheck and RecordRun tasks
(components/new_data.py): a scheduled run with no new photos then costs a
process start and a walk of the data root, not a pass of every component
through the cache.
"""
from __future__ import annotations

import hashlib
import json
import posixpath

import tensorflow as tf

from components import new_data
from pipeline.config import PipelineConfig


def settings_digest(config: PipelineConfig, schema_text: str) -> str:
  """The settings and the schema (an edited schema is a change). Pure: no file read."""
  settings = json.dumps(config.to_dict(), sort_keys=True, default=str)
  return hashlib.sha256(f"{settings}\n{schema_text}".encode()).hexdigest()


def record_path(config: PipelineConfig) -> str:
  return posixpath.join(config.run_dir, new_data.RECORD_FILE)


def _key(config: PipelineConfig) -> str:
  schema = (tf.io.gfile.GFile(config.schema_file).read()
            if tf.io.gfile.exists(config.schema_file) else "")
  return new_data.run_key(config.data.root, settings_digest(config, schema))


def unchanged_since(config: PipelineConfig, warn=None) -> dict | None:
  """The last finished run's record if neither the photos nor the settings
  changed since; None if there is something to do."""
  record = new_data.read_record(record_path(config), warn)
  return record if record and record["key"] == _key(config) else None


def record_success(config: PipelineConfig, run_id: str, spans: list[int]) -> None:
  """Called after a run finished (blessed or not): its inputs are now seen."""
  new_data.write_record(record_path(config), _key(config), run_id, spans)


nothing_new_line = new_data.nothing_new_line
