"""Runs the pipeline on this machine: LocalDagRunner + SQLite metadata.

Prints each component's start, end and duration while it runs, and a summary
read back from ML Metadata at the end. Every finished component is recorded
in MLMD, so an interrupted run resumes from the cache on the next call.
"""
from __future__ import annotations

import json
import os
import threading
import time

import tensorflow as tf
from tfx import v1 as tfx
from tfx.orchestration import metadata
from tfx.utils import dependency_utils

from components.data_gate import read_anomalies
from components.evaluation import read_accuracy
from components.image_example_gen.executor import report_path
from pipeline import runs
from pipeline.config import PipelineConfig, uses_direct_runner
from pipeline.pipeline import create_pipeline


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


def _skip_tfx_sdist_on_direct_runner() -> None:
  """Before every Beam component TFX packages itself as an sdist (2-3 s) for
  remote workers to install; workers of the DirectRunner share this environment."""
  if getattr(dependency_utils.make_beam_dependency_flags, "direct_runner_aware", False):
    return
  make_flags = dependency_utils.make_beam_dependency_flags

  def flags(beam_pipeline_args):
    return (beam_pipeline_args if uses_direct_runner(beam_pipeline_args)
            else make_flags(beam_pipeline_args))

  flags.direct_runner_aware = True
  dependency_utils.make_beam_dependency_flags = flags


def run_pipeline(config: PipelineConfig, echo=print, experiment: bool = False
                 ) -> runs.PipelineRun:
  """Runs (or resumes) the pipeline; returns the run as recorded in MLMD."""
  os.makedirs(config.run_dir, exist_ok=True)
  _skip_tfx_sdist_on_direct_runner()
  connection = metadata.sqlite_metadata_connection_config(config.metadata_path)
  pipeline = create_pipeline(config, connection, experiment=experiment)
  echo(f"Pipeline {config.pipeline_name}: data {config.data.root}, outputs {config.run_dir}")
  progress = _Progress(config.metadata_path, echo)
  progress.start()
  try:
    tfx.orchestration.LocalDagRunner().run(pipeline)
  finally:
    progress.stop()
  return runs.load_run(runs.open_store(config.metadata_path))


def summarize(config: PipelineConfig, run: runs.PipelineRun) -> list[str]:
  """The end-of-run summary, read from the run's artifacts."""
  lines = [f"Run {run.run_id} of {config.pipeline_name}"]
  examples = run.artifact("ImageExampleGen", "examples")
  if examples is not None:
    with tf.io.gfile.GFile(report_path(examples.uri)) as f:
      report = json.load(f)
    lines.append(f"Data: {report['num_examples']} examples, {report['num_rejected']} files "
                 f"rejected, {report['num_ignored']} ignored ({report['data_root']})")
    for split, counts in report["examples"].items():
      lines.append(f"  {split:<10} {sum(counts.values()):>6}  " +
                   ", ".join(f"{name} {n}" for name, n in counts.items()))
    for rejected in report["rejected"][:20]:
      lines.append(f"  rejected {rejected['path']}: {rejected['reason']}")
    if report["num_rejected"] > 20:
      lines.append(f"  ... and {report['num_rejected'] - 20} more in {report_path(examples.uri)}")
  anomalies = run.artifact("ExampleValidator", "anomalies")
  if anomalies is not None:
    found = read_anomalies(anomalies.uri, anomalies.properties["split_names"].string_value)
    lines.append("Anomalies: " + ("none" if not found else "\n  " + "\n  ".join(found)))
  model = run.artifact("Trainer", "model")
  if model is not None:
    history_path = os.path.join(model.uri, "history.json")
    if tf.io.gfile.exists(history_path):
      with tf.io.gfile.GFile(history_path) as f:
        history = json.load(f)
      summary_path = os.path.join(model.uri, "training_summary.json")
      phases = {}
      if tf.io.gfile.exists(summary_path):
        with tf.io.gfile.GFile(summary_path) as f:
          phases = json.load(f).get("phases", {})
      for phase in (1, 2):
        rows = [r for r in history if r["phase"] == phase]
        if rows:
          # Wall time of the phase: includes phase 1's feature pass, not only its epochs.
          seconds = phases.get(str(phase), {}).get("seconds", sum(r["seconds"] for r in rows))
          lines.append(f"Training phase {phase}: {len(rows)} epochs, "
                       f"val_accuracy {rows[-1].get('val_accuracy', float('nan')):.4f}, "
                       f"{seconds:.0f}s")
  evaluation = run.artifact("Evaluator", "evaluation")
  blessing = run.artifact("Evaluator", "blessing")
  if evaluation is not None and blessing is not None:
    candidate = read_accuracy(evaluation.uri, "candidate")
    baseline = read_accuracy(evaluation.uri, "baseline")
    blessed = runs.int_property(blessing, "blessed") == 1
    lines.append(
        f"Evaluation: test accuracy {_fmt(candidate)} (threshold "
        f"{config.evaluate.accuracy_threshold:g}; baseline "
        f"{_fmt(baseline) if baseline is not None else 'none, first blessed model'}) -> "
        + ("BLESSED" if blessed else "NOT BLESSED"))
  pushed = run.artifact("Pusher", "pushed_model")
  if pushed is not None:
    if runs.int_property(pushed, "pushed") == 1:
      destination = pushed.custom_properties["pushed_destination"].string_value
      lines.append(f"Pushed: {destination}")
    else:
      lines.append(f"Not pushed: {config.serving_dir}/{config.model_name} is unchanged")
  lines.append(f"Artifacts: {config.pipeline_root}  metadata: {config.metadata_path}")
  return lines


def _fmt(value):
  return "n/a" if value is None else f"{value:.4f}"

