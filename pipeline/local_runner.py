"""Runs the pipeline on this machine: LocalDagRunner + SQLite metadata.

Prints each component's start, end and duration while it runs, and a summary
read back from ML Metadata at the end. Every finished component is recorded
in MLMD, so an interrupted run resumes from the cache on the next call.
"""
from __future__ import annotations

import os
import threading
import time

import tensorflow as tf
from tfx.dsl.compiler import compiler
from tfx.orchestration import metadata
from tfx.orchestration.local.local_dag_runner import LocalDagRunner

from pipeline import runs
from pipeline.beam_dependencies import skip_tfx_sdist_on_direct_runner
from pipeline.config import PipelineConfig
from pipeline.pipeline import (MODEL, NEW_DATA_TASKS, READS_SERVED_MODEL, STATISTICS,
                               create_pipeline)
from pipeline.schema import create_schema, read_schema


class _Progress(threading.Thread):
  """Prints each component's start, end and duration, polling ML Metadata.

  Reading MLMD (not the logs) shows exactly what the orchestrator recorded,
  including cache hits, whatever the components do to logging.
  """

  def __init__(self, metadata_path: str, echo, interval: float = 1.0):
    super().__init__(daemon=True)
    self._path, self._echo, self._interval = metadata_path, echo, interval
    self._stop_event = threading.Event()
    self._seen: dict[int, str] = {}
    # Executions of earlier runs are not this run's progress.
    self._first_id = max((e.id for e in runs.open_store(metadata_path).get_executions()),
                         default=0) + 1

  def run(self):
    while not self._stop_event.wait(self._interval):
      self.poll()

  def stop(self):
    self._stop_event.set()
    self.join()
    self.poll()

  def poll(self):
    store = runs.open_store(self._path)
    for execution in store.get_executions():
      if execution.id < self._first_id:
        continue
      state = runs.state_name(execution)
      if self._seen.get(execution.id) == state:
        continue
      node = runs.node_name(store, execution)
      stamp = time.strftime("%H:%M:%S")
      if state == "running":
        self._echo(f"[{stamp}] {node} started")
      else:
        seconds = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000
        label = {"ran": "done", "cached": "cached (inputs unchanged)"}.get(state, state)
        self._echo(f"[{stamp}] {node} {label} in {seconds:.1f}s")
      self._seen[execution.id] = state


def run_pipeline(config: PipelineConfig, echo=print, experiment: bool = False
                 ) -> runs.PipelineRun:
  """Runs (or resumes) the pipeline; returns the run as recorded in MLMD.

  `config` is validated (PipelineConfig.validate), and a caller that must
  stop on a data problem before anything is written has checked the layout
  (pipeline/cli/run.py does): this re-checks neither. The first run over a dataset with no schema runs up to StatisticsGen,
  infers the schema from those statistics, then runs the whole pipeline;
  ingestion and statistics are then reused from the cache.
  """
  os.makedirs(config.run_dir, exist_ok=True)
  echo(f"Pipeline {config.pipeline_name}: data {config.data.root}, outputs {config.run_dir}")
  schema_file = config.schema_file
  if not tf.io.gfile.exists(schema_file):
    echo(f"No schema for {config.pipeline_name} yet: ingesting, then inferring one "
         "from the training statistics")
    run_stages(config, "", schema_file, STATISTICS, echo)
    path = create_schema(config, runs.load_run(runs.open_store(config.metadata_path)))
    echo(f"Schema created: {path} (inferred from this data; review it; later runs "
         "validate against it)")
  # An experiment's variants are evaluated on their own, never judged or pushed.
  run_stages(config, read_schema(schema_file), schema_file, MODEL if experiment else None, echo)
  return runs.load_run(runs.open_store(config.metadata_path))


def run_stages(config: PipelineConfig, schema_text: str, schema_source: str,
               stages: tuple[str, ...] | None, echo) -> None:
  """Runs create_pipeline's `stages` (None: all of them) with LocalDagRunner."""
  skip_tfx_sdist_on_direct_runner()
  connection = metadata.sqlite_metadata_connection_config(config.metadata_path)
  ir = compiler.Compiler().compile(
      create_pipeline(config, schema_text, schema_source, connection))
  for node in list(ir.nodes):
    node_id = node.pipeline_node.node_info.id
    if node_id in NEW_DATA_TASKS or (stages is not None and node_id not in stages):
      ir.nodes.remove(node)  # only downstream stages go: what runs keeps its inputs
      continue
    if node_id in READS_SERVED_MODEL:
      node.pipeline_node.execution_options.caching_options.enable_cache = False
    _without_new_data_check(node.pipeline_node)
  progress = _Progress(config.metadata_path, echo)
  progress.start()
  try:
    LocalDagRunner().run_with_ir(ir)
  finally:
    progress.stop()


def _without_new_data_check(node) -> None:
  """`node` without its condition on NewDataCheck: `finetune run` checked before it started."""
  node.inputs.ClearField("conditionals")
  for key in [k for k, spec in node.inputs.inputs.items()
              if any(c.producer_node_query.id in NEW_DATA_TASKS for c in spec.channels)]:
    del node.inputs.inputs[key]
  for upstream in [n for n in node.upstream_nodes if n in NEW_DATA_TASKS]:
    node.upstream_nodes.remove(upstream)
