"""Runs a compiled KFP v2 package here, task by task, as Kubeflow's driver and launcher would.

What it reproduces of the open-source KFP v2 backend (2.5 and later); each rule
names the backend file it follows (kubeflow/pipelines, backend/src/v2/...):
  * task order: the root DAG's tasks, each after its `dependentTasks`;
  * sub-DAGs: a task whose component is a `dag` resolves its inputs, then its
    `triggerPolicy.condition` is evaluated on them (driver/dag.go; CEL over the
    ExecutorInput, expression/expression.go; only the `metadata[...] == number`
    form TFX compiles is understood here): false skips the whole DAG
    (compiler/argocompiler/dag.go, `when: ... != false`), an evaluation error
    fails it; true runs its tasks in their order, a `componentInputArtifact`
    being the DAG's input of that name (driver/resolve.go);
  * the pipeline root: the run's runtime config, else the `kfp-launcher`
    ConfigMap's `defaultPipelineRoot`, else minio://mlpipeline/v2/artifacts;
    never the package's own `defaultPipelineRoot` (driver/driver.go RootDAG,
    config/env.go). The run's root is `<root>/<pipeline>/<run id>`
    (metadata/client.go GetPipeline);
  * the ExecutorInput: parameters from the tasks' `runtimeValue.constant`s (a
    non-string value for a STRING parameter becomes its JSON text, any other
    type mismatch fails the task); input artifacts are the producers' output
    artifacts as KFP stores and reads them back from MLMD: `name` is the
    artifact id, the metadata the producer's ExecutorOutput reported passes
    MLMD's value types (numbers become doubles, booleans 0/1, lists and
    structs are wrapped in {"list": ...} / {"struct": ...}) and gains
    `display_name`; output artifacts are named after their key and get
    `<run root>/<task>/<uuid>/<key>` and the type of the component's
    outputDefinitions, plus the driver's own `executor-logs` output
    (system.Artifact) on every task; the executor output file is
    `output_metadata.json` in the task root's local path (driver/driver.go
    provisionOutputs);
  * the executor's exact `command + args` from deploymentSpec, `{{$}}` and the
    artifacts' `.uri`/`.path` placeholders filled in (`python` is this
    interpreter) (component/launcher_v2.go getPlaceholders);
  * the launcher around it (component/launcher_v2.go): every input artifact is
    downloaded to its local path (`/s3/<bucket>/<key>`, `/gcs/...`,
    `/minio/...`: LocalPathForURI) before the command runs; the parent folders
    of the outputs' local paths are created; the command's output is teed to
    the `executor-logs` local file; a missing executor output file means no
    outputs reported; after a successful command every output's local path is
    uploaded to its URI, an output whose local path does not exist is skipped
    and still recorded (a declared output nobody wrote is not an error there:
    the record lists it under `unwritten_outputs`); a reported URI replaces the
    provisioned one and reported metadata is added (mergeRuntimeArtifacts); a
    pipeline root without a recognised scheme fails the task before it runs
    (prepareOutputFolders);
  * the launcher's own access to object storage: the ConfigMap's `providers`
    for s3:// (config/s3.go: endpoint, region, disableSSL, forcePathStyle,
    credentials from a secret by name; none configured means the environment's
    credentials), keys from the namespace's secrets (objectstore/object_store.go);
    here a key s3.go does not read is an error, where the backend ignores it;
  * the pod's environment: the container's `env` and kfp-kubernetes'
    `secretAsEnv`, a missing secret or key keeping the pod from starting;
  * the key KFP's cache would look this execution up by (input parameters,
    input artifact names, output artifact specs without URIs, image,
    command + args), so tests can tell what a cached KFP run would reuse.

What it does not: no container or image (the executor runs with this
interpreter, cwd = the repository root, as /opt/finetune is in the image; a
`python -m` command is forked from an interpreter that has already imported
TensorFlow and TFX, tests/warm_python.py says what that keeps of a fresh
process, and FINETUNE_FRESH_TASKS=1 starts each afresh instead), no
MLMD, no caching (every task runs), no lifecycle hooks (the `preCacheCheck`
driver is skipped, as the open-source backend skips it), no resource
requests, object storage is s3:// only (one client, from the ConfigMap's
session, serves every bucket; the launcher opens other buckets with the
environment's credentials), no provider `Overrides`.
Deviations: each task's pod filesystem is a folder, `<work_dir>/pods/<task>-<uuid>/`,
and the absolute local paths the launcher uses (`/s3/...`) are taken inside it;
the task's log also goes to `executor.log` there. Input artifacts come with an
empty type, as the open-source driver sends them
(metadata.Client.GetOutputArtifactsByExecutionId: "TODO(Bobgy): figure out
how to get schema"); `typed_inputs=True` gives them the consumer's declared type.
"""
from __future__ import annotations

