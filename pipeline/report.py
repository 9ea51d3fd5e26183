"""`finetune report`: one HTML page (plus PNGs) showing how a run went.

Everything on the page is read back from the run's artifacts through ML
Metadata: the ingestion report, ExampleValidator's anomalies, the Trainer's
history and summary, TFMA's metrics and confusion matrix, the blessing and the
push. The misclassified gallery comes from running the trained model's
`serving_default` signature over the test split, as TFMA did.
"""
from __future__ import annotations

import html
import io
import json
import os
import pathlib

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline import runs  # noqa: E402
from pipeline.config import PipelineConfig  # noqa: E402

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


# ---------------------------------------------------------------- reading the run

def _read_json(path: str):
  import tensorflow as tf
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def precision_recall(matrix: list[list[int]], class_names: list[str]) -> dict:
  counts = np.array(matrix)
  table = {}
  for i, name in enumerate(class_names):
    predicted, actual = counts[:, i].sum(), counts[i, :].sum()
    table[name] = {"precision": float(counts[i, i] / predicted) if predicted else None,
                   "recall": float(counts[i, i] / actual) if actual else None,
                   "support": int(actual)}
  return table


def collect(config: PipelineConfig, run: runs.PipelineRun) -> dict:
  """Everything the page shows, as plain data (also written as report.json)."""
  from components.data_gate import read_anomalies
  from components.blessing import read_verdict
  from components.evaluation import predict_examples, read_confusion_matrix, read_metrics
  from components.image_example_gen.executor import report_path
  from components.trainer.train import HISTORY_FILE, SUMMARY_FILE

  data: dict = {"pipeline_name": config.pipeline_name, "run_id": run.run_id,
                "components": {n: {"state": r.state, "seconds": round(r.seconds, 1)}
                               for n, r in run.nodes.items()},
                "artifacts": {f"{node}.{key}": [a.uri for a in artifacts]
                              for node, r in run.nodes.items()
                              for key, artifacts in r.outputs.items()}}
  examples = run.artifact("ImageExampleGen", "examples")
  if examples is not None:
    data["ingestion"] = _read_json(report_path(examples.uri))
  anomalies = run.artifact("ExampleValidator", "anomalies")
  if anomalies is not None:
    data["anomalies"] = read_anomalies(anomalies.uri,
                                       anomalies.properties["split_names"].string_value)
  model = run.artifact("Trainer", "model")
  if model is not None:
    data["history"] = _read_json(os.path.join(model.uri, HISTORY_FILE))
    data["training"] = _read_json(os.path.join(model.uri, SUMMARY_FILE))
  evaluation = run.artifact("Evaluator", "evaluation")
  blessing = run.artifact("BlessingGate", "blessing")
  if evaluation is not None and data.get("training"):
    class_names = data["training"]["class_names"]
    matrix = read_confusion_matrix(evaluation.uri, len(class_names))
    data["evaluation"] = {
        "metrics": read_metrics(evaluation.uri, "candidate"),
        "confusion_matrix": matrix,
        "per_class": precision_recall(matrix, class_names) if matrix else None,
    }
    # The rules this run applied and how the candidate fared, not today's config.
    data["blessing"] = read_verdict(blessing.uri) if blessing is not None else None
    if examples is not None:
      predictions = predict_examples(os.path.join(model.uri, "Format-Serving"),
                                     os.path.join(examples.uri, "Split-test"))
      wrong = [p for p in predictions if p["predicted_class"] != p["true_class"]]
      data["test_predictions"] = len(predictions)
      # Worst first: the most confident mistakes.
      data["misclassified"] = sorted(wrong, key=lambda p: -p["probability"])
  pushed = run.artifact("Pusher", "pushed_model")
  if pushed is not None and runs.int_property(pushed, "pushed") == 1:
    data["pushed_to"] = pushed.custom_properties["pushed_destination"].string_value
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

def _num(value, digits=4) -> str:
  return "n/a" if value is None else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list]) -> str:
  head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
  body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                 for row in rows)
  return f"<table><tr>{head}</tr>{body}</table>"


