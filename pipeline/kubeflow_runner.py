"""Compiles the pipeline for Kubeflow Pipelines: a KFP v2 package, schema 2.1.0.

The same create_pipeline as the local runner; each task runs TFX's
kubeflow_v2_run_executor in the project's image, so `components` and
`pipeline` must be importable there (deploy/kubeflow/Dockerfile). Compiling
reads no photo and touches no bucket: the tasks find the data's layout,
classes and training size when they run.
"""
from __future__ import annotations

import os

import yaml

from pipeline import storage
from pipeline.config import PROJECT_ROOT, ConfigError, PipelineConfig
from pipeline.pipeline import NEW_DATA_TASKS, READS_SERVED_MODEL, create_pipeline
from pipeline.schema import SchemaError, read_schema

PACKAGE_SUFFIXES = (".yaml", ".yml")  # what the KFP client uploads (it refuses .json)
ENTRYPOINT = ["python", "-m", "pipeline.kfp_executor"]  # TFX's, with input types filled in
# The open-source backend caches a task on its parameters alone: new photos
# would not bust ImageExampleGen's cache (TFX's input fingerprint comes from
# a driver hook that backend does not run), nor a changed served model
# BlessingGate's. They read the world outside the pipeline: never cached.
READS_OUTSIDE = ("ImageExampleGen",) + READS_SERVED_MODEL + NEW_DATA_TASKS
# The tasks that run only when NewDataCheck says so, as one sub-DAG (see _gate_in_one_dag).
GATED_DAG = "WhenNewData"


def trainer_resources(config: PipelineConfig):
  """The Trainer's CPU, memory and accelerator requests, as KFP's ResourceSpec."""
  from kfp.pipeline_spec import pipeline_spec_pb2
  spec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec(
      resource_cpu_request=config.kubeflow.trainer_cpu,
      resource_cpu_limit=config.kubeflow.trainer_cpu,
      resource_memory_request=config.kubeflow.trainer_memory,
      resource_memory_limit=config.kubeflow.trainer_memory)
  if config.kubeflow.trainer_gpus:
    spec.accelerator.resource_type = config.kubeflow.gpu_resource
    spec.accelerator.resource_count = str(config.kubeflow.trainer_gpus)
  return spec


def read_package(path: str) -> tuple[dict, dict | None]:
  """A package's pipeline spec, and its Kubernetes platform spec if it has one."""
  with open(path) as f:
    documents = [d for d in yaml.safe_load_all(f) if d]
  return documents[0], (documents[1] if len(documents) > 1 else None)


def _s3_access(config: PipelineConfig, spec: dict) -> dict | None:
  """With s3:// paths: every task gets the endpoint and region, and the keys
  from the Kubernetes secret (KFP's platform spec, as kfp-kubernetes writes
  it); returns that platform spec."""
  kf = config.kubeflow
  if not storage.uses_s3(config.pipeline_root, config.data.root, config.serving_dir):
    return None
  env = [{"name": "AWS_REGION", "value": kf.s3_region}]
  if kf.s3_endpoint:
    env.append({"name": "AWS_ENDPOINT_URL", "value": kf.s3_endpoint})
  executors = spec["deploymentSpec"]["executors"]
  for executor in executors.values():
    executor["container"]["env"] = executor["container"].get("env", []) + env
  if not kf.s3_secret:
    return None  # keys from the pods' own identity (e.g. IAM roles for service accounts)
  key_to_env = [{"secretKey": kf.s3_secret_access_key_id, "envVar": "AWS_ACCESS_KEY_ID"},
                {"secretKey": kf.s3_secret_secret_access_key, "envVar": "AWS_SECRET_ACCESS_KEY"}]
  return {"platforms": {"kubernetes": {"deploymentSpec": {"executors": {
      name: {"secretAsEnv": [{"secretName": kf.s3_secret, "keyToEnv": key_to_env}]}
      for name in sorted(executors)}}}}}


