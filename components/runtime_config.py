"""TFX's Transform and Evaluator, configured from the data when they run.

The training size (train.image_size 0: the photos' own size) and the number
of classes are facts ingestion records in the Examples artifact
(components/data_facts.py). These executors fill them into the stock
components' settings before doing the stock work, so the pipeline can be
built, and compiled for Kubeflow, without reading any photo.
"""
from __future__ import annotations

import json

from tfx.components.evaluator import executor as evaluator_executor
from tfx.components.transform import executor as transform_executor
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components import data_facts


def _examples_uri(input_dict) -> str:
  return artifact_utils.get_single_uri(input_dict[standard_component_specs.EXAMPLES_KEY])


class TransformExecutor(transform_executor.Executor):
  """Resizes to train.image_size, or with 0 to the size ingestion chose."""

  def Do(self, input_dict, output_dict, exec_properties) -> None:
    key = standard_component_specs.CUSTOM_CONFIG_KEY
    custom_config = json.loads(exec_properties.get(key) or "{}")
    custom_config["image_size"] = data_facts.training_size(
        _examples_uri(input_dict), custom_config.get("image_size", 0))
    super().Do(input_dict, output_dict, {**exec_properties, key: json.dumps(custom_config)})


class EvaluatorExecutor(evaluator_executor.Executor):
  """TFMA's metrics for as many classes as ingestion found."""

  def Do(self, input_dict, output_dict, exec_properties) -> None:
    from components.evaluation import eval_config
    num_classes = len(data_facts.class_names(_examples_uri(input_dict)))
    super().Do(input_dict, output_dict, {
        **exec_properties,
        standard_component_specs.EVAL_CONFIG_KEY: proto_utils.proto_to_json(
            eval_config(num_classes))})