import atexit
import copy
import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys
import time
import uuid
from typing import Any

import yaml

from warm_python import WarmPython

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TASK_TIMEOUT_S = 1200
LOG_TAIL_LINES = 60
_NUMBER_TYPES = ("NUMBER_INTEGER", "NUMBER_DOUBLE")
# config/env.go: the root of a run that names none, with no ConfigMap saying otherwise.
DEFAULT_PIPELINE_ROOT = "minio://mlpipeline/v2/artifacts"
LAUNCHER_CONFIGMAP = "kfp-launcher"  # config/env.go configMapName
# driver/driver.go provisionOutputs: the log output the driver adds when publish_logs is on.
LOGS_KEY = "executor-logs"
LOGS_TYPE = {"schemaTitle": "system.Artifact"}
# component/launcher_v2.go OutputMetadataFilepath: the executor output file when the
# task root has no local path.
LEGACY_OUTPUT_FILE = "/tmp/kfp_outputs/output_metadata.json"
# component/launcher_v2.go LocalPathForURI: where a URI's local copy lives in the pod.
_LOCAL_PREFIXES = {"gs://": "/gcs/", "minio://": "/minio/", "s3://": "/s3/"}
# config/s3.go: the json tags of S3ProviderConfig, S3ProviderDefault, S3Credentials and
# S3SecretRef (Go's yaml/json unmarshalling silently ignores any other key).
S3_PROVIDER_KEYS = {"default", "Overrides"}
S3_DEFAULT_KEYS = {"endpoint", "credentials", "region", "disableSSL", "forcePathStyle",
                   "maxRetries"}
S3_CREDENTIALS_KEYS = {"fromEnv", "secretRef"}
S3_SECRET_REF_KEYS = {"secretName", "accessKeyKey", "secretKeyKey"}
PROVIDERS = {"minio", "s3", "gs"}  # config/env.go BucketProviders


class TaskFailed(RuntimeError):
  """A task's executor exited non-zero (or KFP would have refused to start it)."""

  def __init__(self, task: str, message: str, record: dict | None = None):
    super().__init__(f"task {task}: {message}")
    self.task, self.record = task, record


def load_package(package_path: str) -> dict:
  """The pipeline spec: the package's first YAML document."""
  return _documents(package_path)[0]


def load_platform_spec(package_path: str) -> dict:
  """The Kubernetes platform spec (the second document), or {} without one."""
  documents = _documents(package_path)
  return documents[1] if len(documents) > 1 else {}


def _documents(package_path: str) -> list[dict]:
  with open(package_path) as f:
    return [d for d in yaml.safe_load_all(f) if d]


# The pipeline root and the URI layout.

def resolve_pipeline_root(runtime_root: str | None, launcher_config: dict | None) -> str:
  """The run's pipeline root as the root DAG driver picks it (driver/driver.go RootDAG):
  the runtime config's, else the ConfigMap's defaultPipelineRoot (config/env.go), else
  minio://mlpipeline/v2/artifacts. The package's defaultPipelineRoot plays no part."""
  if runtime_root:
    return runtime_root
  return (launcher_config or {}).get("defaultPipelineRoot") or DEFAULT_PIPELINE_ROOT


def generate_output_uri(root: str, *paths: str) -> str:
  """metadata/client.go GenerateOutputURI: paths joined under the root, query dropped."""
  root = root.split("?", 1)[0]
  return f"{root.rstrip('/')}/{'/'.join(p.strip('/') for p in paths)}"


