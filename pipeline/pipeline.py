"""create_pipeline: the stages and how they connect. Wiring only.

It takes resolved arguments and touches no file: the data root's layout, its
classes and the training size are found by the tasks when they run
(components/data_facts.py), and the schema's text is read by the runner. So
the same definition runs here and compiles for Kubeflow on a machine that
cannot see the bucket. Which of its stages a run executes is the runner's choice.

Every stage runs only when NewDataCheck finds new photos or settings
(tfx.dsl.Cond); RecordRun records the finished run (components/new_data.py).
`finetune run` makes that check before it starts (pipeline/freshness.py), so
the local runner leaves NEW_DATA_TASKS and their condition out.
"""
from __future__ import annotations

import dataclasses

import tensorflow_data_validation as tfdv
from tfx.components import Evaluator, ExampleValidator, Pusher, StatisticsGen, Trainer, Transform
from tfx.dsl.components.base import executor_spec
from tfx.dsl.experimental.conditionals.conditional import Cond
from tfx.orchestration.pipeline import Pipeline
from tfx.proto import pusher_pb2, trainer_pb2, transform_pb2

from components import pusher, runtime_config
from components.blessing import BlessingGate
from components.data_gate import DataGate
from components.drift import SpanDrift
from components.evaluation import eval_config
from components.image_example_gen import ImageExampleGen
from components.new_data import NEW_DATA, NewDataCheck, RecordRun
from components.schema_importer import SchemaImporter
from pipeline.config import PipelineConfig
from pipeline.freshness import record_path, settings_digest

TRAIN, VALIDATION, TEST = "train", "validation", "test"

# The stages a run may stop after (the runners' choices):
STATISTICS = ("ImageExampleGen", "StatisticsGen")  # enough to infer a first schema
DATA_CHECK = STATISTICS + ("SchemaImporter", "ExampleValidator", "DataGate", "SpanDrift")
MODEL = DATA_CHECK + ("Transform", "Trainer", "Evaluator")  # an experiment's variant
# They judge against, and write to, the served model folder: state outside the
# pipeline's inputs, so a cached verdict or push would be stale. Never cached.
READS_SERVED_MODEL = ("BlessingGate", "Pusher")
# Whether there is anything new, and the record that there was: a run's first and last tasks.
NEW_DATA_TASKS = ("NewDataCheck", "RecordRun")


def create_pipeline(config: PipelineConfig, schema_text: str, schema_source: str,
                    metadata_connection_config=None) -> Pipeline:
  """Builds fresh component objects each call (TFX's DSL registry forbids reuse).

  `schema_text`: the dataset's schema (pbtxt) as read from `schema_source`; ""
  before one exists, when a runner runs only the STATISTICS stages to infer it.
  """
  new_data_check = NewDataCheck(data_root=config.data.root,
                                settings_digest=settings_digest(config, schema_text),
                                record_path=record_path(config))
  with Cond(new_data_check.outputs["change"].future()[0].custom_property(NEW_DATA) == 1):
    stages = _stages(config, schema_text, schema_source)
    record_run = RecordRun(change=new_data_check.outputs["change"],
                           examples=stages[0].outputs["examples"],
                           pushed_model=stages[-1].outputs["pushed_model"],
                           record_path=record_path(config))
  return Pipeline(
      pipeline_name=config.pipeline_name,
      pipeline_root=config.pipeline_root,
      components=[new_data_check, *stages, record_run],
      enable_cache=True,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=config.beam_pipeline_args)


def _stages(config: PipelineConfig, schema_text: str, schema_source: str) -> list:
  """Ingestion to push, in order: ImageExampleGen first, the Pusher last."""
  example_gen = ImageExampleGen(
      input_base=config.data.root, split_ratios=config.data.split_ratios,
      max_image_side=config.data.max_image_side, spans=config.data.spans)
  statistics_gen = StatisticsGen(
      examples=example_gen.outputs["examples"],
      # Sketches count the most frequent values in bounded memory; exact
      # counting grouped every photo's bytes (2.8 GB for 13,500 photos, 0.8 GB with sketches).
      stats_options=tfdv.StatsOptions(use_sketch_based_topk_uniques=True))
  schema_gen = SchemaImporter(schema_text=schema_text, schema_source=schema_source)
  example_validator = ExampleValidator(
      statistics=statistics_gen.outputs["statistics"],
      schema=schema_gen.outputs["schema"])
  data_gate = DataGate(anomalies=example_validator.outputs["anomalies"],
                       fail_on_anomalies=config.data.fail_on_anomalies)
  span_drift = SpanDrift(examples=example_gen.outputs["examples"],
                         schema=schema_gen.outputs["schema"],
                         fail_on_anomalies=config.data.fail_on_anomalies)

  # train.image_size 0: the size ingestion picks from the photos (components/runtime_config.py).
  train_config = {**dataclasses.asdict(config.train), "tflite": config.serving.tflite}
  transform = Transform(
      examples=example_gen.outputs["examples"],
      schema=schema_gen.outputs["schema"],
      preprocessing_fn="components.transform.preprocessing_fn",
      custom_config={"image_size": config.train.image_size},
      # Decoding happens on the fly in training; see components/transform.py.
      materialize=False, disable_statistics=True,
      splits_config=transform_pb2.SplitsConfig(analyze=[TRAIN]))
  transform.executor_spec = executor_spec.BeamExecutorSpec(runtime_config.TransformExecutor)
  transform.add_upstream_node(data_gate)  # no training on data with anomalies
  transform.add_upstream_node(span_drift)  # nor on a data drop that drifted

  trainer = Trainer(
      run_fn="components.trainer.train.run_fn",
      examples=example_gen.outputs["examples"],
      transform_graph=transform.outputs["transform_graph"],
      schema=schema_gen.outputs["schema"],
      train_args=trainer_pb2.TrainArgs(splits=[TRAIN]),
      eval_args=trainer_pb2.EvalArgs(splits=[VALIDATION]),
      custom_config=train_config)

  evaluator = Evaluator(
      examples=example_gen.outputs["examples"],
      model=trainer.outputs["model"],
      example_splits=[TEST],
      # Per-class metrics for no class yet: the executor adds those for the
      # classes ingestion found (components/runtime_config.py).
      eval_config=eval_config(num_classes=0))
  evaluator.executor_spec = executor_spec.BeamExecutorSpec(runtime_config.EvaluatorExecutor)

  push_destination = f"{config.serving_dir}/{config.model_name}"
  # The baseline is the model served now, read by the gate from the push
  # destination: no resolver task, so the same pipeline runs on Kubeflow.
  blessing_gate = BlessingGate(
      evaluation=evaluator.outputs["evaluation"], model=trainer.outputs["model"],
      examples=example_gen.outputs["examples"], serving_model_dir=push_destination,
      min_gain_over_chance=config.evaluate.min_gain_over_chance,
      min_class_recall=config.evaluate.min_class_recall,
      accuracy_threshold=config.evaluate.accuracy_threshold,
      max_accuracy_drop=config.evaluate.max_accuracy_drop)

  model_pusher = Pusher(
      model=trainer.outputs["model"],
      model_blessing=blessing_gate.outputs["blessing"],
      push_destination=pusher_pb2.PushDestination(
          filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=push_destination)))
  model_pusher.executor_spec = executor_spec.ExecutorClassSpec(pusher.Executor)
  return [example_gen, statistics_gen, schema_gen, example_validator, data_gate, span_drift,
          transform, trainer, evaluator, blessing_gate, model_pusher]
