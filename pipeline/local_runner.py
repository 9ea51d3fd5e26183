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
from tfx.dsl.compiler import compiler
from tfx.orchestration import metadata
from tfx.utils import dependency_utils

from components.data_gate import read_anomalies
from components.blessing import read_verdict
from components.image_example_gen import detect_layout
from components.data_facts import report_path
from pipeline import runs
from pipeline.config import PipelineConfig, uses_direct_runner
from pipeline.pipeline import MODEL, READS_SERVED_MODEL, STATISTICS, create_pipeline
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
  """Runs (or resumes) the pipeline; returns the run as recorded in MLMD.

  The first run over a dataset with no schema runs up to StatisticsGen,
  infers the schema from those statistics, then runs the whole pipeline;
  ingestion and statistics are then reused from the cache.
  """
  config.validate()
  detect_layout(config.data.root, config.data.spans)  # a data problem stops the run before anything is written
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
  _skip_tfx_sdist_on_direct_runner()
  connection = metadata.sqlite_metadata_connection_config(config.metadata_path)
  ir = compiler.Compiler().compile(
      create_pipeline(config, schema_text, schema_source, connection))
  for node in list(ir.nodes):
    node_id = node.pipeline_node.node_info.id
    if stages is not None and node_id not in stages:
      ir.nodes.remove(node)  # only downstream stages go: what runs keeps its inputs
    elif node_id in READS_SERVED_MODEL:
      node.pipeline_node.execution_options.caching_options.enable_cache = False
  progress = _Progress(config.metadata_path, echo)
  progress.start()
  try:
    tfx.orchestration.LocalDagRunner().run_with_ir(ir)
  finally:
    progress.stop()


def data_lines(examples_uri: str, show: int = 20) -> list[str]:
  """What ingestion made of the photos: counts per split and class, the first
  `show` rejected files with their reasons."""
  with tf.io.gfile.GFile(report_path(examples_uri)) as f:
    report = json.load(f)
  lines = [f"Data: {report['num_examples']} examples, {report['num_rejected']} files "
           f"rejected, {report['num_ignored']} ignored ({report['data_root']})"]
  spans = report.get("spans") or {}
  for split, counts in report["examples"].items():
    in_spans = f"  (span {', '.join(map(str, spans[split]))})" if spans.get(split) else ""
    lines.append(f"  {split:<10} {sum(counts.values()):>6}  " +
                 ", ".join(f"{name} {n}" for name, n in counts.items()) + in_spans)
  for rejected in report["rejected"][:show]:
    lines.append(f"  rejected {rejected['path']}: {rejected['reason']}")
  if report["num_rejected"] > show:
    lines.append(f"  ... and {report['num_rejected'] - show} more in {report_path(examples_uri)}")
  return lines


def summarize(config: PipelineConfig, run: runs.PipelineRun) -> list[str]:
  """The end-of-run summary, read from the run's artifacts."""
  lines = [f"Run {run.run_id} of {config.pipeline_name}"]
  examples = run.artifact("ImageExampleGen", "examples")
  if examples is not None:
    lines += data_lines(examples.uri)
  anomalies = run.artifact("ExampleValidator", "anomalies")
  if anomalies is not None:
    found = read_anomalies(anomalies.uri, anomalies.properties["split_names"].string_value)
    lines.append("Anomalies: " + ("none" if not found else "\n  " + "\n  ".join(found)))
  drift = run.artifact("SpanDrift", "drift")
  if drift is not None and "compared" in drift.custom_properties:
    found = read_anomalies(drift.uri, drift.properties["split_names"].string_value)
    lines.append(f"Drift ({drift.custom_properties['compared'].string_value}): "
                 + ("within the schema's thresholds" if not found
                    else "\n  " + "\n  ".join(found)))
  model = run.artifact("Trainer", "model")
  summary_path = model and os.path.join(model.uri, "training_summary.json")
  if summary_path and tf.io.gfile.exists(summary_path):
    with tf.io.gfile.GFile(summary_path) as f:
      training = json.load(f)
    lines.append(f"Training: {training['base_model']} at {training['config']['image_size']} px"
                 + ("" if config.train.image_size else " (chosen from the photos' sizes)"))
    for phase, info in training["phases"].items():
      # Wall time of the phase: includes phase 1's feature pass, not only its epochs.
      lines.append(f"Training phase {phase}: skipped, {info['skipped']}" if "skipped" in info
                   else f"Training phase {phase}: {info.get('epochs', 0)} epochs in "
                        f"{info.get('seconds', 0):.0f}s")
    kept = training.get("exported")
    if kept:
      lines.append(f"Exported: phase {kept['phase']} epoch {kept['epoch']}, the best on "
                   f"validation (val_accuracy {kept.get('val_accuracy', float('nan')):.4f}, "
                   f"val_loss {kept.get('val_loss', float('nan')):.4f})")
  blessing = run.artifact("BlessingGate", "blessing")
  verdict = blessing and read_verdict(blessing.uri)
  if verdict:
    lines.append(f"Evaluation on the test split: accuracy {verdict['accuracy']:.4f}, "
                 f"balanced accuracy {verdict['balanced_accuracy']:.4f} -> "
                 + ("BLESSED" if verdict["blessed"] else "NOT BLESSED"))
    lines += [f"  {'passed' if c['passed'] else 'FAILED'} {c['rule']}: {c['text']}"
              for c in verdict["checks"]]
    if verdict.get("served_version") is None:
      lines.append(f"  no model is served yet under {config.serving_dir}/{config.model_name}")
    else:
      lines.append(f"  compared with the served version {verdict['served_version']} "
                   "on the same test photos")
    on_device = verdict.get("tflite")
    if on_device:
      lines.append(f"On-device model (TFLite {on_device['kind']}): {on_device['bytes'] / 1e6:.1f} MB, "
                   f"test accuracy {on_device['accuracy']:.4f}")
  pushed = run.artifact("Pusher", "pushed_model")
  if pushed is not None:
    if runs.int_property(pushed, "pushed") == 1:
      destination = pushed.custom_properties["pushed_destination"].string_value
      lines.append(f"Pushed: {destination}")
    else:
      lines.append(f"Not pushed: {config.serving_dir}/{config.model_name} is unchanged")
  lines.append(f"Artifacts: {config.pipeline_root}  metadata: {config.metadata_path}")
  return lines
