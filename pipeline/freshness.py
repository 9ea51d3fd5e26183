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
from components.image_example_gen.fingerprint import data_fingerprint
from pipeline.config import PipelineConfig


def settings_digest(config: PipelineConfig, schema_text: str) -> str:
  """The settings and the schema (an edited schema is a change). Pure: no file read."""
  settings = json.dumps(config.to_dict(), sort_keys=True, default=str)
  return hashlib.sha256(f"{settings}\n{schema_text}".encode()).hexdigest()


def record_path(config: PipelineConfig) -> str:
  return posixpath.join(config.run_dir, new_data.RECORD_FILE)


def photos(config: PipelineConfig) -> str:
  """The photos as they are now: taken once, before the run, so that photos
  added while it runs are new to the next one."""
  return data_fingerprint(config.data.root)


def _key(config: PipelineConfig, photos_now: str) -> str:
  schema = (tf.io.gfile.GFile(config.schema_file).read()
            if tf.io.gfile.exists(config.schema_file) else "")
  return new_data.run_key(photos_now, settings_digest(config, schema))


def unchanged_since(config: PipelineConfig, photos_now: str, warn=None) -> dict | None:
  """The last finished run's record if neither the photos nor the settings
  changed since; None if there is something to do."""
  record = new_data.read_record(record_path(config), warn)
  return record if record and record["key"] == _key(config, photos_now) else None


def record_success(config: PipelineConfig, photos_then: str, run_id: str,
                   spans: list[int]) -> None:
  """Called after a run finished (blessed or not): the photos it started from,
  and its settings and schema (a first run's inferred one included), are now seen."""
  new_data.write_record(record_path(config), _key(config, photos_then), run_id, spans)


nothing_new_line = new_data.nothing_new_line