def _data_section(data: dict) -> str:
  ingestion = data.get("ingestion")
  if not ingestion:
    return "<p>Ingestion did not finish in this run.</p>"
  names = ingestion["class_names"]
  rows = [[split, *(counts.get(n, 0) for n in names), sum(counts.values())]
          for split, counts in ingestion["examples"].items()]
  parts = [f"<p>Data root <code>{html.escape(ingestion['data_root'])}</code>: "
           f"{ingestion['num_examples']} examples, {ingestion['num_rejected']} files rejected, "
           f"{ingestion['num_ignored']} ignored.</p>",
           _table(["split", *names, "total"], rows)]
  if ingestion["rejected"]:
    parts.append("<h3>Rejected files</h3>" + _table(
        ["file", "reason"], [[r["path"], r["reason"]] for r in ingestion["rejected"]]))
  if ingestion["ignored"]:
    parts.append(f"<p>Ignored (hidden or outside class folders): "
                 f"{html.escape(', '.join(ingestion['ignored'][:50]))}"
                 f"{' …' if len(ingestion['ignored']) > 50 else ''}</p>")
  anomalies = data.get("anomalies")
  if anomalies is not None:
    parts.append("<h3>Anomalies</h3>" + ("<p>None: the data matches the curated schema.</p>"
                                         if not anomalies else
                                         "<ul>" + "".join(f"<li>{html.escape(a)}</li>"
                                                          for a in anomalies) + "</ul>"))
  return "\n".join(parts)


def _training_section(data: dict) -> str:
  history, training = data.get("history"), data.get("training")
  if not history or not training:
    return "<p>Training did not run in this run.</p>"
  rows = [[r["epoch"], r["phase"], _num(r.get("loss")), _num(r.get("accuracy")),
           _num(r.get("val_loss")), _num(r.get("val_accuracy")), f"{r['learning_rate']:g}",
           f"{r['seconds']:.1f}"] for r in history]
  phases = [[phase, info.get("epochs"), info.get("trainable_params"),
             info.get("unfrozen_layers", "none (base frozen)"), info.get("seconds")]
            for phase, info in training["phases"].items()]
  kept = training.get("exported")
  exported = (f"<p>Exported model: phase {kept['phase']}, epoch {kept['epoch']}, the best on "
              f"validation: val_accuracy {_num(kept.get('val_accuracy'))}, val_loss "
              f"{_num(kept.get('val_loss'))}.</p>" if kept else "")
  return ("<img src='curves.png' alt='training curves'>" + exported
          + _table(["phase", "epochs", "trainable parameters", "unfrozen base layers",
                    "seconds"], phases)
          + _table(["epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy",
                    "learning rate", "seconds"], rows))


def _evaluation_section(data: dict) -> str:
  evaluation, blessing = data.get("evaluation"), data.get("blessing")
  if not evaluation:
    return "<p>The Evaluator did not run in this run.</p>"
  parts = []
  if blessing:
    verdict = "BLESSED" if blessing["blessed"] else "NOT BLESSED"
    baseline = ("none: no model was served yet" if blessing["baseline_accuracy"] is None
                else _num(blessing["baseline_accuracy"]))
    parts.append(
        f"<p class='verdict {'ok' if blessing['blessed'] else 'bad'}'>{verdict}: test accuracy "
        f"{_num(blessing['accuracy'])}, balanced accuracy "
        f"{_num(blessing['balanced_accuracy'])}; served model {baseline}.</p>")
    parts.append(_table(["rule", "result", "why"],
                        [[c["rule"], "passed" if c["passed"] else "FAILED", c["text"]]
                         for c in blessing["checks"]]))
  if data.get("pushed_to"):
    parts.append(f"<p>Pushed to <code>{html.escape(data['pushed_to'])}</code>.</p>")
  if evaluation.get("confusion_matrix"):
    parts.append("<img src='confusion_matrix.png' alt='confusion matrix'>")
  if evaluation.get("per_class"):
    parts.append(_table(["class", "precision", "recall", "test examples"],
                        [[name, _num(v["precision"]), _num(v["recall"]), v["support"]]
                         for name, v in evaluation["per_class"].items()]))
  metrics = evaluation.get("metrics") or {}
  if metrics:
    names = sorted({m for values in metrics.values() for m in values})
    parts.append("<h3>TFMA metrics</h3>" + _table(
        ["slice", *names], [[s, *(_num(v.get(m)) for m in names)] for s, v in metrics.items()]))
  return "\n".join(parts)


