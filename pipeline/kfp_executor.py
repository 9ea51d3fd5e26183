"""The command every Kubeflow task runs: TFX's kubeflow_v2_run_executor, made
to work with the open-source KFP backend.

Two things that backend hands a task differ from what TFX 1.16 expects:
  * input artifacts come with an empty type (its driver does not carry the
    schema over), and TFX then cannot tell an Examples artifact from a Model.
    The compiled arguments carry the component's declared inputs
    (--json_serialized_inputs_spec_args): their types are filled in here;
  * since KFP 2.5 the driver adds an output of its own, `executor-logs`, typed
    `system.Artifact`, to every task (backend/src/v2/driver/driver.go,
    provisionOutputs), where the launcher tees the task's log. TFX imports
    every output's schema title as a class and dies on it ("Could not import
    system.Artifact"). The compiled arguments carry no outputs spec, but TFX
    never compiles a `system.*` title (its titles are `tfx.*` or class paths,
    tfx/orchestration/kubeflow/v2/compiler_utils.py), so outputs typed with
    KFP's own `system.*` titles are the backend's, and are not passed on.

With `s3://` URIs, tensorflow_io is loaded first, and the process ends
without the C++ teardown that aborts after S3 use (pipeline/storage.py).
"""
from __future__ import annotations

import json
import sys
import traceback

import components  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from pipeline import storage

INVOCATION = "--json_serialized_invocation_args"
INPUTS_SPEC = "--json_serialized_inputs_spec_args"
# KFP's own artifact type namespace (system.Artifact, system.Model, ...).
KFP_TYPE_PREFIX = "system."


def _value(argv: list[str], flag: str) -> int | None:
  return argv.index(flag) + 1 if flag in argv[:-1] else None


def with_input_types(argv: list[str]) -> list[str]:
  """`argv` with every untyped input artifact given its declared type."""
  invocation, inputs_spec = _value(argv, INVOCATION), _value(argv, INPUTS_SPEC)
  if invocation is None or inputs_spec is None:
    return argv
  executor_input = json.loads(argv[invocation])
  declared = json.loads(argv[inputs_spec]).get("artifacts", {})
  for name, artifact_list in executor_input.get("inputs", {}).get("artifacts", {}).items():
    for artifact in artifact_list.get("artifacts", []):
      kind = artifact.get("type") or {}
      if not (kind.get("schemaTitle") or kind.get("instanceSchema")) and name in declared:
        artifact["type"] = declared[name]["artifactType"]
  argv = list(argv)
  argv[invocation] = json.dumps(executor_input)
  return argv


def _is_backend_output(artifact_list: dict) -> bool:
  return any((a.get("type") or {}).get("schemaTitle", "").startswith(KFP_TYPE_PREFIX)
             for a in artifact_list.get("artifacts", []))


def without_backend_outputs(argv: list[str]) -> list[str]:
  """`argv` without the output artifacts the backend adds (typed `system.*`).

  Their files are the launcher's business: it writes and uploads them itself.
  """
  invocation = _value(argv, INVOCATION)
  if invocation is None:
    return argv
  executor_input = json.loads(argv[invocation])
  outputs = executor_input.get("outputs", {}).get("artifacts", {})
  extra = [name for name, artifact_list in outputs.items() if _is_backend_output(artifact_list)]
  if not extra:
    return argv
  for name in extra:
    del outputs[name]
  argv = list(argv)
  argv[invocation] = json.dumps(executor_input)
  return argv


def main(argv: list[str]) -> None:
  if any(storage.S3_SCHEME in arg for arg in argv):
    storage.enable_s3()
  from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor as tfx_entrypoint
  from pipeline.beam_dependencies import skip_tfx_sdist_on_direct_runner
  skip_tfx_sdist_on_direct_runner()
  try:
    argv = without_backend_outputs(with_input_types(argv))
    tfx_entrypoint.main(tfx_entrypoint._parse_flags(argv))  # pylint: disable=protected-access
    code = 0
  except SystemExit as e:
    code = storage.exit_code(e)
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
    code = 1
  storage.exit_process(code)


if __name__ == "__main__":
  main(sys.argv[1:])
