"""The TFMA configuration (metrics and slices), reading its results back, and
predicting a split with any SavedModel (the served one, for the blessing)."""
import os

import numpy as np
import tensorflow as tf
import tensorflow_model_analysis as tfma

ACCURACY_METRIC = "sparse_categorical_accuracy"
PREDICTION_KEY = "probabilities"  # output of the serving_default signature


def eval_config(num_classes: int) -> tfma.EvalConfig:
  """The test metrics: overall, the confusion matrix, AUC per class, and per class slice.

  No thresholds: BlessingGate (components/blessing.py) applies the rules.
  """
  return tfma.EvalConfig(
      # Only the metrics below: TFMA would also recompute the Keras compile
      # metrics, whose binary "accuracy" misreads the two-column probabilities.
      options=tfma.Options(include_default_metrics={"value": False}),
      model_specs=[tfma.ModelSpec(
          signature_name="serving_default", label_key="label",
          # The served signature, loaded as a plain SavedModel: rebuilding it
          # as a Keras model (twice: once to detect its type) took 18 s.
          model_type=tfma.TF_GENERIC,
          prediction_key=PREDICTION_KEY)],
      slicing_specs=[tfma.SlicingSpec(),
                     tfma.SlicingSpec(feature_keys=["class_name"])],
      metrics_specs=[
          tfma.MetricsSpec(metrics=[
              tfma.MetricConfig(class_name="ExampleCount"),
              tfma.MetricConfig(class_name="SparseCategoricalAccuracy"),
              tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot"),
          ]),
          # Per class, one-vs-rest. Precision and recall per class come from the
          # confusion matrix (argmax): TFMA's top_k binarization counts every
          # example as positive when the model outputs two columns.
          tfma.MetricsSpec(
              metrics=[tfma.MetricConfig(class_name="AUC")],
              binarize=tfma.BinarizationOptions(class_ids={"values": list(range(num_classes))})),
      ])


def read_metrics(evaluation_uri: str, model_name: str = "candidate") -> dict | None:
  """{slice: {metric: value}} of `model_name` ("candidate" or "baseline"), or None."""
  import logging
  logging.getLogger("absl").disabled = True  # TFMA warns about every name it misses
  try:
    result = tfma.load_eval_result(evaluation_uri, model_name=model_name)
    if not result.slicing_metrics and model_name == "candidate":
      result = tfma.load_eval_result(evaluation_uri)  # no baseline: metrics are unnamed
  finally:
    logging.getLogger("absl").disabled = False
  if not result.slicing_metrics:
    return None
  table = {}
  for slice_key, metrics in result.slicing_metrics:
    name = "overall" if slice_key == () else ", ".join(f"{k}={v}" for k, v in slice_key)
    values = table.setdefault(name, {})
    for per_output in metrics.values():
      for sub_key, per_sub_key in per_output.items():
        for metric, value in per_sub_key.items():
          if "doubleValue" in value:
            values[f"{metric}[{sub_key}]" if sub_key else metric] = float(value["doubleValue"])
  return table


def read_confusion_matrix(evaluation_uri: str, num_classes: int,
                          model_name: str = "candidate") -> list[list[int]] | None:
  """TFMA's MultiClassConfusionMatrixPlot on the overall slice: rows = true class,
  columns = the argmax prediction."""
  for name in (model_name, None):  # with no baseline, TFMA's outputs are unnamed
    try:
      result = (tfma.load_eval_result(evaluation_uri, model_name=name) if name
                else tfma.load_eval_result(evaluation_uri))
    except Exception:  # noqa: BLE001  (TFMA raises several types for a missing model)
      continue
    for slice_key, plots in result.plots or []:
      if slice_key != ():
        continue
      for per_output in plots.values():
        for per_sub_key in per_output.values():
          found = per_sub_key.get("multiClassConfusionMatrixAtThresholds")
          if not found:
            continue
          matrix = np.zeros((num_classes, num_classes), dtype=int)
          for entry in found["matrices"][0].get("entries", []):
            actual = int(entry.get("actualClassId", 0))
            predicted = int(entry.get("predictedClassId", 0))
            if 0 <= predicted < num_classes:  # -1: no prediction above threshold
              matrix[actual, predicted] += int(round(entry.get("numWeightedExamples", 0)))
          return matrix.tolist()
  return None


def recall_per_class(matrix: list[list[int]]) -> list[float | None]:
  """Recall of each class (None for a class with no test photos), from the confusion matrix."""
  return [row[i] / sum(row) if sum(row) else None for i, row in enumerate(matrix)]


def read_accuracy(evaluation_uri: str, model_name: str = "candidate") -> float | None:
  """Overall test accuracy of `model_name` ("candidate" or "baseline"), or None."""
  metrics = read_metrics(evaluation_uri, model_name)
  return metrics["overall"].get(ACCURACY_METRIC) if metrics else None


def predict_examples(saved_model_dir: str, split_uri: str) -> list[dict]:
  """Each example of a split (TFRecords) with a SavedModel's prediction (serving_default)."""
  loaded = tf.saved_model.load(saved_model_dir)
  serve = loaded.signatures["serving_default"]
  spec = {"image_raw": tf.io.FixedLenFeature([], tf.string),
          "label": tf.io.FixedLenFeature([], tf.int64),
          "path": tf.io.FixedLenFeature([], tf.string)}
  files = tf.io.gfile.glob(os.path.join(split_uri, "*.gz"))
  rows = []
  for batch in tf.data.TFRecordDataset(files, compression_type="GZIP").batch(32):
    parsed = tf.io.parse_example(batch, spec)
    outputs = serve(examples=batch)
    names = [n.decode() for n in outputs["class_names"].numpy()[0]]
    for image, label, path, probabilities in zip(
        parsed["image_raw"].numpy(), parsed["label"].numpy(), parsed["path"].numpy(),
        outputs["probabilities"].numpy()):
      predicted = int(np.argmax(probabilities))
      rows.append({"path": path.decode(), "true_class": names[int(label)],
                   "predicted_class": names[predicted],
                   "probability": float(probabilities[predicted]), "image": image})
  return rows
