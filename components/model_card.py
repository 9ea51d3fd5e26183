"""The model card that travels with every pushed version.

`assets.extra/model_card.json` and `model_card.html` inside the version
folder: TF Serving ignores `assets.extra` (its warm-up file aside), and the
card moves with the version when it is copied or rolled back. It says what
anyone looking at a served model asks: which classes, trained on how many
photos, how accurate on which test photos, per class, against which model it
replaced, with which settings, and what it is for.
"""
from __future__ import annotations

import json

import jinja2

INTENDED_USE = (
    "Classifies a photo into one of the classes below; every photo gets one of them, "
    "so photos of anything else get a wrong answer with a confidence that does not "
    "say so. Judged only on test photos like the training ones (same source, same "
    "kind of camera); check it on your own photos before relying on it elsewhere.")

_TEMPLATE = jinja2.Environment(autoescape=True).from_string("""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{ c.model_name }} version {{ c.version }}</title>
<style>body{font-family:sans-serif;max-width:900px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#f3f3f3}</style></head><body>
<h1>{{ c.model_name }}, version {{ c.version }}</h1>
<p>{{ c.intended_use }}</p>
<p><b>Limitations.</b> {% for line in c.limitations %}{{ line }} {% endfor %}</p>
<h2>Test evaluation</h2>
<p>Accuracy {{ "%.4f"|format(c.accuracy) }}, balanced accuracy {{ "%.4f"|format(c.balanced_accuracy) }}
{%- if c.baseline.version %}; it replaced version {{ c.baseline.version }} (accuracy
{{ "%.4f"|format(c.baseline.accuracy) }} on the same test photos){% else %}; no model was served before it{% endif %}.</p>
<table><tr><th>class</th><th>recall</th>{% for split in c.splits %}<th>{{ split }} photos</th>{% endfor %}</tr>
{% for name in c.classes %}<tr><td>{{ name }}</td><td>{{ "n/a" if c.recall[name] is none else "%.4f"|format(c.recall[name]) }}</td>
{% for split in c.splits %}<td>{{ c.photos[split][name] }}</td>{% endfor %}</tr>{% endfor %}</table>
<h3>Confusion matrix (rows: true class, columns: predicted)</h3>
<table><tr><th></th>{% for name in c.classes %}<th>{{ name }}</th>{% endfor %}</tr>
{% for row in c.confusion_matrix %}<tr><th>{{ c.classes[loop.index0] }}</th>{% for n in row %}<td>{{ n }}</td>{% endfor %}</tr>{% endfor %}</table>
{% if c.spans %}<p>Spans: {% for split, spans in c.spans.items() %}{{ split }} {{ spans|join(", ") }}{% if not loop.last %}; {% endif %}{% endfor %}</p>{% endif %}
{% if c.tflite %}<h2>On-device model</h2>
<p><code>assets.extra/model.tflite</code> ({{ c.tflite.kind }}, {{ "%.1f"|format(c.tflite.bytes / 1e6) }} MB):
test accuracy {{ "%.4f"|format(c.tflite.accuracy) }} against the served model's {{ "%.4f"|format(c.accuracy) }}.
It takes RGB pixels 0-255 resized to {{ c.image_size }} x {{ c.image_size }}; the app decodes and resizes the photo.</p>{% endif %}
<h2>Training</h2>
<p>{{ c.base_model }} (weights {{ c.weights }}) at {{ c.image_size }} px.</p>
<table>{% for key, value in c.settings.items() %}<tr><td>{{ key }}</td><td>{{ value }}</td></tr>{% endfor %}</table>
</body></html>
""")


def model_card(model_name: str, version: int, verdict: dict, training: dict) -> dict:
  """The card's content, from BlessingGate's verdict and the Trainer's summary."""
  settings = training.get("config", {})
  return {
      "limitations": limitations(verdict),
      "model_name": model_name, "version": version, "intended_use": INTENDED_USE,
      "classes": verdict["class_names"], "photos": verdict["photos"],
      "splits": list(verdict["photos"]), "spans": verdict.get("spans") or {},
      "accuracy": verdict["accuracy"], "balanced_accuracy": verdict["balanced_accuracy"],
      "recall": verdict["recall"], "confusion_matrix": verdict["confusion_matrix"],
      "checks": [c["text"] for c in verdict["checks"]],
      "baseline": {"version": verdict.get("served_version"),
                   "accuracy": verdict.get("baseline_accuracy")},
      "base_model": training.get("base_model"), "weights": training.get("weights"),
      "image_size": settings.get("image_size"), "settings": settings,
      "tflite": verdict.get("tflite"),
  }


def limitations(verdict: dict) -> list[str]:
  """What the numbers do not cover: the smallest class, the weakest, the test photos' source."""
  train = verdict["photos"].get("train", {})
  lines = []
  if train:
    smallest = min(train, key=train.get)
    lines.append(f"The smallest class, {smallest}, had {train[smallest]} training photos.")
  measured = {name: r for name, r in verdict["recall"].items() if r is not None}
  if measured:
    weakest = min(measured, key=measured.get)
    lines.append(f"The class it finds least often is {weakest} (recall {measured[weakest]:.4f}).")
  tested = sum(verdict["photos"].get("test", {}).values())
  lines.append(f"It was tested on {tested} photos from the same folders as its training photos, "
               "none from elsewhere.")
  return lines


def card_files(card: dict) -> dict[str, str]:
  """File name -> text."""
  return {"model_card.json": json.dumps(card, indent=1, sort_keys=True),
          "model_card.html": _TEMPLATE.render(c=card)}
