"""The end-of-run summary: what a run did, as its RunResult holds it."""
from __future__ import annotations

from pipeline.config import PipelineConfig
from pipeline.run_result import RunResult


def data_lines(report: dict, show: int = 20, where: str | None = None) -> list[str]:
  """What ingestion made of the photos (its report): counts per split and class,
  the first `show` rejected files with their reasons; `where` the report is kept."""
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
    lines.append(f"  ... and {report['num_rejected'] - show} more"
                 + (f" in {where}" if where else ""))
  return lines


def anomaly_text(found: list[str], none: str = "none") -> str:
  return none if not found else "\n  " + "\n  ".join(found)


def summarize(config: PipelineConfig, result: RunResult) -> list[str]:
  """The end-of-run summary."""
  lines = [f"Run {result.run_id} of {config.pipeline_name}"]
  if result.ingestion:
    lines += data_lines(result.ingestion, where=result.ingestion_path)
  if result.anomalies is not None:
    lines.append("Anomalies: " + anomaly_text(result.anomalies))
  if result.drift_compared is not None:
    lines.append(f"Drift ({result.drift_compared}): "
                 + anomaly_text(result.drift, "within the schema's thresholds"))
  training = result.training
  if training:
    lines.append(f"Training: {training['base_model']} at {training['config']['image_size']} px"
                 + ("" if config.train.image_size else " (chosen from the photos' sizes)"))
    for phase, info in training["phases"].items():
      # Wall time of the phase: includes phase 1's feature pass and phase 2's
      # pass through the frozen blocks, not only the epochs.
      epochs = info.get("epochs", 0)
      lines.append(f"Training phase {phase}: skipped, {info['skipped']}" if "skipped" in info
                   else f"Training phase {phase}: {epochs} epoch{'s' * (epochs != 1)} in "
                        f"{info.get('seconds', 0):.0f}s")
    kept = training.get("exported")
    if kept:
      lines.append(f"Exported: phase {kept['phase']} epoch {kept['epoch']}, the best on "
                   f"validation (val_accuracy {kept.get('val_accuracy', float('nan')):.4f}, "
                   f"val_loss {kept.get('val_loss', float('nan')):.4f})")
  verdict = result.verdict
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
  if result.pushed is not None:
    lines.append(f"Pushed: {result.pushed_to}" if result.pushed
                 else f"Not pushed: {config.serving_dir}/{config.model_name} is unchanged")
  lines.append(f"Artifacts: {config.pipeline_root}  metadata: {config.metadata_path}")
  return lines