def run_root(pipeline_root: str, pipeline_name: str, run_id: str) -> str:
  """The run's own root (metadata/client.go GetPipeline: <root>/<pipeline>/<run id>)."""
  return generate_output_uri(pipeline_root, pipeline_name, run_id)


def local_path_for_uri(uri: str) -> str | None:
  """component/launcher_v2.go LocalPathForURI; None for a scheme it does not know."""
  for scheme, prefix in _LOCAL_PREFIXES.items():
    if uri.startswith(scheme):
      return prefix + uri[len(scheme):]
  return None


def _in_pod(pod_dir: str | os.PathLike | None, path: str) -> str:
  return str(pathlib.Path(pod_dir) / path.lstrip("/")) if pod_dir else path


# The launcher's object storage.

def _check_keys(value: Any, allowed: set[str], where: str) -> dict:
  if value is None:
    return {}
  if not isinstance(value, dict):
    raise ValueError(f"{where} is not a mapping: {value!r}")
  unknown = sorted(set(value) - allowed)
  if unknown:
    raise ValueError(f"{where}: config/s3.go reads no {unknown} (the backend would "
                     f"silently ignore them); it reads {sorted(allowed)}")
  return value


def s3_session(launcher_config: dict | None, root: str) -> dict:
  """The session the launcher opens `root` with (config/s3.go ProvideSessionInfo)."""
  providers = yaml.safe_load((launcher_config or {}).get("providers") or "") or {}
  _check_keys(providers, PROVIDERS, "providers")
  s3 = _check_keys(providers.get("s3"), S3_PROVIDER_KEYS, "providers.s3")
  if s3.get("Overrides"):
    raise NotImplementedError("providers.s3.Overrides are not emulated here")
  if not s3 or "?" in root:
    return {"fromEnv": True}
  default = _check_keys(s3.get("default"), S3_DEFAULT_KEYS, "providers.s3.default")
  credentials = _check_keys(default.get("credentials"), S3_CREDENTIALS_KEYS,
                            "providers.s3.default.credentials")
  if not credentials:
    raise ValueError("invalid provider config: missing default credentials")
  session = {"endpoint": default.get("endpoint", ""), "region": default.get("region", ""),
             "disableSSL": bool(default.get("disableSSL", False)),
             "forcePathStyle": bool(default.get("forcePathStyle", True)),
             "fromEnv": bool(credentials.get("fromEnv", False))}
  if not session["fromEnv"]:
    ref = _check_keys(credentials.get("secretRef"), S3_SECRET_REF_KEYS,
                      "providers.s3.default.credentials.secretRef")
    session.update({k: ref.get(k, "") for k in sorted(S3_SECRET_REF_KEYS)})
  return session


class ObjectStore:
  """The launcher's bucket: list, download and upload under s3:// URIs (boto3)."""

  def __init__(self, client):
    self.client = client

  @staticmethod
  def _split(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
      raise ValueError(f"{uri}: only s3:// object storage is emulated here")
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key.rstrip("/")

  def keys(self, uri: str) -> list[str]:
    """objectstore DownloadBlob's listing: the key itself and keys below it."""
    bucket, prefix = self._split(uri)
    found = []
    for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                      Prefix=prefix):
      found += [o["Key"] for o in page.get("Contents", [])
                if o["Key"] == prefix or o["Key"].startswith(prefix + "/")]
    return found

  def exists(self, uri: str) -> bool:
    return bool(self.keys(uri))

  def download(self, uri: str, local_dir: str) -> int:
    """objectstore DownloadBlob: every object under `uri` into `local_dir`; bytes."""
    bucket, prefix = self._split(uri)
    total = 0
    for key in self.keys(uri):
      target = pathlib.Path(local_dir) / os.path.relpath(key, prefix)
      target.parent.mkdir(parents=True, exist_ok=True)
      self.client.download_file(bucket, key, str(target))
      total += target.stat().st_size
    return total

  def upload(self, local: str, uri: str) -> None:
    """objectstore UploadBlob: a file to `uri`, or a folder's files below it."""
    bucket, key = self._split(uri)
    path = pathlib.Path(local)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
      name = key if f == path else f"{key}/{f.relative_to(path).as_posix()}"
      self.client.upload_file(str(f), bucket, name)


