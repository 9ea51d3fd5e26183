"""An in-memory stub of the Kubeflow Pipelines v2beta1 REST API, for pipeline.kubeflow_client.

Answers in the JSON shapes kfp_server_api deserialises (int64 fields as strings, as
grpc-gateway writes them), records every request, and can be told to fail a path or
to end runs in a given state.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import http.server
import itertools
import json
import re
import threading
import urllib.parse
from typing import Any, Iterator

API = "/apis/v2beta1"
# backend/src/v2/config/env.go: the root of a run that names none, without a ConfigMap.
DEFAULT_PIPELINE_ROOT = "minio://mlpipeline/v2/artifacts"
_GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 500: 13, 503: 14}


@dataclasses.dataclass
class Request:
  method: str
  path: str
  query: dict[str, str]
  headers: dict[str, str]       # names lower-cased
  body: Any = None              # parsed JSON
  file: bytes | None = None     # the uploaded package (multipart field "uploadfile")
  filename: str | None = None


class _Fail(Exception):
  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _by_name(items, query: dict[str, str]) -> list[dict]:
  """The EQUALS display_name filter that kfp's get_pipeline_id / get_experiment send."""
  items = list(items)
  for p in json.loads(query.get("filter") or "{}").get("predicates", []):
    value = p.get("string_value", p.get("stringValue"))
    items = [i for i in items if i.get(p["key"]) == value]
  return items


def _upload(content_type: str, data: bytes) -> tuple[str | None, bytes | None]:
  boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
  for part in data.split(b"--" + boundary):
    head, _, content = part.partition(b"\r\n\r\n")
    if b'name="uploadfile"' in head:
      filename = re.search(rb'filename="([^"]*)"', head)
      return filename and filename.group(1).decode(), content[:-2]  # CRLF before the boundary
  return None, None


