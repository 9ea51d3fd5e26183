"""The end-of-run summary: what a run did, read from its artifacts."""
from __future__ import annotations

import json
import os

import tensorflow as tf

from components.blessing import read_verdict
from components.data_facts import report_path
from components.data_gate import read_anomalies
from pipeline import runs
from pipeline.config import PipelineConfig


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