def open_store(session: dict, secrets: dict[str, dict[str, str]] | None) -> ObjectStore:
  """objectstore OpenBucket with an s3 session; keys from the named secret
  (object_store.go getS3BucketCredential), else the environment's."""
  import boto3
  from botocore.config import Config
  if session.get("fromEnv"):
    return ObjectStore(boto3.client("s3"))
  secret = (secrets or {}).get(session["secretName"])
  access, secret_key = ((secret or {}).get(session["accessKeyKey"]),
                        (secret or {}).get(session["secretKeyKey"]))
  if not (access and secret_key):
    raise ValueError(f"failed to get Bucket credentials from secret name="
                     f"{session['secretName']!r}: could not find the access and secret keys")
  endpoint = session["endpoint"]
  if endpoint and "://" not in endpoint:
    endpoint = ("http://" if session["disableSSL"] else "https://") + endpoint
  return ObjectStore(boto3.client(
      "s3", endpoint_url=endpoint or None, region_name=session["region"] or None,
      aws_access_key_id=access, aws_secret_access_key=secret_key,
      config=Config(s3={"addressing_style": "path" if session["forcePathStyle"] else "auto"})))


# The pod.

def secret_env(platform_spec: dict, executor: str, secrets: dict[str, dict[str, str]],
               task_name: str) -> dict[str, str]:
  """The variables kfp-kubernetes' `secretAsEnv` puts in the executor's pod.

  `secrets` plays the namespace's Kubernetes secrets: {name: {key: value}}; a
  missing secret or key fails the task, as the pod would not start.
  """
  config = (platform_spec.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {})
            .get("executors", {}).get(executor, {}))
  env = {}
  for entry in config.get("secretAsEnv", []):
    secret = secrets.get(entry["secretName"])
    for mapping in entry["keyToEnv"]:
      if secret is None or mapping["secretKey"] not in secret:
        raise TaskFailed(task_name, f"secret {entry['secretName']!r} has no key "
                                    f"{mapping['secretKey']!r}: the pod cannot start")
      env[mapping["envVar"]] = secret[mapping["secretKey"]]
  return env


def dag_order(spec: dict, tasks: dict | None = None) -> list[str]:
  """A DAG's task names (the root's by default), each after the tasks it depends on
  (ties by name)."""
  tasks = spec["root"]["dag"]["tasks"] if tasks is None else tasks
  done: list[str] = []
  while len(done) < len(tasks):
    ready = sorted(name for name, task in tasks.items() if name not in done
                   and set(task.get("dependentTasks", [])) <= set(done))
    if not ready:
      raise ValueError(f"dependency cycle among {sorted(set(tasks) - set(done))}")
    done.append(ready[0])
  return done


def find_task(spec: dict, task_name: str) -> dict:
  """A task of the root DAG or of any sub-DAG (TFX's task names are unique)."""
  for dag in [spec["root"]] + list(spec["components"].values()):
    task = dag.get("dag", {}).get("tasks", {}).get(task_name)
    if task is not None:
      return task
  raise KeyError(task_name)


_CONDITION = re.compile(r"\(?inputs\.artifacts\['([^']+)'\]\.artifacts\[(\d+)\]\.metadata"
                        r"\['([^']+)'\] == (-?[0-9.]+)\)?")


def condition_holds(task_name: str, condition: str, artifacts: dict) -> bool:
  """A trigger policy's condition on resolved input artifacts (expression/expression.go:
  CEL over the ExecutorInput). Only the form TFX compiles is understood here; a
  missing artifact or key is an evaluation error, which fails the task."""
  match = _CONDITION.fullmatch(condition.strip())
  if not match:
    raise NotImplementedError(f"condition {condition!r} is beyond this harness")
  name, index, key, number = match.groups()
  try:
    value = artifacts[name]["artifacts"][int(index)]["metadata"][key]
  except (KeyError, IndexError) as e:
    raise TaskFailed(task_name, f"condition {condition!r}: evaluation error: no {e}") from None
  return value == float(number)