def _gate_in_one_dag(spec: dict) -> None:
  """Moves the tasks TFX compiled with a trigger policy (tfx.dsl.Cond) into one
  sub-DAG that carries the policy instead.

  KFP's driver resolves a task's inputs before it evaluates the task's condition
  (backend/src/v2/driver/container.go), so a task after a skipped one fails on
  inputs that were never written. KFP's own compiler puts the tasks of a
  condition in a sub-DAG with the policy on the DAG task: the driver evaluates
  it once (driver/dag.go) and Argo skips the whole DAG
  (compiler/argocompiler/dag.go, `when: ... != false`). Inside, inputs from
  outside the DAG become the DAG's inputs (componentInputArtifact), named as
  TFX names the condition's input, `_<task>.<key>`, so the condition reads as compiled.
  """
  tasks = spec["root"]["dag"]["tasks"]
  gated = {name: task for name, task in tasks.items() if "triggerPolicy" in task}
  dag_inputs, definitions, conditions = {}, {}, set()
  for task in gated.values():
    condition = task.pop("triggerPolicy")["condition"]
    for key, source in task.get("inputs", {}).get("artifacts", {}).items():
      output = source.get("taskOutputArtifact", {})
      if output and output["producerTask"] not in gated:
        name = f"_{output['producerTask']}.{output['outputArtifactKey']}"
        # TFX names the condition's input by the task's own key when it has one.
        condition = condition.replace(f"inputs.artifacts['{key}']", f"inputs.artifacts['{name}']")
        dag_inputs[name] = {"taskOutputArtifact": dict(output)}
        producer = spec["components"][tasks[output["producerTask"]]["componentRef"]["name"]]
        definitions[name] = producer["outputDefinitions"]["artifacts"][output["outputArtifactKey"]]
        source.clear()
        source["componentInputArtifact"] = name
    conditions.add(condition)
    inside = [t for t in task.get("dependentTasks", []) if t in gated]
    task.pop("dependentTasks", None)
    if inside:
      task["dependentTasks"] = inside
  if len(conditions) != 1:
    raise RuntimeError(f"one condition expected for the tasks {sorted(gated)}, got {conditions}")
  (condition,) = conditions
  for name in gated:
    del tasks[name]
  spec["components"][GATED_DAG] = {"dag": {"tasks": gated},
                                   "inputDefinitions": {"artifacts": definitions}}
  tasks[GATED_DAG] = {
      "taskInfo": {"name": GATED_DAG}, "componentRef": {"name": GATED_DAG},
      "inputs": {"artifacts": dag_inputs}, "triggerPolicy": {"condition": condition},
      "dependentTasks": sorted({i["taskOutputArtifact"]["producerTask"] for i in dag_inputs.values()})}


def compile_pipeline(config: PipelineConfig, output_path: str) -> dict:
  """Writes the package to `output_path`; returns the pipeline spec as a dict."""
  from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner as kfp_runner
  if not config.kubeflow.image:
    raise ConfigError("kubeflow.image is not set: pass --image (see deploy/kubeflow/README.md)")
  if not output_path.endswith(PACKAGE_SUFFIXES):
    raise ConfigError(f"--output {output_path}: a Kubeflow package is a .yaml or .yml file")
  for setting, path in (("--data-root", config.data.root), ("--pipeline-root", config.output_dir)):
    if "://" not in path:
      raise ConfigError(f"{setting} {path} is on this machine, where no pod can read it: "
                        "give a bucket (s3://... or gs://...)")
  weights = str(config.train.weights)
  if weights not in ("imagenet", "none", "") and "://" not in weights and not weights.startswith("/"):
    raise ConfigError(f"--weights {weights} is on this machine, where no pod can read it: give "
                      "a bucket (s3://... or gs://...) or a path inside the image")
  schema_source = config.schema_file
  try:
    if "://" in schema_source:  # no schema of ours for this data: compiling reads no bucket
      raise SchemaError(f"no schema for {config.pipeline_name} in schemas/")
    schema_text = read_schema(schema_source)
  except SchemaError as e:
    raise ConfigError(f"{e}: a Kubeflow package carries its schema; pass --set "
                      "data.schema_path=FILE (`finetune run` on a sample infers one)") from None
  # Recorded as the schema's source: no path of this machine goes into the package.
  schema_label = (os.path.relpath(schema_source, PROJECT_ROOT)
                  if os.path.abspath(schema_source).startswith(f"{PROJECT_ROOT}/")
                  else os.path.basename(schema_source))
  pipeline = create_pipeline(config, schema_text, schema_label)
  for component in pipeline.components:
    if component.id == "Trainer":
      component.with_platform_config(trainer_resources(config))
  runner = kfp_runner.KubeflowV2DagRunner(
      kfp_runner.KubeflowV2DagRunnerConfig(default_image=config.kubeflow.image,
                                           default_commands=ENTRYPOINT,
                                           use_pipeline_spec_2_1=True),
      output_dir=os.path.dirname(os.path.abspath(output_path)),
      output_filename=os.path.basename(output_path))
  spec = runner.run(pipeline, write_out=False)["pipelineSpec"]
  # The open-source backend never reads this: the root comes from the run's
  # runtime config, which `finetune kubeflow submit` and `schedule` fill from
  # here (backend/src/v2/driver/driver.go, RootDAG). KFP's own compiler writes it too.
  spec["defaultPipelineRoot"] = config.pipeline_root
  _gate_in_one_dag(spec)
  tasks = {**spec["root"]["dag"]["tasks"], **spec["components"][GATED_DAG]["dag"]["tasks"]}
  for task in READS_OUTSIDE:
    tasks[task]["cachingOptions"] = {"enableCache": False}
  platform_spec = _s3_access(config, spec)
  with open(output_path, "w") as f:
    f.write(f"# {spec['pipelineInfo']['name']}: compiled by `finetune kubeflow compile`\n")
    yaml.safe_dump_all([spec, platform_spec] if platform_spec else [spec], f, sort_keys=True)
  return spec