class KfpStub:
  def __init__(self):
    self.requests: list[Request] = []
    self.pipelines: dict[str, dict] = {}
    self.versions: dict[str, dict] = {}
    self.packages: dict[str, bytes] = {}   # version id -> uploaded bytes
    self.experiments: dict[str, dict] = {}
    self.runs: dict[str, dict] = {}
    self.recurring_runs: dict[str, dict] = {}
    self.polls: dict[str, int] = {}         # run id -> GETs so far
    self.multi_user = False
    # The kfp-launcher ConfigMap's defaultPipelineRoot in the runs' namespace, if any.
    self.launcher_pipeline_root: str | None = None
    # Runs are RUNNING for this many GETs, then end in this state.
    self.run_outcome: tuple[str, int] = ("SUCCEEDED", 1)
    self.url = ""
    self._failures: dict[tuple[str | None, str], list] = {}
    self._ids = itertools.count(1)
    self._lock = threading.Lock()
    self._routes = [
        ("GET", r"/healthz", lambda q, b: {"multi_user": self.multi_user}),
        ("POST", r"/pipelines/upload", self._upload_pipeline),
        ("POST", r"/pipelines/upload_version", self._upload_version),
        ("GET", r"/pipelines", lambda q, b: self._list("pipelines", self.pipelines.values(), q)),
        ("GET", r"/pipelines/([^/]+)/versions", self._list_versions),
        ("GET", r"/pipelines/([^/]+)", lambda q, b, i: self._get(self.pipelines, i)),
        ("POST", r"/experiments", self._create_experiment),
        ("GET", r"/experiments", lambda q, b: self._list(
            "experiments", self._in_namespace(self.experiments.values(), q), q)),
        ("GET", r"/experiments/([^/:]+)", lambda q, b, i: self._get(self.experiments, i)),
        ("POST", r"/runs", self._create_run),
        ("GET", r"/runs/([^/:]+)", self._get_run),
        ("POST", r"/recurringruns", self._create_recurring_run),
        ("GET", r"/recurringruns", self._list_recurring_runs),
        ("GET", r"/recurringruns/([^/:]+)", lambda q, b, i: self._get(self.recurring_runs, i)),
        ("POST", r"/recurringruns/([^/:]+):(enable|disable)", self._set_mode),
        ("DELETE", r"/recurringruns/([^/:]+)", self._delete_recurring_run),
    ]

  # What tests use.

  def fail(self, path: str, status: int, message: str = "stub failure",
           method: str | None = None, times: int | None = None) -> None:
    """Answers `path` (exact: /apis/v2beta1/runs) with an HTTP error, `times` times or always."""
    self._failures[(method, path)] = [status, message, times]

  def find(self, method: str, path: str) -> list[Request]:
    return [r for r in self.requests if r.method == method and r.path == path]

  def calls(self) -> list[str]:
    return [f"{r.method} {r.path}" for r in self.requests]

  def pipeline_root(self, body: dict) -> str:
    """The root a run or recurring run created with `body` would write to: its
    runtime_config.pipeline_root, else the ConfigMap's, else the built-in default
    (backend/src/v2/driver/driver.go RootDAG); never the package's defaultPipelineRoot."""
    return ((body.get("runtime_config") or {}).get("pipeline_root")
            or self.launcher_pipeline_root or DEFAULT_PIPELINE_ROOT)

  # The API.

  def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> Any:
    for key in ((method, path), (None, path)):
      failure = self._failures.get(key)
      if failure and failure[2] != 0:
        if failure[2]:
          failure[2] -= 1
        raise _Fail(failure[0], failure[1])
    for route_method, pattern, function in self._routes:
      match = re.fullmatch(API + pattern, path)
      if match and route_method == method:
        return function(query, body, *match.groups())
    raise _Fail(404, f"Not Found: {method} {path}")

  def _id(self, kind: str) -> str:
    return f"{kind}-{next(self._ids)}"

  def _get(self, table: dict, id: str) -> dict:
    if id not in table:
      raise _Fail(404, f"ResourceNotFoundError: {id} not found")
    return table[id]

  def _list(self, field: str, items, query: dict[str, str]) -> dict:
    # grpc-gateway leaves out an empty list; kfp treats the missing field as None.
    found = _by_name(items, query)
    return {field: found, "total_size": len(found)} if found else {"total_size": 0}

  def _in_namespace(self, items, query: dict[str, str]) -> list[dict]:
    namespace = query.get("namespace")
    return [i for i in items if not namespace or i.get("namespace") == namespace]

  def _new_version(self, pipeline_id: str, name: str, package: bytes) -> dict:
    if any(v["pipeline_id"] == pipeline_id and v["display_name"] == name
           for v in self.versions.values()):
      raise _Fail(409, f"Already exist error: pipeline version {name} already exists")
    version = {"pipeline_id": pipeline_id, "pipeline_version_id": self._id("version"),
               "display_name": name, "created_at": _now(),
               "package_url": {"pipeline_url": ""}}
    self.versions[version["pipeline_version_id"]] = version
    self.packages[version["pipeline_version_id"]] = package
    return version

  def _upload_pipeline(self, query: dict[str, str], body: dict) -> dict:
    name = query.get("name") or body["filename"]
    if any(p["display_name"] == name for p in self.pipelines.values()):
      raise _Fail(409, f"Already exist error: pipeline {name} already exists")
    pipeline = {"pipeline_id": self._id("pipeline"), "display_name": name,
                "description": query.get("description", ""), "created_at": _now()}
    if query.get("namespace"):
      pipeline["namespace"] = query["namespace"]
    self.pipelines[pipeline["pipeline_id"]] = pipeline
    # The real server also creates the first version, named as the pipeline.
    self._new_version(pipeline["pipeline_id"], name, body["file"])
    return pipeline

  def _upload_version(self, query: dict[str, str], body: dict) -> dict:
    self._get(self.pipelines, query.get("pipelineid", ""))
    return self._new_version(query["pipelineid"], query.get("name") or body["filename"],
                             body["file"])

  def _list_versions(self, query: dict[str, str], body: Any, pipeline_id: str) -> dict:
    self._get(self.pipelines, pipeline_id)
    found = [v for v in self.versions.values() if v["pipeline_id"] == pipeline_id]
    if "desc" in query.get("sort_by", ""):
      found.reverse()
    return self._list("pipeline_versions", found, query)

  def _create_experiment(self, query: dict[str, str], body: dict) -> dict:
    experiment = {**body, "experiment_id": self._id("experiment"), "created_at": _now(),
                  "storage_state": "AVAILABLE"}
    self.experiments[experiment["experiment_id"]] = experiment
    return experiment

  def _check_refs(self, body: dict) -> None:
    self._get(self.experiments, body.get("experiment_id", ""))
    reference = body.get("pipeline_version_reference") or {}
    self._get(self.pipelines, reference.get("pipeline_id", ""))
    self._get(self.versions, reference.get("pipeline_version_id", ""))

  def _create_run(self, query: dict[str, str], body: dict) -> dict:
    self._check_refs(body)
    run = {**body, "run_id": self._id("run"), "state": "PENDING", "created_at": _now(),
           "storage_state": "AVAILABLE"}
    self.runs[run["run_id"]] = run
    self.polls[run["run_id"]] = 0
    return run

  def _get_run(self, query: dict[str, str], body: Any, run_id: str) -> dict:
    run = self._get(self.runs, run_id)
    self.polls[run_id] += 1
    final, polls = self.run_outcome
    if self.polls[run_id] > polls:
      run.update(state=final, finished_at=_now())
      if final == "FAILED":
        run["error"] = {"code": 2, "message": "task train exited with code 1"}
    else:
      run["state"] = "RUNNING"
    return run

  def _create_recurring_run(self, query: dict[str, str], body: dict) -> dict:
    self._check_refs(body)
    recurring = {**body, "recurring_run_id": self._id("recurring"), "created_at": _now(),
                 "updated_at": _now(), "max_concurrency": str(body.get("max_concurrency", 1)),
                 "mode": body.get("mode", "ENABLE")}
    recurring["status"] = "ENABLED" if recurring["mode"] == "ENABLE" else "DISABLED"
    self.recurring_runs[recurring["recurring_run_id"]] = recurring
    return recurring

  def _list_recurring_runs(self, query: dict[str, str], body: Any) -> dict:
    found = [r for r in self._in_namespace(self.recurring_runs.values(), query)
             if r.get("experiment_id") == query.get("experiment_id", r.get("experiment_id"))]
    # The proto field is literally recurringRuns, so the JSON key is camel case.
    return {"recurringRuns": found, "total_size": len(found)} if found else {"total_size": 0}

  def _set_mode(self, query: dict[str, str], body: Any, id: str, action: str) -> dict:
    recurring = self._get(self.recurring_runs, id)
    enable = action == "enable"
    recurring.update(mode="ENABLE" if enable else "DISABLE",
                     status="ENABLED" if enable else "DISABLED", updated_at=_now())
    return {}

  def _delete_recurring_run(self, query: dict[str, str], body: Any, id: str) -> dict:
    self._get(self.recurring_runs, id)
    del self.recurring_runs[id]
    return {}