def _resolve_artifacts(spec: dict, task_name: str, upstream: dict[str, dict],
                       dag_inputs: dict[str, dict] | None, typed_inputs: bool) -> dict:
  """A task's input artifacts: a producer's output, or the enclosing DAG's input."""
  task = find_task(spec, task_name)
  definitions = spec["components"][task["componentRef"]["name"]].get("inputDefinitions", {})
  artifacts = {}
  for name, source in task.get("inputs", {}).get("artifacts", {}).items():
    artifact_type = (definitions["artifacts"][name]["artifactType"] if typed_inputs
                     else {"instanceSchema": ""})
    if "componentInputArtifact" in source:
      artifacts[name] = copy.deepcopy((dag_inputs or {})[source["componentInputArtifact"]])
      artifacts[name]["artifacts"][0]["type"] = artifact_type
      continue
    producer = source["taskOutputArtifact"]["producerTask"]
    produced = upstream[producer]["outputs"][source["taskOutputArtifact"]["outputArtifactKey"]]
    artifacts[name] = {"artifacts": [{
        "name": produced["name"], "uri": produced["uri"], "type": artifact_type,
        "metadata": produced["metadata"]}]}
  return artifacts


def _parameter(task_name: str, name: str, source: dict, kind: str | None) -> Any:
  if "runtimeValue" not in source or "constant" not in source["runtimeValue"]:
    raise TaskFailed(task_name, f"parameter {name}: only runtimeValue.constant is supported "
                                f"here, got {source}")
  value = source["runtimeValue"]["constant"]
  if kind == "STRING" and not isinstance(value, str):
    return json.dumps(value)  # KFP's driver: any value is consumable as its JSON text
  ok = {"STRING": str, "BOOLEAN": bool, "LIST": list, "STRUCT": dict}.get(kind)
  if kind in _NUMBER_TYPES:
    ok = (int, float)
  if ok and (not isinstance(value, ok) or (kind in _NUMBER_TYPES and isinstance(value, bool))):
    raise TaskFailed(task_name, f"input parameter {name!r} type mismatch: expect {kind}, "
                                f"got {type(value).__name__}")
  return float(value) if kind in _NUMBER_TYPES else value


def _through_mlmd(task_name: str, metadata: dict) -> dict:
  """Artifact metadata as a consumer reads it back after KFP stored it in MLMD."""
  stored = {}
  for key, value in metadata.items():
    if value is None:  # StructValueToMLMDValue: "TODO: support null"
      raise TaskFailed(task_name, f"output metadata {key!r} is null: KFP cannot record it")
    if isinstance(value, bool):
      value = float(value)  # stored as an int, read back as a number
    elif isinstance(value, (int, float)):
      value = float(value)
    elif isinstance(value, list):
      value = {"list": value}
    elif isinstance(value, dict):
      value = {"struct": value}
    stored[key] = value
  return stored


def _artifact_id(uri: str) -> str:
  """A stand-in for the MLMD id KFP gives a recorded artifact (its RuntimeArtifact name)."""
  return str(int(hashlib.sha256(uri.encode()).hexdigest()[:12], 16))


