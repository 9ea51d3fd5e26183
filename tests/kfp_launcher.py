"""Runs a compiled KFP v2 package here, task by task, as Kubeflow's launcher would.

What it reproduces of the open-source KFP v2 backend (driver + launcher):
  * task order: the root DAG's tasks, each after its `dependentTasks`;
  * the ExecutorInput: parameters from the tasks' `runtimeValue.constant`s (a
    non-string value for a STRING parameter becomes its JSON text, any other
    type mismatch fails the task); input artifacts are the producers' output
    artifacts as KFP stores and reads them back from MLMD: `name` is the
    artifact id, the metadata the producer's ExecutorOutput reported passes
    MLMD's value types (numbers become doubles, booleans 0/1, lists and
    structs are wrapped in {"list": ...} / {"struct": ...}) and gains
    `display_name`; output artifacts get
    `<pipeline_root>/<run_id>/<task>/<output key>` and the type of the
    component's outputDefinitions;
  * the executor's exact `command + args` from deploymentSpec, `{{$}}`
    replaced by the ExecutorInput JSON (`python` is this interpreter);
  * reading the ExecutorOutput and merging it into the output artifacts (a
    reported URI replaces the provisioned one, reported metadata is added);
  * the key KFP's cache would look this execution up by (input parameters,
    input artifact names, output artifact specs without URIs, image,
    command + args), so tests can tell what a cached KFP run would reuse.

What it does not: no container or image (the executor runs in this
interpreter, cwd = the repository root, as /opt/finetune is in the image), no
MLMD, no caching (every task runs), no lifecycle hooks (the `preCacheCheck`
driver is skipped, as the open-source backend skips it), no resource
requests, no artifact download/upload (executors read and write the pipeline
root themselves: a local folder, where output artifact folders are created up
front, or an `s3://` bucket, given `env` to reach it).
Deviations: `outputs.output_file` is `<work_dir>/<run_id>/<task>/
executor_output.json` (KFP: /tmp/kfp_outputs/output_metadata.json in the
pod; `work_dir` defaults to the pipeline root when that is a local folder),
and the task's log goes next to it as executor.log. Input artifacts
come with an empty type, as the open-source driver sends them
(metadata.Client.GetOutputArtifactsByExecutionId: "TODO(Bobgy): figure out
how to get schema"); `typed_inputs=True` gives them the consumer's declared type.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys
import time
from typing import Any

import yaml

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TASK_TIMEOUT_S = 1200
LOG_TAIL_LINES = 60
_NUMBER_TYPES = ("NUMBER_INTEGER", "NUMBER_DOUBLE")


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


def dag_order(spec: dict) -> list[str]:
  """The root DAG's task names, each after the tasks it depends on (ties by name)."""
  tasks = spec["root"]["dag"]["tasks"]
  done: list[str] = []
  while len(done) < len(tasks):
    ready = sorted(name for name, task in tasks.items() if name not in done
                   and set(task.get("dependentTasks", [])) <= set(done))
    if not ready:
      raise ValueError(f"dependency cycle among {sorted(set(tasks) - set(done))}")
    done.append(ready[0])
  return done


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


def executor_input(spec: dict, task_name: str, pipeline_root: str, run_id: str,
                   upstream: dict[str, dict], typed_inputs: bool = False,
                   work_dir: str | None = None) -> dict:
  """The ExecutorInput (as JSON) KFP's driver builds for `task_name`.

  `upstream` maps producer task names to their records (see run_task).
  """
  task = spec["root"]["dag"]["tasks"][task_name]
  component = spec["components"][task["componentRef"]["name"]]
  definitions = component.get("inputDefinitions", {})
  parameters = {
      name: _parameter(task_name, name, source,
                       definitions.get("parameters", {}).get(name, {}).get("parameterType"))
      for name, source in task.get("inputs", {}).get("parameters", {}).items()}
  artifacts = {}
  for name, source in task.get("inputs", {}).get("artifacts", {}).items():
    producer = source["taskOutputArtifact"]["producerTask"]
    produced = upstream[producer]["outputs"][source["taskOutputArtifact"]["outputArtifactKey"]]
    artifact_type = (definitions["artifacts"][name]["artifactType"] if typed_inputs
                     else {"instanceSchema": ""})
    artifacts[name] = {"artifacts": [{
        "name": produced["name"], "uri": produced["uri"], "type": artifact_type,
        "metadata": produced["metadata"]}]}
  task_root = f"{pipeline_root.rstrip('/')}/{run_id}/{task_name}"
  outputs = {
      key: {"artifacts": [{"uri": f"{task_root}/{key}", "type": output["artifactType"],
                           "metadata": copy.deepcopy(output.get("metadata", {}))}]}
      for key, output in component.get("outputDefinitions", {}).get("artifacts", {}).items()}
  output_file = f"{(work_dir or pipeline_root).rstrip('/')}/{run_id}/{task_name}/executor_output.json"
  return {"inputs": {"parameterValues": parameters, "artifacts": artifacts},
          "outputs": {"artifacts": outputs, "outputFile": output_file}}


def _tail(text: str) -> str:
  return "\n".join(text.splitlines()[-LOG_TAIL_LINES:])


