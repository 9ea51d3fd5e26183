"""The command every Kubeflow task runs: TFX's kubeflow_v2_run_executor, made
to work with the open-source KFP backend.

That backend hands a task its input artifacts with an empty type (its driver
does not carry the schema over), and TFX 1.16 then cannot tell an Examples
artifact from a Model. The compiled arguments also carry the component's
declared inputs (--json_serialized_inputs_spec_args): their types are filled
in here before TFX's own entrypoint runs.

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


def main(argv: list[str]) -> None:
  if any(storage.S3_SCHEME in arg for arg in argv):
    storage.enable_s3()
  from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor as tfx_entrypoint
  try:
    tfx_entrypoint.main(tfx_entrypoint._parse_flags(with_input_types(argv)))  # pylint: disable=protected-access
    code = 0
  except SystemExit as e:
    code = storage.exit_code(e)
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
    code = 1
  storage.exit_process(code)


if __name__ == "__main__":
  main(sys.argv[1:])