def cache_key(executor_input: dict, container: dict) -> str:
  """What KFP's cache looks an execution up by (cacheutils.GenerateCacheKey)."""
  inputs, outputs = executor_input["inputs"], executor_input["outputs"]
  key = {
      "inputArtifactNames": {k: [a.get("name", "") for a in v["artifacts"]]
                             for k, v in inputs.get("artifacts", {}).items()},
      "inputParameterValues": inputs.get("parameterValues", {}),
      "outputArtifactsSpec": {k: {f: a.get(f) for f in ("name", "type", "metadata")}
                              for k, v in outputs.get("artifacts", {}).items()
                              for a in v["artifacts"][:1]},
      "containerSpec": {"image": container.get("image"),
                        "cmdArgs": container.get("command", []) + container.get("args", [])},
  }
  return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def executor_input(spec: dict, task_name: str, root: str, upstream: dict[str, dict],
                   typed_inputs: bool = False, salt: str | None = None,
                   publish_logs: bool = True, pod_dir: str | None = None,
                   dag_inputs: dict[str, dict] | None = None) -> dict:
  """The ExecutorInput (as JSON) KFP's driver builds for `task_name`.

  `root` is the run's root (run_root), `upstream` maps producer task names to their
  records (see run_task), `salt` the driver's per-execution uuid.
  """
  task = find_task(spec, task_name)
  component = spec["components"][task["componentRef"]["name"]]
  definitions = component.get("inputDefinitions", {})
  parameters = {
      name: _parameter(task_name, name, source,
                       definitions.get("parameters", {}).get(name, {}).get("parameterType"))
      for name, source in task.get("inputs", {}).get("parameters", {}).items()}
  artifacts = _resolve_artifacts(spec, task_name, upstream, dag_inputs, typed_inputs)
  # driver/driver.go provisionOutputs: one task root per execution, salted with a uuid
  # (since KFP 2.5, so that retries and reruns never overwrite), outputs named by key.
  task_root = generate_output_uri(root, task_name, salt or str(uuid.uuid4()))
  declared = dict(component.get("outputDefinitions", {}).get("artifacts", {}))
  if publish_logs:
    declared[LOGS_KEY] = {"artifactType": LOGS_TYPE}
  outputs = {
      key: {"artifacts": [{"name": key, "uri": generate_output_uri(task_root, key),
                           "type": output["artifactType"],
                           "metadata": copy.deepcopy(output.get("metadata", {}))}]}
      for key, output in declared.items()}
  local_root = local_path_for_uri(task_root)
  output_file = (f"{local_root}/output_metadata.json" if local_root is not None
                 else LEGACY_OUTPUT_FILE)
  return {"inputs": {"parameterValues": parameters, "artifacts": artifacts},
          "outputs": {"artifacts": outputs, "outputFile": _in_pod(pod_dir, output_file)}}


def _placeholders(invocation: dict, pod_dir: str) -> dict[str, str]:
  """component/launcher_v2.go getPlaceholders: {{$}} and the artifacts' uri/path."""
  values = {"{{$}}": json.dumps(invocation)}
  for side in ("inputs", "outputs"):
    for name, artifacts in invocation[side].get("artifacts", {}).items():
      artifact = artifacts["artifacts"][0]
      values[f"{{{{$.{side}.artifacts['{name}'].uri}}}}"] = artifact["uri"]
      local = local_path_for_uri(artifact["uri"])
      if local is not None:
        values[f"{{{{$.{side}.artifacts['{name}'].path}}}}"] = _in_pod(pod_dir, local)
  return values


def _tail(text: str) -> str:
  return "\n".join(text.splitlines()[-LOG_TAIL_LINES:])


_warm_python = None


def _execute(argv: list[str], env: dict[str, str], log: pathlib.Path,
             timeout_s: float) -> int | None:
  """Runs the command with its output (stdout and stderr) in `log`; its exit code, None
  if killed after `timeout_s`. Python commands run forked from a warm interpreter
  (tests/warm_python.py) unless FINETUNE_FRESH_TASKS=1."""
  global _warm_python
  if _warm_python is None:
    _warm_python = WarmPython({**os.environ, "PYTHONPATH": str(REPO_ROOT),
                               "TF_USE_LEGACY_KERAS": "1"})
    atexit.register(_warm_python.close)
  if _warm_python.handles(argv) and os.environ.get("FINETUNE_FRESH_TASKS") != "1":
    return _warm_python.run(argv, env, str(REPO_ROOT), str(log), timeout_s)
  with log.open("w") as output:
    try:
      return subprocess.run(argv, cwd=REPO_ROOT, env=env, stdout=output,
                            stderr=subprocess.STDOUT, timeout=timeout_s).returncode
    except subprocess.TimeoutExpired:
      return None


