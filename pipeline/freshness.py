"""Whether a run has anything new to do: the data and settings of the last
successful run, compared with now, before any component starts.

A scheduled run with no new photos then costs a process start and a walk of
the data root, not a pass of every component through the cache.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import time

import tensorflow as tf

# Also the ingestion driver's cache key; odd files (broken links, loops, non-UTF-8
# names) count as files there and never stop it.
from components.image_example_gen.fingerprint import data_fingerprint
from pipeline.config import PipelineConfig
from pipeline.files import atomic_write_text

STATE_FILE = "last_run.json"


def _key(config: PipelineConfig) -> str:
  """The photos, the settings and the schema (an edited schema is a change)."""
  settings = json.dumps(config.to_dict(), sort_keys=True, default=str)
  schema = (tf.io.gfile.GFile(config.schema_file).read()
            if tf.io.gfile.exists(config.schema_file) else "")
  return hashlib.sha256(
      f"{data_fingerprint(config.data.root)}\n{settings}\n{schema}".encode()).hexdigest()


def _state_path(config: PipelineConfig) -> str:
  return posixpath.join(config.run_dir, STATE_FILE)


def unchanged_since(config: PipelineConfig, warn=None) -> dict | None:
  """The last successful run's record if neither the photos nor the settings
  changed since; None if there is something to do.

  An unreadable record (a run killed while writing it, before writes were
  atomic) counts as no previous run, with a line to `warn`: the run goes
  ahead and writes a good one.
  """
  path = _state_path(config)
  if not tf.io.gfile.exists(path):
    return None
  try:
    with tf.io.gfile.GFile(path) as f:
      state = json.load(f)
    if not isinstance(state, dict) or not {"run_id", "finished"} <= state.keys():
      raise ValueError("not a run record")
  except (ValueError, UnicodeDecodeError) as e:
    if warn:
      warn(f"Warning: {path} is unreadable ({type(e).__name__}); treating it as no "
           "previous run")
    return None
  return state if state.get("key") == _key(config) else None


def record_success(config: PipelineConfig, run_id: str, spans: list[int]) -> None:
  """Called after a run finished (blessed or not): its inputs are now seen."""
  state = {"key": _key(config), "run_id": run_id, "spans": spans,
           "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
  atomic_write_text(_state_path(config), json.dumps(state, indent=1))


def nothing_new_line(state: dict) -> str:
  spans = state.get("spans") or []
  seen = f"span {', '.join(map(str, spans))} already seen" if spans else "the same photos"
  return (f"No new data: {seen} by run {state['run_id']} ({state['finished']}), "
          "settings unchanged; nothing to retrain or push.")