class _Handler(http.server.BaseHTTPRequestHandler):
  server: Any

  def _serve(self):
    stub: KfpStub = self.server.stub
    url = urllib.parse.urlsplit(self.path)
    query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
    data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
    request = Request(self.command, url.path, query,
                      {k.lower(): v for k, v in self.headers.items()})
    content_type = self.headers.get("Content-Type", "")
    if content_type.startswith("multipart/form-data"):
      request.filename, request.file = _upload(content_type, data)
      body = {"filename": request.filename, "file": request.file}
    else:
      body = request.body = json.loads(data) if data else None
    with stub._lock:
      stub.requests.append(request)
      try:
        status, answer = 200, stub.handle(self.command, url.path, query, body)
      except _Fail as e:
        message = str(e)
        status = e.status
        answer = {"error": message, "code": _GRPC_CODES.get(status, 2), "message": message,
                  "details": []}
    payload = json.dumps(answer).encode()
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(payload)))
    self.end_headers()
    self.wfile.write(payload)

  do_GET = do_POST = do_DELETE = _serve

  def log_message(self, format, *args):  # quiet test output
    pass


@contextlib.contextmanager
def running() -> Iterator[KfpStub]:
  """A KfpStub serving on 127.0.0.1 at a free port; stub.url is its host."""
  stub = KfpStub()
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
  server.daemon_threads = True
  server.stub = stub
  stub.url = f"http://127.0.0.1:{server.server_address[1]}"
  thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
  thread.start()
  try:
    yield stub
  finally:
    server.shutdown()
    server.server_close()
    thread.join()
