"""`finetune report`: one HTML page (plus PNGs) showing how a run went.

Everything on the page is the run's RunResult (pipeline/run_result.py): the
ingestion report, ExampleValidator's anomalies, the Trainer's history and
summary, TFMA's metrics and confusion matrix, the blessing and the push. The misclassified gallery comes from running the trained model's
`serving_default` signature over the test split, as TFMA did.
"""
from __future__ import annotations

import io
import json
import os
import pathlib

import jinja2
import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline.config import PipelineConfig  # noqa: E402
from pipeline.run_result import RunResult  # noqa: E402

EMA_FACTOR = 0.8
THUMBNAIL_SIDE = 160
MAX_THUMBNAILS = 60   # the worst mistakes get pictures; every one is listed
REPORT_FILE = "index.html"
DATA_FILE = "report.json"


def smooth(values: list[float], factor: float = EMA_FACTOR) -> list[float]:
  """Exponential moving average, as in the Keras transfer-learning guide."""
  smoothed: list[float] = []
  for value in values:
    smoothed.append(value if not smoothed else smoothed[-1] * factor + value * (1 - factor))
  return smoothed


# ---------------------------------------------------------------- the run's data

def precision_recall(matrix: list[list[int]], class_names: list[str]) -> dict:
  counts = np.array(matrix)
  table = {}
  for i, name in enumerate(class_names):
    predicted, actual = counts[:, i].sum(), counts[i, :].sum()
    table[name] = {"precision": float(counts[i, i] / predicted) if predicted else None,
                   "recall": float(counts[i, i] / actual) if actual else None,
                   "support": int(actual)}
  return table


def collect(config: PipelineConfig, result: RunResult) -> dict:
  """Everything the page shows, as plain data (also written as report.json)."""
  from components.evaluation import predict_examples
  run = result.run
  data: dict = {"pipeline_name": config.pipeline_name, "run_id": run.run_id,
                "components": {n: {"state": r.state, "seconds": round(r.seconds, 1)}
                               for n, r in run.nodes.items()},
                "artifacts": {f"{node}.{key}": [a.uri for a in artifacts]
                              for node, r in run.nodes.items()
                              for key, artifacts in r.outputs.items()}}
  examples = run.artifact("ImageExampleGen", "examples")
  if examples is not None:
    data["ingestion"] = result.ingestion
  if result.anomalies is not None or result.drift is not None:
    # The newest span against the previous one, in the same list.
    data["anomalies"] = (result.anomalies or []) + (result.drift or [])
  model = run.artifact("Trainer", "model")
  if model is not None:
    data["history"], data["training"] = result.history, result.training
  if result.evaluation is not None:
    matrix = result.evaluation["confusion_matrix"]
    data["evaluation"] = dict(result.evaluation, per_class=precision_recall(
        matrix, result.training["class_names"]) if matrix else None)
    # The rules this run applied and how the candidate fared, not today's config.
    data["blessing"] = result.verdict
    if examples is not None:
      predictions = predict_examples(os.path.join(model.uri, "Format-Serving"),
                                     os.path.join(examples.uri, "Split-test"))
      wrong = [p for p in predictions if p["predicted_class"] != p["true_class"]]
      data["test_predictions"] = len(predictions)
      # Worst first: the most confident mistakes.
      data["misclassified"] = sorted(wrong, key=lambda p: -p["probability"])
  if result.pushed:
    data["pushed_to"] = result.pushed_to
  return data


# ---------------------------------------------------------------- pictures

