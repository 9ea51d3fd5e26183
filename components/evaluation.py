"""The TFMA configuration: metrics, slices and the blessing thresholds."""
import tensorflow_model_analysis as tfma

ACCURACY_METRIC = "sparse_categorical_accuracy"
PREDICTION_KEY = "probabilities"  # output of the serving_default signature


def eval_config(num_classes: int, accuracy_threshold: float,
                max_accuracy_drop: float) -> tfma.EvalConfig:
  """Blesses a model whose test accuracy clears the threshold and is not
  worse than the last blessed model by more than `max_accuracy_drop`."""
  accuracy = tfma.MetricConfig(
      class_name="SparseCategoricalAccuracy",
      # On the overall slice only: per-class accuracies are reported, not gated.
      per_slice_thresholds=[tfma.PerSliceMetricThreshold(
          slicing_specs=[tfma.SlicingSpec()],
          threshold=tfma.MetricThreshold(
          value_threshold=tfma.GenericValueThreshold(
              lower_bound={"value": accuracy_threshold}),
          # Applies only when a baseline exists; -1e-10 so "equal" passes.
          change_threshold=tfma.GenericChangeThreshold(
              direction=tfma.MetricDirection.HIGHER_IS_BETTER,
              absolute={"value": -max_accuracy_drop - 1e-10})))])
  return tfma.EvalConfig(
      # Only the metrics below: TFMA would also recompute the Keras compile
      # metrics, whose binary "accuracy" misreads the two-column probabilities.
      options=tfma.Options(include_default_metrics={"value": False}),
      model_specs=[tfma.ModelSpec(
          signature_name="serving_default", label_key="label",
          prediction_key=PREDICTION_KEY)],
      slicing_specs=[tfma.SlicingSpec(),
                     tfma.SlicingSpec(feature_keys=["class_name"])],
      metrics_specs=[
          tfma.MetricsSpec(metrics=[
              tfma.MetricConfig(class_name="ExampleCount"),
              accuracy,
              tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot"),
          ]),
          # Per class, one-vs-rest.
          tfma.MetricsSpec(
              metrics=[tfma.MetricConfig(class_name="Precision"),
                       tfma.MetricConfig(class_name="Recall"),
                       tfma.MetricConfig(class_name="AUC")],
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


def read_accuracy(evaluation_uri: str, model_name: str = "candidate") -> float | None:
  """Overall test accuracy of `model_name` ("candidate" or "baseline"), or None."""
  metrics = read_metrics(evaluation_uri, model_name)
  return metrics["overall"].get(ACCURACY_METRIC) if metrics else None



def read_thresholds(evaluation_uri: str) -> dict:
  """The accuracy gate the Evaluator applied, from the eval_config.json TFMA saved:
  {"threshold": float | None, "max_accuracy_drop": float | None (no baseline)}."""
  import json
  import os
  import tensorflow as tf
  path = os.path.join(evaluation_uri, "eval_config.json")
  found = {"threshold": None, "max_accuracy_drop": None}
  if not tf.io.gfile.exists(path):
    return found
  with tf.io.gfile.GFile(path) as f:
    config = json.load(f)["evalConfig"]
  for spec in config.get("metricsSpecs", []):
    for metric in spec.get("metrics", []):
      if metric.get("className") != "SparseCategoricalAccuracy":
        continue
      for per_slice in metric.get("perSliceThresholds", []):
        threshold = per_slice.get("threshold", {})
        bound = threshold.get("valueThreshold", {}).get("lowerBound")
        if bound is not None:
          found["threshold"] = float(bound)
        change = threshold.get("changeThreshold", {}).get("absolute")
        if change is not None:  # written as -(drop) - 1e-10, so that "equal" passes
          found["max_accuracy_drop"] = round(-float(change) - 1e-10, 9)
  return found
