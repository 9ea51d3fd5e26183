"""`finetune experiment`: train one variant per value, compare them on the test split.

Every variant runs the same pipeline (without baseline and Pusher) under one
experiment pipeline name, so ingestion, validation and Transform run once and
later variants reuse them from the cache; only Trainer and Evaluator rerun.
Experiment models are never blessed against, nor pushed to, the served model.
"""
from __future__ import annotations

import csv
import pathlib
import time

from pipeline import runs
from pipeline.config import PipelineConfig, with_overrides

# Experiment kind -> the setting it varies.
KINDS = {"bases": "train.base_model", "unfreeze": "train.unfreeze",
         "sizes": "train.image_size"}
COLUMNS = ["variant", "status", "test_accuracy", "validation_accuracy", "training_seconds",
           "phase1_trainable_params", "phase2_trainable_params", "unfrozen_layers", "error"]


def experiment_config(config: PipelineConfig) -> PipelineConfig:
  """The experiment's own pipeline name: its runs never become the served baseline.

  It validates against the dataset's own schema, not one of its own.
  """
  return with_overrides(config, {"pipeline_name": f"{config.validate().pipeline_name}-experiments",
                                 "data.schema_path": config.schema_file})


def _root_cause(error: BaseException) -> str:
  while error.__cause__ is not None:
    error = error.__cause__
  return f"{type(error).__name__}: {error}".strip()


def _result_row(value: str, run: runs.PipelineRun) -> dict:
  from components.evaluation import read_accuracy
  from pipeline.run_result import read_result
  summary = read_result(run).training
  phases = summary["phases"]
  kept = summary["exported"]  # the epoch whose weights were exported, either phase
  return {
      "variant": value, "status": "ok",
      "test_accuracy": read_accuracy(run.artifact("Evaluator", "evaluation").uri, "candidate"),
      "validation_accuracy": kept["val_accuracy"],
      "training_seconds": round(sum(p["seconds"] for p in phases.values()), 1),
      "phase1_trainable_params": phases["1"]["trainable_params"],
      "phase2_trainable_params": phases.get("2", {}).get("trainable_params"),
      "unfrozen_layers": phases.get("2", {}).get("unfrozen_layers", 0),
      "error": "",
  }


def run_experiment(config: PipelineConfig, kind: str, values: list[str], echo=print,
                   output_dir: str | None = None) -> tuple[list[dict], pathlib.Path]:
  """Runs every variant (a failing one does not stop the rest); writes the comparison."""
  from pipeline.local_runner import run_pipeline
  setting = KINDS[kind]
  base_config = experiment_config(config)
  if kind == "unfreeze":  # phase 2 is what differs: it runs however good phase 1 is
    base_config = with_overrides(base_config, {"train.phase2_max_accuracy": 1.0})
  rows = []
  for i, value in enumerate(values, 1):
    echo(f"=== Variant {i}/{len(values)}: {setting}={value}")
    try:
      variant = with_overrides(base_config, {setting: value}).validate()
      run = run_pipeline(variant, echo=echo, experiment=True)
      rows.append(_result_row(value, run))
    except KeyboardInterrupt:
      raise
    except Exception as e:  # noqa: BLE001  (one variant's failure must not stop the rest)
      echo(f"Variant {setting}={value} failed: {_root_cause(e)}")
      rows.append({"variant": value, "status": "failed", "error": _root_cause(e)})
  out = pathlib.Path(output_dir) if output_dir else (
      pathlib.Path(base_config.run_dir) / "comparisons" / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}")
  write_comparison(rows, kind, setting, out)
  return rows, out


def to_markdown(rows: list[dict], setting: str) -> str:
  def cell(row, column):
    value = row.get(column)
    if value is None or value == "":
      return "–"
    if column.endswith("accuracy"):
      return f"{value:.4f}"
    if column == "training_seconds":
      return f"{value:.0f}"
    if column.endswith("params"):
      return f"{value:,}"
    return str(value).replace("|", "\\|")
  header = [setting] + COLUMNS[1:]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(cell(row, c) for c in COLUMNS) + " |" for row in rows]
  return "\n".join(lines) + "\n"


def plot_comparison(rows: list[dict], setting: str, path: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  done = [r for r in rows if r["status"] == "ok"]
  figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
  names = [str(r["variant"]) for r in done]
  # Validation first: it is what to choose by; the test split is the final figure.
  width = 0.4
  for offset, column, color in ((-width / 2, "validation_accuracy", "tab:green"),
                                (width / 2, "test_accuracy", "tab:blue")):
    values = [r[column] for r in done]
    left.bar([x + offset for x in range(len(done))], values, width, color=color,
             label=column.split("_")[0])
    for x, value in enumerate(values):
      left.text(x + offset, value, f"{value:.3f}", ha="center", va="bottom", fontsize=8)
  left.set_xticks(range(len(done)), names)
  accuracies = [r[c] for r in done for c in ("validation_accuracy", "test_accuracy")]
  if accuracies:
    left.set_ylim(max(0.0, min(accuracies) - 0.1), 1.03)  # room for the labels
    left.legend(loc="lower right", fontsize=8)
  left.set_title("accuracy (choose by validation)")
  right.bar(names, [r["training_seconds"] / 60 for r in done], color="tab:orange")
  right.set_title("training time (minutes)")
  for ax in (left, right):
    ax.set_xlabel(setting)
    ax.tick_params(axis="x", rotation=20)
  failed = [str(r["variant"]) for r in rows if r["status"] != "ok"]
  if failed:
    figure.suptitle(f"failed: {', '.join(failed)}", fontsize=9, color="tab:red")
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def write_comparison(rows: list[dict], kind: str, setting: str, out: pathlib.Path) -> None:
  out.mkdir(parents=True, exist_ok=True)
  with open(out / "comparison.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS, restval="")
    writer.writeheader()
    writer.writerows(rows)
  (out / "comparison.md").write_text(f"# Experiment: {kind} ({setting})\n\n"
                                     + to_markdown(rows, setting))
  plot_comparison(rows, setting, out / "comparison.png")