def run_task(spec: dict, task_name: str, root: str, upstream: dict[str, dict], *,
             work_dir: str, store: ObjectStore | None = None, env: dict | None = None,
             typed_inputs: bool = False, timeout_s: float = TASK_TIMEOUT_S,
             platform_spec: dict | None = None,
             secrets: dict[str, dict[str, str]] | None = None,
             publish_logs: bool = True, dag_inputs: dict[str, dict] | None = None) -> dict:
  """Runs one task as its pod would; returns its record, raises TaskFailed if it fails.

  `root` is the run's root (run_root), `store` the launcher's bucket (open_store).
  The record: returncode, seconds, outputs {key: {name, uri, metadata}} (metadata as
  consumers will read it), executor_input, executor_output (None if not written),
  pod (the pod's folder), downloaded {input: local path}, unwritten_outputs (declared
  outputs with nothing at their URI after the upload), skipped_hooks (lifecycle hooks
  KFP's open-source backend skips), cache_key, log and log_tail.
  """
  task = find_task(spec, task_name)
  component = spec["components"][task["componentRef"]["name"]]
  container = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
  pod_env = secret_env(platform_spec or {}, component["executorLabel"], secrets or {},
                       task_name)  # before anything: the pod would not start
  salt = str(uuid.uuid4())
  pod = pathlib.Path(work_dir) / "pods" / f"{task_name}-{salt}"
  invocation = executor_input(spec, task_name, root, upstream, typed_inputs, salt,
                              publish_logs, str(pod), dag_inputs)
  pod.mkdir(parents=True)
  log = pod / "executor.log"

  # component/launcher_v2.go prepareOutputFolders: every output needs a local path.
  for key, artifacts in invocation["outputs"]["artifacts"].items():
    local = local_path_for_uri(artifacts["artifacts"][0]["uri"])
    if local is None:
      raise TaskFailed(task_name, f"failed to generate local storage path for output artifact "
                                  f"{key!r}: unsupported storage scheme in "
                                  f"{artifacts['artifacts'][0]['uri']}")
    pathlib.Path(_in_pod(pod, local)).parent.mkdir(parents=True, exist_ok=True)
  pathlib.Path(invocation["outputs"]["outputFile"]).parent.mkdir(parents=True, exist_ok=True)

  # component/launcher_v2.go downloadArtifacts: every input to its local path first.
  downloaded = {}
  for name, artifacts in invocation["inputs"]["artifacts"].items():
    uri = artifacts["artifacts"][0]["uri"]
    local = local_path_for_uri(uri)
    if local is None:
      continue  # "does not have a recognized storage URI ... Skipping downloading"
    if store is None:
      raise TaskFailed(task_name, f"no object store to download input {name!r} from {uri}")
    try:
      store.download(uri, _in_pod(pod, local))
    except Exception as e:  # pylint: disable=broad-except
      raise TaskFailed(task_name, f"failed to download input artifact {name!r} from remote "
                                  f"storage URI {uri!r}: {e}") from e
    downloaded[name] = _in_pod(pod, local)

  placeholders = _placeholders(invocation, str(pod))
  argv = []
  for arg in container.get("command", []) + container.get("args", []):
    for placeholder, value in placeholders.items():
      arg = arg.replace(placeholder, value)
    argv.append(arg)
  if argv and argv[0] == "python":
    argv[0] = sys.executable
  leftover = [a for a in argv if re.search(r"\{\{\$", a)]
  if leftover:
    raise TaskFailed(task_name, f"placeholders this harness does not fill: {leftover}")
  process_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_USE_LEGACY_KERAS": "1",
                 **{e["name"]: e.get("value", "") for e in container.get("env", [])},
                 **pod_env, **(env or {})}
  start = time.monotonic()
  returncode = _execute(argv, process_env, log, timeout_s)
  seconds = time.monotonic() - start
  text = log.read_text(errors="replace")
  if returncode is None:
    text += f"\n[harness] killed after {timeout_s:.0f}s"
    log.write_text(text)
  logs = invocation["outputs"]["artifacts"].get(LOGS_KEY)
  if logs:  # launcher_v2.go getLogWriter: the command's output teed to the log artifact
    pathlib.Path(_in_pod(pod, local_path_for_uri(logs["artifacts"][0]["uri"]))).write_text(text)

  output_file = pathlib.Path(invocation["outputs"]["outputFile"])
  # launcher_v2.go getExecutorOutputFile: no file is an empty ExecutorOutput.
  reported = json.loads(output_file.read_text()) if output_file.exists() else None
  record = {"returncode": returncode, "seconds": round(seconds, 1), "outputs": {},
            "executor_input": invocation, "executor_output": reported, "pod": str(pod),
            "downloaded": downloaded, "unwritten_outputs": [],
            "skipped_hooks": sorted(container.get("lifecycle", {})),
            "cache_key": cache_key(invocation, container), "log": str(log),
            "log_tail": _tail(text)}
  if returncode != 0:  # the launcher stops before uploading anything
    why = "timed out" if returncode is None else f"exited with {returncode}"
    raise TaskFailed(task_name, f"{why} after {seconds:.0f}s; the end of its output "
                                f"({log}):\n{record['log_tail']}", record)

  # launcher_v2.go uploadOutputArtifacts: merge what the executor reported, upload each
  # output's local path when it exists, record every output either way.
  for key, artifacts in invocation["outputs"]["artifacts"].items():
    artifact = copy.deepcopy(artifacts["artifacts"][0])
    for src in ((reported or {}).get("artifacts", {}).get(key, {}).get("artifacts") or [])[:1]:
      artifact["uri"] = src.get("uri") or artifact["uri"]  # mergeRuntimeArtifacts
      artifact["metadata"].update(src.get("metadata", {}))
    local = local_path_for_uri(artifact["uri"])
    if local is not None and os.path.exists(_in_pod(pod, local)):
      if store is None:
        raise TaskFailed(task_name, f"no object store to upload output {key!r} to "
                                    f"{artifact['uri']}", record)
      store.upload(_in_pod(pod, local), artifact["uri"])
    if key != LOGS_KEY and (store is None or not store.exists(artifact["uri"])):
      record["unwritten_outputs"].append(key)  # "Local filepath ... does not exist"
    record["outputs"][key] = {
        "name": _artifact_id(artifact["uri"]), "uri": artifact["uri"],
        "metadata": {**_through_mlmd(task_name, artifact["metadata"]),
                     "display_name": artifact["metadata"].get("display_name", key)}}
  return record


