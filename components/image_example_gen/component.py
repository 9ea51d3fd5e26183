"""ImageExampleGen: a FileBasedExampleGen whose executor reads image folders.

Nothing about the data is decided when the pipeline is built: the executor
finds the layout (split folders or not, spans, classes) when it runs, so a
package compiled without access to the bucket follows whatever lands there.
Our driver fingerprints every file under the data root (TFX's globs split
patterns that depend on the layout), so unchanged folders hit the cache and a
new span or photo reruns ingestion.
"""
from __future__ import annotations

from typing import Any

from tfx import types
from tfx.components.example_gen import driver as example_gen_driver
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter

from components.image_example_gen import executor
from components.image_example_gen.fingerprint import data_fingerprint


class ImageExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
  PARAMETERS = {
      **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
      executor.MAX_IMAGE_SIDE_KEY: ExecutionParameter(type=int),
      executor.SPANS_KEY: ExecutionParameter(type=str),
  }


class Driver(example_gen_driver.Driver):
  """The local runner's cache key for ingestion: every file under the root."""

  def resolve_exec_properties(self, exec_properties: dict[str, Any], pipeline_info,
                              component_info) -> dict[str, Any]:
    del pipeline_info, component_info
    exec_properties[example_gen_utils.SPAN_PROPERTY_NAME] = 0  # the executor sets the newest span
    exec_properties[example_gen_utils.VERSION_PROPERTY_NAME] = None
    exec_properties[example_gen_utils.FINGERPRINT_PROPERTY_NAME] = data_fingerprint(
        exec_properties[standard_component_specs.INPUT_BASE_KEY])
    return exec_properties


class ImageExampleGen(FileBasedExampleGen):
  SPEC_CLASS = ImageExampleGenSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
  DRIVER_CLASS = Driver

  def __init__(self, input_base: str, split_ratios: dict[str, int], max_image_side: int = 0,
               spans: str = "all"):
    """`split_ratios` applies only when the data has no split folders."""
    output_config = example_gen_pb2.Output()
    output_config.split_config.partition_feature_name = "path"
    for name, buckets in split_ratios.items():
      output_config.split_config.splits.add(name=name, hash_buckets=buckets)
    spec = ImageExampleGenSpec(
        input_base=input_base,
        # Which folders are read is the executor's choice (data.spans, split folders).
        input_config=example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name="photos", pattern="*")]),
        output_config=output_config,
        output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
        output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
        max_image_side=max_image_side,
        spans=spans,
        examples=types.Channel(type=standard_artifacts.Examples))
    base_beam_component.BaseBeamComponent.__init__(self, spec=spec)
