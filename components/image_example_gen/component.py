"""ImageExampleGen: a FileBasedExampleGen whose executor reads image folders.

Reusing FileBasedExampleGen keeps TFX's input fingerprinting (unchanged
folders hit the cache) and hash splitting; which spans to read (data.spans)
and the file -> tf.Example step are ours.
"""
from __future__ import annotations

from tfx import types
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter

from components.image_example_gen import executor
from components.image_example_gen.layout import Layout


class ImageExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
  PARAMETERS = {
      **standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
      executor.MAX_IMAGE_SIDE_KEY: ExecutionParameter(type=int),
      executor.SPANS_KEY: ExecutionParameter(type=str),
  }


class ImageExampleGen(FileBasedExampleGen):
  SPEC_CLASS = ImageExampleGenSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

  def __init__(self, input_base: str, data_layout: Layout,
               split_ratios: dict[str, int], max_image_side: int = 0, spans: str = "all"):
    """`split_ratios` applies only when the data has no split folders."""
    patterns = data_layout.split_patterns()
    input_config = example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name=name, pattern=pattern)
        for name, pattern in patterns.items()])
    output_config = example_gen_pb2.Output()
    if not data_layout.has_split_folders:
      output_config.split_config.partition_feature_name = "path"
      for name, buckets in split_ratios.items():
        output_config.split_config.splits.add(name=name, hash_buckets=buckets)
    spec = ImageExampleGenSpec(
        input_base=input_base,
        input_config=input_config,
        output_config=output_config,
        output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
        output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
        max_image_side=max_image_side,
        spans=spans,
        examples=types.Channel(type=standard_artifacts.Examples))
    base_beam_component.BaseBeamComponent.__init__(self, spec=spec)