def plot_curves(history: list[dict], path: pathlib.Path) -> None:
  """Accuracy and loss, train vs validation, both phases on one epoch axis."""
  epochs = list(range(1, len(history) + 1))
  phase1 = sum(1 for row in history if row["phase"] == 1)
  figure, axes = plt.subplots(1, 2, figsize=(11, 4))
  for ax, metric in zip(axes, ("accuracy", "loss")):
    for key, color, label in ((metric, "tab:blue", "training"),
                              (f"val_{metric}", "tab:orange", "validation")):
      values = [row.get(key, np.nan) for row in history]
      ax.plot(epochs, values, color=color, alpha=0.35, marker="o", markersize=3,
              linewidth=1, label=f"{label} (raw)")
      ax.plot(epochs, smooth(values), color=color, linewidth=2,
              label=f"{label} (EMA {EMA_FACTOR})")
    if 0 < phase1 < len(history):
      ax.axvline(phase1 + 0.5, color="gray", linestyle="--")
      ax.text(phase1 + 0.6, 0.98, "phase 2: fine-tune", transform=ax.get_xaxis_transform(),
              va="top", fontsize=8, color="gray")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_title(metric)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8, loc="lower right")
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def plot_confusion_matrix(matrix: list[list[int]], class_names: list[str],
                          path: pathlib.Path) -> None:
  counts = np.array(matrix)
  size = 2.5 + 0.6 * len(class_names)
  figure, ax = plt.subplots(figsize=(size, size))
  ax.imshow(counts, cmap="Blues")
  ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
  ax.set_yticks(range(len(class_names)), class_names)
  ax.set_xlabel("predicted class")
  ax.set_ylabel("true class")
  for (i, j), value in np.ndenumerate(counts):
    ax.text(j, i, str(value), ha="center", va="center",
            color="white" if value > counts.max() / 2 else "black")
  ax.set_title("test split")
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def save_thumbnail(image_bytes: bytes, path: pathlib.Path) -> None:
  image = Image.open(io.BytesIO(image_bytes))
  image.seek(0)
  image = image.convert("RGB")
  image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
  image.save(path, "PNG")


# ---------------------------------------------------------------- the page

# The markup and styling live in templates/report.html.j2, so the page changes
# without touching Python. Autoescaping shows file and class names as text.
PAGE_TEMPLATE = "report.html.j2"
_PAGES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(pathlib.Path(__file__).parent / "templates"),
    autoescape=True, trim_blocks=True, lstrip_blocks=True)


def _num(value, digits=4) -> str:
  # A value the run did not record (None, or a key missing in the template) is n/a.
  return "n/a" if value is None or isinstance(value, jinja2.Undefined) else f"{value:.{digits}f}"


_PAGES.filters["num"] = _num


def thumbnail_name(index: int) -> str:
  return f"misclassified/{index:04d}.png"


def _table(header: list[str], rows: list[list]) -> dict:
  return {"header": header, "rows": rows}


def _means_something(slice_name: str, metric: str) -> bool:
  """Whether `metric` means something on `slice_name`. A class_name slice holds
  one class, so a one-vs-rest metric there (AUC of class i, "auc[classId:i]") has
  only positives or only negatives: TFMA writes 0 for it. Its example count and
  accuracy (that class's recall) do mean something."""
  return not (slice_name.startswith("class_name=") and "[classId:" in metric)


