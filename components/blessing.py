"""BlessingGate: decides whether the candidate model may replace the served one.

TFMA computes the test metrics (the Evaluator); this component applies the
rules to them and writes the ModelBlessing that the Pusher obeys. The rules
live here, not in TFMA thresholds, because TFMA's per-class recall is not the
argmax recall (its top_k binarization is ignored for two-column outputs), and
because the verdict should say which rule failed and why.

Rules (evaluate.* settings; README, "When a model is blessed"):
  balanced accuracy  mean per-class recall (argmax, from TFMA's confusion matrix)
                     >= 1/N + min_gain_over_chance * (1 - 1/N):
                     clearly better than always answering one class, whatever the balance
  class recall       every class's recall >= min_class_recall (0 = off)
  accuracy           test accuracy >= accuracy_threshold (0 = off)
  baseline           test accuracy >= the served model's - max_accuracy_drop (when one is
                     served: the highest version in the push destination, as TF Serving picks)
"""

import json
import os

import tensorflow as tf
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types.standard_artifacts import Examples, Model, ModelBlessing, ModelEvaluation

VERDICT_FILE = "verdict.json"


def judge(accuracy: float, recall: dict[str, float | None], baseline_accuracy: float | None,
          min_gain_over_chance: float, min_class_recall: float, accuracy_threshold: float,
          max_accuracy_drop: float) -> dict:
  """The verdict: {"blessed", "checks": [{rule, passed, value, bound, text}], ...}.

  `recall` maps each class to its test recall (None: no test photos of it);
  `baseline_accuracy` is the served model's on the same photos, None if none is served.
  """
  chance = 1 / len(recall)
  measured = {name: value for name, value in recall.items() if value is not None}
  balanced = sum(measured.values()) / len(measured)
  bound = chance + min_gain_over_chance * (1 - chance)
  checks = [{
      "rule": "balanced accuracy", "value": balanced, "bound": bound,
      "passed": balanced >= bound,
      "text": f"balanced accuracy {balanced:.4f} vs {bound:.4f} needed "
              f"(always answering one class scores {chance:.4f})"}]
  if min_class_recall > 0:
    worst = min(measured, key=measured.get)
    failing = [name for name, value in measured.items() if value < min_class_recall]
    unseen = [name for name, value in recall.items() if value is None]
    if failing:
      text = (f"recall below {min_class_recall:g} for "
              + ", ".join(f"{n} ({measured[n]:.4f})" for n in failing))
    elif unseen:  # a class the test split does not show cannot be vouched for
      text = f"no test photos of {', '.join(unseen)}: their recall is unknown"
    else:
      text = (f"every class's recall >= {min_class_recall:g} (lowest: {worst} "
              f"{measured[worst]:.4f})")
    checks.append({"rule": "class recall", "value": measured[worst], "bound": min_class_recall,
                   "passed": not failing and not unseen, "text": text})
  if accuracy_threshold > 0:
    checks.append({
        "rule": "accuracy", "value": accuracy, "bound": accuracy_threshold,
        "passed": accuracy >= accuracy_threshold,
        "text": f"test accuracy {accuracy:.4f} vs {accuracy_threshold:g} needed"})
  if baseline_accuracy is not None:
    bound = baseline_accuracy - max_accuracy_drop
    checks.append({
        "rule": "baseline", "value": accuracy, "bound": bound,
        "passed": accuracy >= bound - 1e-9,  # equal passes
        "text": f"test accuracy {accuracy:.4f} vs the served model's {baseline_accuracy:.4f}"
                + (f" (tolerated drop {max_accuracy_drop:g})" if max_accuracy_drop else "")})
  return {"blessed": all(c["passed"] for c in checks), "checks": checks,
          "accuracy": accuracy, "balanced_accuracy": balanced, "recall": recall,
          "baseline_accuracy": baseline_accuracy}


def read_verdict(blessing_uri: str) -> dict | None:
  path = os.path.join(blessing_uri, VERDICT_FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


@component
def BlessingGate(evaluation: InputArtifact[ModelEvaluation], model: InputArtifact[Model],
                 examples: InputArtifact[Examples], blessing: OutputArtifact[ModelBlessing],
                 serving_model_dir: Parameter[str] = "",
                 min_gain_over_chance: Parameter[float] = 0.5,
                 min_class_recall: Parameter[float] = 0.0,
                 accuracy_threshold: Parameter[float] = 0.0,
                 max_accuracy_drop: Parameter[float] = 0.0):
  """Writes the blessing (BLESSED or NOT_BLESSED, and verdict.json with every check).

  The baseline is the model TF Serving serves now: the highest version under
  `serving_model_dir` (the Pusher's destination), measured on the same test
  photos. A version taken out of service is no baseline; with none, there is none.
  """
  from components.evaluation import (predict_examples, read_accuracy, read_confusion_matrix,
                                     recall_per_class)
  from components import data_facts
  from components.serving import served_versions
  class_names = data_facts.class_names(examples.uri)
  matrix = read_confusion_matrix(evaluation.uri, len(class_names))
  served = served_versions(serving_model_dir) if serving_model_dir else {}
  baseline_accuracy = None
  if served:
    rows = predict_examples(served[max(served)], os.path.join(examples.uri, "Split-test"))
    baseline_accuracy = sum(r["predicted_class"] == r["true_class"] for r in rows) / len(rows)
  verdict = judge(read_accuracy(evaluation.uri), dict(zip(class_names, recall_per_class(matrix))),
                  baseline_accuracy, min_gain_over_chance, min_class_recall, accuracy_threshold,
                  max_accuracy_drop)
  verdict["served_version"] = max(served) if served else None
  # What the model card beside a pushed version shows (components/model_card.py).
  with tf.io.gfile.GFile(data_facts.report_path(examples.uri)) as f:
    ingestion = json.load(f)
  on_device = os.path.join(model.uri, "model.tflite")
  if tf.io.gfile.exists(on_device):  # serving.tflite: judged on the same test photos
    from components.trainer.tflite import tflite_accuracy
    with tf.io.gfile.GFile(os.path.join(model.uri, "training_summary.json")) as f:
      training = json.load(f)
    verdict["tflite"] = {**training["tflite"], "accuracy": tflite_accuracy(
        on_device, os.path.join(examples.uri, "Split-test"), training["config"]["image_size"])}
  verdict.update(class_names=class_names, confusion_matrix=matrix,
                 photos=ingestion["examples"], spans=ingestion.get("spans") or {},
                 # The photos the Pusher's serving check sends (components/canary.py).
                 test_examples=os.path.join(examples.uri, "Split-test"))
  with tf.io.gfile.GFile(os.path.join(blessing.uri, VERDICT_FILE), "w") as f:
    json.dump(verdict, f, indent=1)
  blessed = verdict["blessed"]
  tf.io.gfile.GFile(os.path.join(blessing.uri, "BLESSED" if blessed else "NOT_BLESSED"),
                    "w").close()
  # The properties TFX's Pusher reads, and the model they concern.
  blessing.set_int_custom_property("blessed", int(blessed))
  blessing.set_int_custom_property("current_model_id", model.id)
  blessing.set_string_custom_property("current_model", model.uri)
