"""Reads finished runs back from ML Metadata: what ran, for how long, what it wrote."""
from __future__ import annotations

import dataclasses

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata

_STATES = {metadata_store_pb2.Execution.COMPLETE: "ran",
           metadata_store_pb2.Execution.CACHED: "cached",
           metadata_store_pb2.Execution.FAILED: "failed",
           metadata_store_pb2.Execution.RUNNING: "running",
           metadata_store_pb2.Execution.CANCELED: "canceled"}


@dataclasses.dataclass
class NodeRun:
  node_id: str
  state: str
  seconds: float
  outputs: dict[str, list[metadata_store_pb2.Artifact]]


@dataclasses.dataclass
class PipelineRun:
  run_id: str
  nodes: dict[str, NodeRun]

  def artifact(self, node_id: str, key: str) -> metadata_store_pb2.Artifact | None:
    node = self.nodes.get(node_id)
    found = node.outputs.get(key) if node else None
    return found[0] if found else None


def open_store(metadata_path: str) -> metadata_store.MetadataStore:
  return metadata_store.MetadataStore(
      metadata.sqlite_metadata_connection_config(metadata_path))


def run_ids(store: metadata_store.MetadataStore) -> list[str]:
  """Run ids, oldest first."""
  contexts = store.get_contexts_by_type("pipeline_run")
  return [c.name for c in sorted(contexts, key=lambda c: c.create_time_since_epoch)]


def state_name(execution: metadata_store_pb2.Execution) -> str:
  return _STATES.get(execution.last_known_state, "unknown")


def node_name(store: metadata_store.MetadataStore, execution) -> str:
  """The pipeline node an execution belongs to, e.g. 'Trainer'."""
  node_type = store.get_context_type("node")
  for context in store.get_contexts_by_execution(execution.id):
    if context.type_id == node_type.id:
      return context.name.split(".", 1)[-1]
  return f"execution {execution.id}"


def load_run(store: metadata_store.MetadataStore, run_id: str = "latest") -> PipelineRun:
  ids = run_ids(store)
  if not ids:
    raise LookupError("no runs recorded in this metadata store yet")
  if run_id == "latest":
    run_id = ids[-1]
  context = store.get_context_by_type_and_name("pipeline_run", run_id)
  if context is None:
    raise LookupError(f"no run {run_id!r}; known runs: {', '.join(ids[-5:])}")
  nodes = {}
  for execution in store.get_executions_by_context(context.id):
    node_id = node_name(store, execution)
    outputs: dict[str, list] = {}
    events = [e for e in store.get_events_by_execution_ids([execution.id])
              if e.type in (metadata_store_pb2.Event.OUTPUT,
                            metadata_store_pb2.Event.DECLARED_OUTPUT)]
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    for event in events:
      key = event.path.steps[0].key if event.path.steps else "output"
      outputs.setdefault(key, []).append(artifacts[event.artifact_id])
    seconds = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000
    nodes[node_id] = NodeRun(node_id, state_name(execution), seconds, outputs)
  return PipelineRun(run_id, nodes)


def int_property(artifact, name: str, default: int = 0) -> int:
  value = artifact.custom_properties.get(name)
  return value.int_value if value is not None else default