def _tables(data: dict) -> dict:
  """The page's tables: a header and rows of cells ready to show."""
  tables = {}
  ingestion = data.get("ingestion")
  if ingestion:
    names = ingestion["class_names"]
    spans = ingestion.get("spans") or {}  # which data drops each split holds
    tables["splits"] = _table(
        ["split", *names, "total", *(["spans"] if spans else [])],
        [[split, *(counts.get(n, 0) for n in names), sum(counts.values()),
          *([", ".join(map(str, spans.get(split, [])))] if spans else [])]
         for split, counts in ingestion["examples"].items()])
    tables["rejected"] = _table(["file", "reason"],
                                [[r["path"], r["reason"]] for r in ingestion["rejected"]])
  training = data.get("training") or {}
  if data.get("history") and training:
    tables["epochs"] = _table(
        ["epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy", "learning rate",
         "seconds"],
        [[r["epoch"], r["phase"], _num(r.get("loss")), _num(r.get("accuracy")),
          _num(r.get("val_loss")), _num(r.get("val_accuracy")), f"{r['learning_rate']:g}",
          f"{r['seconds']:.1f}"] for r in data["history"]])
    tables["phases"] = _table(
        ["phase", "epochs", "trainable parameters", "unfrozen base layers", "seconds"],
        [[phase, info.get("epochs"), info.get("trainable_params"),
          info.get("unfrozen_layers", f"skipped: {info['skipped']}" if "skipped" in info
                   else "none (base frozen)"), info.get("seconds")]
         for phase, info in training["phases"].items()])
  if data.get("blessing"):
    tables["rules"] = _table(["rule", "result", "why"],
                             [[c["rule"], "passed" if c["passed"] else "FAILED", c["text"]]
                              for c in data["blessing"]["checks"]])
  evaluation = data.get("evaluation") or {}
  if evaluation.get("per_class"):
    tables["per_class"] = _table(["class", "precision", "recall", "test examples"],
                                 [[name, _num(v["precision"]), _num(v["recall"]), v["support"]]
                                  for name, v in evaluation["per_class"].items()])
  metrics = evaluation.get("metrics") or {}
  if metrics:
    names = sorted({m for values in metrics.values() for m in values})
    tables["metrics"] = _table(["slice", *names],
                               [[s, *(_num(v.get(m)) if _means_something(s, m) else "-"
                                      for m in names)] for s, v in metrics.items()])
  tables["misclassified"] = _table(["file", "true class", "predicted class", "probability"],
                                   [[p["path"], p["true_class"], p["predicted_class"],
                                     f"{p['probability']:.4f}"]
                                    for p in data.get("misclassified", [])])
  rows = [["pipeline", data["pipeline_name"]], ["run id", data["run_id"]],
          ["base model", training.get("base_model", "n/a")],
          ["weights", training.get("weights", "n/a")]]
  rows += [[f"train.{k}", v] for k, v in sorted((training.get("config") or {}).items())]
  tables["lineage"] = _table(["", ""], rows)
  tables["components"] = _table(["component", "state", "seconds"],
                                [[n, c["state"], c["seconds"]]
                                 for n, c in data["components"].items()])
  tables["artifacts"] = _table(["artifact", "URI"],
                               [[k, ", ".join(v)] for k, v in data["artifacts"].items()])
  return tables


def render(data: dict) -> str:
  cards = [dict(p, src=thumbnail_name(i))
           for i, p in enumerate(data.get("misclassified", [])[:MAX_THUMBNAILS])]
  return _PAGES.get_template(PAGE_TEMPLATE).render(data=data, tables=_tables(data), cards=cards)


def default_report_dir(config: PipelineConfig, run_id: str) -> pathlib.Path:
  return pathlib.Path(config.reports_dir) / run_id.replace(":", "-")


def write_report(config: PipelineConfig, result: RunResult,
                 output_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """Writes index.html, its PNGs and report.json; returns the HTML file's path."""
  out = pathlib.Path(output_dir) if output_dir else default_report_dir(config, result.run_id)
  out.mkdir(parents=True, exist_ok=True)
  data = collect(config, result)
  if data.get("history"):
    plot_curves(data["history"], out / "curves.png")
  evaluation = data.get("evaluation") or {}
  if evaluation.get("confusion_matrix"):
    plot_confusion_matrix(evaluation["confusion_matrix"], data["training"]["class_names"],
                          out / "confusion_matrix.png")
  if data.get("misclassified"):
    (out / "misclassified").mkdir(exist_ok=True)
    for i, prediction in enumerate(data["misclassified"][:MAX_THUMBNAILS]):
      save_thumbnail(prediction["image"], out / thumbnail_name(i))
  for prediction in data.get("misclassified", []):
    del prediction["image"]
  (out / DATA_FILE).write_text(json.dumps(data, indent=1))
  (out / REPORT_FILE).write_text(render(data))
  return out / REPORT_FILE