def _gallery_section(data: dict) -> str:
  if "misclassified" not in data:
    return "<p>No evaluated model in this run.</p>"
  wrong = data["misclassified"]
  if not wrong:
    return f"<p>All {data['test_predictions']} test images are classified correctly.</p>"
  cards = "".join(
      f"<figure><img src='misclassified/{i:04d}.png' alt='{html.escape(p['path'])}'>"
      f"<figcaption>{html.escape(p['path'])}<br>true <b>{html.escape(p['true_class'])}</b>, "
      f"predicted <b>{html.escape(p['predicted_class'])}</b> ({p['probability']:.3f})"
      f"</figcaption></figure>"
      for i, p in enumerate(wrong[:MAX_THUMBNAILS]))
  listing = _table(["file", "true class", "predicted class", "probability"],
                   [[p["path"], p["true_class"], p["predicted_class"],
                     f"{p['probability']:.4f}"] for p in wrong])
  return (f"<p>{len(wrong)} of {data['test_predictions']} test images misclassified, "
          f"most confident mistakes first.</p><div class='gallery'>{cards}</div>{listing}")


def _lineage_section(data: dict) -> str:
  training = data.get("training") or {}
  rows = [["pipeline", data["pipeline_name"]], ["run id", data["run_id"]],
          ["base model", training.get("base_model", "n/a")],
          ["weights", training.get("weights", "n/a")]]
  rows += [[f"train.{k}", v] for k, v in sorted((training.get("config") or {}).items())]
  components = _table(["component", "state", "seconds"],
                      [[n, c["state"], c["seconds"]] for n, c in data["components"].items()])
  artifacts = _table(["artifact", "URI"], [[k, ", ".join(v)] for k, v in data["artifacts"].items()])
  return _table(["", ""], rows) + components + artifacts


_STYLE = """body{font-family:sans-serif;max-width:1150px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #ccc;padding:3px 8px;
font-size:13px;text-align:left}th{background:#f3f3f3}img{max-width:100%}
.gallery{display:flex;flex-wrap:wrap;gap:10px}figure{margin:0;width:170px;font-size:11px}
.verdict{font-size:18px;font-weight:bold}.ok{color:#17702a}.bad{color:#b00020}
code{background:#f3f3f3;padding:1px 4px}"""


def render(data: dict) -> str:
  sections = [("Blessing and test evaluation", _evaluation_section(data)),
              ("Training", _training_section(data)),
              ("Misclassified test images", _gallery_section(data)),
              ("Data", _data_section(data)),
              ("Lineage", _lineage_section(data))]
  body = "".join(f"<h2>{title}</h2>\n{content}\n" for title, content in sections)
  title = f"{data['pipeline_name']} run {data['run_id']}"
  return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
          f"</title><style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
          f"{body}</body></html>")


def default_report_dir(config: PipelineConfig, run_id: str) -> pathlib.Path:
  return pathlib.Path(config.reports_dir) / run_id.replace(":", "-")


def write_report(config: PipelineConfig, run: runs.PipelineRun,
                 output_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """Writes index.html, its PNGs and report.json; returns the HTML file's path."""
  out = pathlib.Path(output_dir) if output_dir else default_report_dir(config, run.run_id)
  out.mkdir(parents=True, exist_ok=True)
  data = collect(config, run)
  if data.get("history"):
    plot_curves(data["history"], out / "curves.png")
  evaluation = data.get("evaluation") or {}
  if evaluation.get("confusion_matrix"):
    plot_confusion_matrix(evaluation["confusion_matrix"], data["training"]["class_names"],
                          out / "confusion_matrix.png")
  if data.get("misclassified"):
    (out / "misclassified").mkdir(exist_ok=True)
    for i, prediction in enumerate(data["misclassified"][:MAX_THUMBNAILS]):
      save_thumbnail(prediction["image"], out / "misclassified" / f"{i:04d}.png")
  for prediction in data.get("misclassified", []):
    del prediction["image"]
  (out / DATA_FILE).write_text(json.dumps(data, indent=1))
  (out / REPORT_FILE).write_text(render(data))
  return out / REPORT_FILE