def _is_local(uri: str) -> bool:
  return "://" not in uri


def run_task(spec: dict, task_name: str, pipeline_root: str, run_id: str,
             upstream: dict[str, dict], env: dict | None = None, typed_inputs: bool = False,
             timeout_s: float = TASK_TIMEOUT_S, work_dir: str | None = None,
             platform_spec: dict | None = None,
             secrets: dict[str, dict[str, str]] | None = None) -> dict:
  """Runs one task's executor; returns its record, raises TaskFailed if it fails.

  The record: returncode, seconds, outputs {key: {name, uri, metadata}} (metadata
  as consumers will read it), executor_input, executor_output (None if not
  written), skipped_hooks (lifecycle hooks KFP's open-source backend skips),
  cache_key, log (where the task's output went) and log_tail.
  """
  task = spec["root"]["dag"]["tasks"][task_name]
  component = spec["components"][task["componentRef"]["name"]]
  container = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
  if work_dir is None and not _is_local(pipeline_root):
    raise ValueError(f"pipeline root {pipeline_root} is not a local folder: give a work_dir")
  invocation = executor_input(spec, task_name, pipeline_root, run_id, upstream, typed_inputs,
                              work_dir)
  output_file = pathlib.Path(invocation["outputs"]["outputFile"])
  if output_file.parent.exists():
    raise TaskFailed(task_name, f"{output_file.parent} exists: use a new run id")
  output_file.parent.mkdir(parents=True)
  for artifacts in invocation["outputs"]["artifacts"].values():
    if _is_local(artifacts["artifacts"][0]["uri"]):
      os.makedirs(artifacts["artifacts"][0]["uri"], exist_ok=True)

  argv = [a.replace("{{$}}", json.dumps(invocation))
          for a in container.get("command", []) + container.get("args", [])]
  if argv and argv[0] == "python":
    argv[0] = sys.executable
  leftover = [a for a in argv if re.search(r"\{\{\$", a)]
  if leftover:
    raise TaskFailed(task_name, f"placeholders this harness does not fill: {leftover}")
  process_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_USE_LEGACY_KERAS": "1",
                 **{e["name"]: e.get("value", "") for e in container.get("env", [])},
                 **secret_env(platform_spec or {}, component["executorLabel"], secrets or {},
                              task_name),
                 **(env or {})}
  log = output_file.parent / "executor.log"
  start = time.monotonic()
  try:
    result = subprocess.run(argv, cwd=REPO_ROOT, env=process_env, capture_output=True,
                            text=True, timeout=timeout_s)
    returncode, text = result.returncode, result.stdout + result.stderr
  except subprocess.TimeoutExpired as e:
    returncode = None
    text = ((e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
            + f"\n[harness] killed after {timeout_s:.0f}s")
  seconds = time.monotonic() - start
  log.write_text(text)

  reported = json.loads(output_file.read_text()) if output_file.exists() else None
  outputs = {}
  for key, artifacts in invocation["outputs"]["artifacts"].items():
    artifact = copy.deepcopy(artifacts["artifacts"][0])
    for src in ((reported or {}).get("artifacts", {}).get(key, {}).get("artifacts") or [])[:1]:
      artifact["uri"] = src.get("uri") or artifact["uri"]  # the launcher's mergeRuntimeArtifacts
      artifact["metadata"].update(src.get("metadata", {}))
    outputs[key] = {"name": _artifact_id(artifact["uri"]), "uri": artifact["uri"],
                    "metadata": {**_through_mlmd(task_name, artifact["metadata"]),
                                 "display_name": artifact["metadata"].get("display_name", key)}}
  record = {"returncode": returncode, "seconds": round(seconds, 1), "outputs": outputs,
            "executor_input": invocation, "executor_output": reported,
            "skipped_hooks": sorted(container.get("lifecycle", {})),
            "cache_key": cache_key(invocation, container), "log": str(log),
            "log_tail": _tail(text)}
  if returncode != 0:
    why = "timed out" if returncode is None else f"exited with {returncode}"
    raise TaskFailed(task_name, f"{why} after {seconds:.0f}s; the end of its output "
                                f"({log}):\n{record['log_tail']}", record)
  return record


def run_package(package_path: str, pipeline_root: str, run_id: str, env: dict | None = None,
                typed_inputs: bool = False, timeout_s: float = TASK_TIMEOUT_S,
                work_dir: str | None = None,
                secrets: dict[str, dict[str, str]] | None = None) -> dict[str, dict]:
  """Runs every task of the package in DAG order; returns {task name: record}.

  `pipeline_root` plays the run's pipeline root (the package's
  `defaultPipelineRoot` unless a run overrides it). Raises TaskFailed, naming
  the task and ending with its output, at the first task that fails.
  """
  spec, platform_spec = load_package(package_path), load_platform_spec(package_path)
  records: dict[str, dict] = {}
  for name in dag_order(spec):
    records[name] = run_task(spec, name, pipeline_root, run_id, records, env=env,
                             typed_inputs=typed_inputs, timeout_s=timeout_s, work_dir=work_dir,
                             platform_spec=platform_spec, secrets=secrets)
  return records