def run_package(package_path: str, run_id: str, *, work_dir: str,
                pipeline_root: str | None = None, launcher_config: dict | None = None,
                env: dict | None = None, typed_inputs: bool = False,
                timeout_s: float = TASK_TIMEOUT_S,
                secrets: dict[str, dict[str, str]] | None = None,
                publish_logs: bool = True) -> dict[str, dict]:
  """Runs every task of the package in DAG order; returns {task name: record}, a
  sub-DAG's record being {dag, condition, triggered}, its tasks' records after it.

  `pipeline_root` plays the run's runtime config (what `finetune kubeflow submit`
  sends), `launcher_config` the `kfp-launcher` ConfigMap's data and `secrets` the
  namespace's secrets. Raises TaskFailed, naming the task and ending with its
  output, at the first task that fails.
  """
  spec, platform_spec = load_package(package_path), load_platform_spec(package_path)
  root = resolve_pipeline_root(pipeline_root, launcher_config)
  store = None
  if root.startswith("s3://"):
    store = open_store(s3_session(launcher_config, root), secrets)
  this_run = run_root(root, spec["pipelineInfo"]["name"], run_id)
  records: dict[str, dict] = {}

  def run_dag(tasks: dict, dag_inputs: dict | None) -> None:
    for name in dag_order(spec, tasks):
      component = spec["components"][tasks[name]["componentRef"]["name"]]
      if "dag" not in component:
        records[name] = run_task(spec, name, this_run, records, work_dir=work_dir, store=store,
                                 env=env, typed_inputs=typed_inputs, timeout_s=timeout_s,
                                 platform_spec=platform_spec, secrets=secrets,
                                 publish_logs=publish_logs, dag_inputs=dag_inputs)
        continue
      inputs = _resolve_artifacts(spec, name, records, dag_inputs, typed_inputs)
      condition = tasks[name].get("triggerPolicy", {}).get("condition")
      triggered = condition_holds(name, condition, inputs) if condition else True
      records[name] = {"dag": True, "condition": condition, "triggered": triggered}
      if triggered:
        run_dag(component["dag"]["tasks"], inputs)

  run_dag(spec["root"]["dag"]["tasks"], None)
  return records
