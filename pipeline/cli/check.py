"""`finetune check`: what a run would make of a photo folder, without training.

The run's own first stages (ImageExampleGen, StatisticsGen, the schema,
ExampleValidator and the data gate) run with the LocalDagRunner in a
temporary folder: the same code as a run, nothing recorded in the outputs.
"""
from __future__ import annotations

import json
import os
import tempfile

import tensorflow as tf
from tensorflow_metadata.proto.v0 import statistics_pb2

from components.data_gate import DataAnomaliesError
from components.image_example_gen import DataLayoutError, detect_layout
from pipeline import runs
from pipeline.config import PipelineConfig, with_overrides
from pipeline.cli.summary import anomaly_text, data_lines
from pipeline.run_result import read_result
from pipeline.local_runner import run_stages
from pipeline.pipeline import DATA_CHECK, STATISTICS
from pipeline.schema import read_schema

SAME_PHOTO = ("duplicate of", "conflicting labels")


def layout_line(config: PipelineConfig) -> str:
  layout = detect_layout(config.data.root, config.data.spans)
  spans = (f"spans {', '.join(map(str, layout.spans))} (data.spans={config.data.spans}; "
           f"test: span {layout.newest_span})" if layout.has_spans else "no spans")
  splits = ("train/validation/test folders" if layout.has_split_folders else
            "no split folders: split " + "/".join(
                str(config.data.split_ratios[s]) for s in ("train", "validation", "test"))
            + " by file name")
  return (f"Layout: {len(layout.class_names)} classes ({', '.join(layout.class_names)}); "
          f"{splits}; {spans}")


def _feature(stats: statistics_pb2.DatasetFeatureStatistics, name: str):
  return next((f for f in stats.features if f.path.step == [name]), None)


def size_lines(statistics_uri: str, split_names: list[str]) -> list[str]:
  """Image sizes and formats per split, from StatisticsGen's statistics."""
  lines = []
  for split in split_names:
    path = os.path.join(statistics_uri, f"Split-{split}", "FeatureStats.pb")
    if not tf.io.gfile.exists(path):
      continue
    stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(
        tf.io.gfile.GFile(path, "rb").read()).datasets[0]
    sizes = []
    for name in ("width", "height"):
      feature = _feature(stats, name)
      if feature is not None:
        n = feature.num_stats
        sizes.append(f"{name} {n.min:.0f}-{n.max:.0f} (median {n.median:.0f})")
    formats = _feature(stats, "format")
    top = ", ".join(f"{v.value} {v.frequency:.0f}"
                    for v in formats.string_stats.top_values) if formats else ""
    lines.append(f"  {split:<10} {', '.join(sizes)}; formats: {top}")
  return lines


def stopped_ingestion_lines(error: Exception, show: int = 20) -> list[str]:
  """What ingestion counted before it stopped the run (too thin to train), as
  the summary shows it: TFX removed its outputs, the report rode on the error."""
  report = getattr(error, "report", None)
  return data_lines(report, show) if report else []


def check(config: PipelineConfig, echo) -> int:
  """Prints the check; returns the exit code a run would end with (0 or 2)."""
  echo(f"Checking {config.data.root} (no training; nothing recorded)")
  echo(layout_line(config))
  schema = config.schema_file
  has_schema = tf.io.gfile.exists(schema)
  with tempfile.TemporaryDirectory(prefix="finetune-check-") as scratch:
    checked = with_overrides(config, {"output_dir": scratch, "data.schema_path": schema})
    os.makedirs(checked.run_dir, exist_ok=True)
    stopped = None
    try:
      if has_schema:
        run_stages(checked, read_schema(schema), schema, DATA_CHECK, echo=lambda line: None)
      else:
        run_stages(checked, "", schema, STATISTICS, echo=lambda line: None)
    except DataAnomaliesError as e:
      stopped = str(e)
    except DataLayoutError as e:  # too thin to train: the counts show why
      for line in stopped_ingestion_lines(e, show=10**6):
        echo(line)
      echo(f"Run stopped: {e}", err=True)
      return 2
    result = read_result(runs.load_run(runs.open_store(checked.metadata_path)))
    report = result.ingestion
    echo("\n".join(data_lines(report, show=10**6)))
    for ignored in report["ignored"]:
      echo(f"  ignored {ignored}")
    same = [r for r in report["rejected"] if r["reason"].startswith(SAME_PHOTO)]
    echo(f"Same photo more than once: {len(same)} files left out (listed above; under two "
         "classes every copy goes, under one class the first stays)" if same
         else "Same photo more than once: none")
    examples = result.run.artifact("ImageExampleGen", "examples")
    split_names = json.loads(examples.properties["split_names"].string_value)
    echo("Sizes and formats:")
    echo("\n".join(size_lines(result.run.artifact("StatisticsGen", "statistics").uri,
                              split_names)))
    if not has_schema:
      echo(f"Anomalies: not checked: no schema for {config.pipeline_name} yet "
           f"(the first run infers one into {config.inferred_schema_path})")
    else:
      echo(f"Anomalies against {schema}: " + anomaly_text(result.anomalies))
  if stopped:
    echo(f"Run stopped: {stopped}", err=True)
    return 2
  echo("A run would go ahead with this data.")
  return 0


