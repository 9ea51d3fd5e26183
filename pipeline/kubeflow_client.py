"""Submits and schedules compiled packages on Kubeflow Pipelines (KFP 2.x, API v2beta1).

Thin wrappers around `kfp.Client` that turn every server or network failure into a
one-line KubeflowError, check what can be checked locally before sending anything,
and keep the token out of everything they print.

Every run and recurring run carries its pipeline root in its runtime config: the
backend never reads a package's `defaultPipelineRoot`. Its root DAG driver takes
the run's `runtime_config.pipeline_root`, else the `kfp-launcher` ConfigMap's
`defaultPipelineRoot`, else `minio://mlpipeline/v2/artifacts`
(backend/src/v2/driver/driver.go, RootDAG; backend/src/v2/config/env.go), a
scheme TensorFlow cannot write.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import io
import json
import os
import time
import urllib.error
import urllib.request
import warnings
from typing import Any, Callable, Iterator

import yaml

# kfp's projected token (audience pipelines.kubeflow.org, the one KFP's multi-user auth
# accepts), as kfp.client.KF_PIPELINES_SA_TOKEN_PATH; the plain service-account token
# at /var/run/secrets/kubernetes.io/serviceaccount/token has the wrong audience.
SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
SA_TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
API = "/apis/v2beta1"
HEALTH_TIMEOUT_S = 3
# The server refuses a recurring run outside this range.
MAX_CONCURRENCY = (1, 10)
_DONE = ("SUCCEEDED", "SKIPPED")
_FAILED = ("FAILED", "CANCELED")
_POLL_RETRIES = 3

Echo = Callable[[str], Any]


class KubeflowError(Exception):
  """A one-line message for the user (no traceback is shown)."""

  def __init__(self, message: str, status: int | None = None):
    super().__init__(" ".join(message.split()))
    self.status = status  # the HTTP status, when the server answered


def validate_cron(expression: str) -> str:
  """KFP reads six fields, seconds first; five would be accepted and mean something else."""
  fields = expression.split()
  if len(fields) == 5:
    raise KubeflowError(f'cron "{expression}" has 5 fields; Kubeflow reads six, seconds first: '
                        f'use "0 {" ".join(fields)}"')
  if len(fields) != 6:
    raise KubeflowError(f'cron "{expression}" has {len(fields)} fields; Kubeflow reads six, '
                        'seconds first, e.g. "0 0 3 * * *" (daily at 03:00)')
  return " ".join(fields)


def read_token(token: str | None, token_file: str = SA_TOKEN_PATH) -> str | None:
  """--token wins; else the in-cluster token file (or KF_PIPELINES_SA_TOKEN_PATH, as kfp reads)."""
  if token and token.strip():
    return token.strip()
  if token_file == SA_TOKEN_PATH:
    token_file = os.environ.get(SA_TOKEN_ENV) or token_file
  try:
    with open(token_file) as f:
      return f.read().strip() or None
  except FileNotFoundError:
    return None
  except OSError as e:
    raise KubeflowError(f"cannot read the token file {token_file}: {e.strerror}") from None


@dataclasses.dataclass
class Connection:
  host: str              # e.g. http://ml-pipeline.kubeflow:8888
  token: str | None = dataclasses.field(default=None, repr=False)  # never in a log
  namespace: str | None = None

  def __post_init__(self):
    self.host = self.host.rstrip("/")

  def ui_url(self, kind: str, id: str) -> str:
    page = {"runs": "runs", "recurringruns": "recurringrun"}[kind]
    return f"{self.host}/#/{page}/details/{id}"


def _one_line(text: str, conn: Connection | None = None, limit: int = 300) -> str:
  text = " ".join(str(text).split())
  if conn and conn.token:
    text = text.replace(conn.token, "***")
  return text if len(text) <= limit else text[:limit] + "..."


def _server_message(body: Any) -> str:
  """grpc-gateway answers {"error", "code", "message"}; proxies answer text or HTML."""
  if isinstance(body, bytes):
    body = body.decode("utf-8", "replace")
  try:
    parsed = json.loads(body or "")
    return str(parsed.get("message") or parsed.get("error") or body)
  except (ValueError, AttributeError):
    return str(body or "")


@contextlib.contextmanager
def _errors(conn: Connection, what: str) -> Iterator[None]:
  """Turns kfp's exceptions into one line, and hides what kfp prints (links, warnings)."""
  import kfp_server_api
  import urllib3
  try:
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
      warnings.simplefilter("ignore")
      yield
  except kfp_server_api.ApiException as e:
    if not e.status:  # kfp_server_api reports SSL and protocol errors as status 0
      raise KubeflowError(_one_line(f"Kubeflow Pipelines at {conn.host} failed during {what}: "
                                    f"{e.reason}", conn)) from e
    detail = _server_message(e.body)
    raise KubeflowError(_one_line(f"Kubeflow Pipelines refused {what}: HTTP {e.status} "
                                  f"{e.reason}" + (f": {detail}" if detail else ""), conn),
                        status=e.status) from e
  except urllib3.exceptions.HTTPError as e:
    reason = getattr(e, "reason", None) or e
    raise KubeflowError(_one_line(f"Kubeflow Pipelines at {conn.host} is not reachable "
                                  f"({what}): {reason}", conn)) from e
  except (ValueError, TimeoutError) as e:  # kfp's own checks, e.g. two pipelines with one name
    raise KubeflowError(_one_line(f"Kubeflow Pipelines: {e}", conn)) from e


class _NoRedirect(urllib.request.HTTPRedirectHandler):
  # A redirect is usually a login page; following it would send the token along.
  def redirect_request(self, *args, **kwargs):
    return None


def _check_reachable(conn: Connection) -> None:
  """One quick GET of healthz: kfp.Client would retry it 5 times, 5 s apart."""
  if not conn.host.startswith(("http://", "https://")):
    raise KubeflowError(f'host "{conn.host}" needs http:// or https://')
  headers = {"Authorization": f"Bearer {conn.token}"} if conn.token else {}
  request = urllib.request.Request(f"{conn.host}{API}/healthz", headers=headers)
  opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)
  try:
    with opener.open(request, timeout=HEALTH_TIMEOUT_S) as response:
      json.loads(response.read())
  except urllib.error.HTTPError as e:
    detail = _server_message(e.read())
    hint = " (a login redirect? pass --token)" if 300 <= e.code < 400 else ""
    raise KubeflowError(_one_line(
        f"Kubeflow Pipelines at {conn.host} failed its health check: HTTP {e.code} {e.reason}"
        + hint + (f": {detail}" if detail else ""), conn), status=e.code) from None
  except (urllib.error.URLError, OSError) as e:
    reason = getattr(e, "reason", None) or e
    raise KubeflowError(_one_line(
        f"Kubeflow Pipelines at {conn.host} is not reachable: {reason}", conn)) from None
  except ValueError:
    raise KubeflowError(f"{conn.host} does not look like the Kubeflow Pipelines API: its health "
                        "check did not answer JSON") from None


def client(conn: Connection) -> "kfp.Client":  # noqa: F821
  """A kfp.Client, once the host has answered a quick health check."""
  _check_reachable(conn)
  import kfp
  with _errors(conn, "the connection"):
    # kfp treats namespace="kubeflow" as "not given" and then asks healthz for multi-user.
    return kfp.Client(host=conn.host, existing_token=conn.token,
                      namespace=conn.namespace or "kubeflow")


def _read_spec(package_path: str) -> dict:
  if not package_path.endswith((".yaml", ".yml")):
    raise KubeflowError(f"{package_path}: Kubeflow takes a compiled .yaml package")
  try:
    with open(package_path) as f:
      spec = next(yaml.safe_load_all(f), None)  # a second document is the platform spec
  except (OSError, yaml.YAMLError) as e:
    raise KubeflowError(_one_line(f"cannot read {package_path}: {e}")) from None
  if not isinstance(spec, dict) or "root" not in spec:
    raise KubeflowError(f"{package_path} is not a compiled KFP package")
  return spec


def _convert(name: str, value: Any, kind: str) -> Any:
  """--param values arrive as text; the server wants the type the pipeline declares."""
  if not isinstance(value, str) or kind == "STRING":
    return value
  try:
    if kind == "NUMBER_INTEGER":
      return int(value)
    if kind == "NUMBER_DOUBLE":
      return float(value)
    if kind == "BOOLEAN":
      return {"true": True, "false": False}[value.lower()]
    if kind in ("LIST", "STRUCT"):
      parsed = json.loads(value)
      if isinstance(parsed, list if kind == "LIST" else dict):
        return parsed
      raise ValueError(kind)
    return value
  except (ValueError, KeyError):
    raise KubeflowError(f"parameter {name} is {kind.lower()}, got {value!r}") from None


def _typed_params(spec: dict, params: dict[str, Any] | None) -> dict[str, Any]:
  """Unknown and missing parameters are caught here rather than by a failed run."""
  declared = spec["root"].get("inputDefinitions", {}).get("parameters", {})
  params = params or {}
  unknown = sorted(set(params) - set(declared))
  if unknown:
    raise KubeflowError(f"the pipeline has no parameter {', '.join(unknown)}; it has: "
                        f"{', '.join(sorted(declared)) or 'none'}")
  missing = sorted(k for k, d in declared.items()
                   if k not in params and "defaultValue" not in d and not d.get("isOptional"))
  if missing:
    raise KubeflowError(f"the pipeline needs parameter {', '.join(missing)} (--param KEY=VALUE)")
  return {k: _convert(k, v, declared[k].get("parameterType", "STRING")) for k, v in params.items()}


def _pipeline_root(spec: dict, pipeline_root: str | None) -> str | None:
  """The run's root: the one given, else the package's defaultPipelineRoot."""
  root = (pipeline_root or "").strip() or spec.get("defaultPipelineRoot") or None
  if root is not None and "://" not in root:
    raise KubeflowError(f"pipeline root {root!r} is not object storage: the backend "
                        "needs a URI such as s3://bucket/path or gs://bucket/path")
  return root


def _runtime_config(typed: dict[str, Any], root: str | None) -> dict:
  """The runtime_config of the v2beta1 REST API, as kfp.Client sends it."""
  return {"parameters": typed, **({"pipeline_root": root} if root else {})}


def _stamp() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")


def _version_name(pipeline_name: str, package_path: str) -> str:
  """Named by content: the server refuses a repeated name; the same package reuses its version."""
  with open(package_path, "rb") as f:
    return f"{pipeline_name}-{hashlib.sha256(f.read()).hexdigest()[:12]}"


def _name_filter(name: str) -> str:
  return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name",
                                     "string_value": name}]})


def _request(method: str, path: str, fields: dict, only_if: str = "") -> dict:
  return {"method": method, "path": path, "fields": fields, "only_if": only_if}


def _planned_upload(conn: Connection, pipeline_name: str, version_name: str,
                    package_path: str) -> list[dict]:
  return [
      _request("GET", f"{API}/healthz", {"auth": "bearer token" if conn.token else "none"}),
      _request("GET", f"{API}/pipelines", {"filter": f"display_name = {pipeline_name}"}),
      _request("GET", f"{API}/pipelines/<id>/versions",
               {"filter": f"display_name = {version_name}"}, "the pipeline exists"),
      _request("POST", f"{API}/pipelines/upload_version",
               {"name": version_name, "pipelineid": f"<id of {pipeline_name}>",
                "uploadfile": package_path}, "the pipeline exists without this version"),
      _request("POST", f"{API}/pipelines/upload",
               {"name": pipeline_name, "uploadfile": package_path}, "the pipeline is new"),
      _request("GET", f"{API}/pipelines/<id>/versions", {"sort_by": "created_at desc"},
               "the pipeline is new"),
  ]


def _planned_experiment(conn: Connection, experiment: str) -> list[dict]:
  namespace = {"namespace": conn.namespace} if conn.namespace else {}
  return [
      _request("GET", f"{API}/experiments",
               {"filter": f"display_name = {experiment}", **namespace}),
      _request("POST", f"{API}/experiments", {"display_name": experiment, **namespace},
               "the experiment is new"),
  ]


def _dry_run(conn: Connection, requests: list[dict], echo: Echo) -> dict:
  echo(f"Dry run: nothing is sent to {conn.host}. Would send:")
  for r in requests:
    when = f"  (only if {r['only_if']})" if r["only_if"] else ""
    echo(f"{r['method']} {r['path']} {json.dumps(r['fields'], sort_keys=True)}{when}")
  return {"dry_run": True, "requests": requests}


def _upload(kfp_client, conn: Connection, package_path: str, pipeline_name: str,
            version_name: str, echo: Echo) -> tuple[str, str]:
  """The package as a version of `pipeline_name`, uploaded unless that version exists.

  The first upload creates the pipeline, and the server names its first version after it.
  """
  with _errors(conn, "the pipeline lookup"):
    pipeline_id = kfp_client.get_pipeline_id(pipeline_name)
  with _errors(conn, "the upload"):  # (it hides stdout: echo after it)
    if pipeline_id is None:
      pipeline_id = kfp_client.upload_pipeline(package_path, pipeline_name).pipeline_id
      versions = kfp_client.list_pipeline_versions(
          pipeline_id, page_size=1, sort_by="created_at desc").pipeline_versions or []
      news = f"Uploaded new pipeline {pipeline_name}"
    else:
      versions = kfp_client.list_pipeline_versions(
          pipeline_id, filter=_name_filter(version_name)).pipeline_versions or []
      news = f"Pipeline {pipeline_name} already has this package: {version_name}"
      if not versions:
        versions = [kfp_client.upload_pipeline_version(package_path, version_name,
                                                       pipeline_id=pipeline_id)]
        news = f"Uploaded {version_name} of pipeline {pipeline_name}"
  if not versions:
    raise KubeflowError(f"Kubeflow Pipelines made pipeline {pipeline_name} without a version")
  echo(news)
  return pipeline_id, versions[0].pipeline_version_id


def _experiment_id(kfp_client, conn: Connection, experiment: str) -> str:
  with _errors(conn, f"the experiment {experiment}"):
    return kfp_client.create_experiment(experiment, namespace=conn.namespace).experiment_id


def _publish(conn: Connection, package_path: str, pipeline_name: str, version_name: str,
             experiment: str, echo: Echo):
  """The client, and the ids of the uploaded version and of the experiment to run it in."""
  kfp_client = client(conn)
  pipeline_id, version_id = _upload(kfp_client, conn, package_path, pipeline_name,
                                    version_name, echo)
  return kfp_client, pipeline_id, version_id, _experiment_id(kfp_client, conn, experiment)


def submit(conn: Connection, package_path: str, pipeline_name: str, experiment: str,
           params: dict[str, str], run_name: str | None = None,
           pipeline_root: str | None = None, dry_run: bool = False,
           echo: Echo = print) -> dict:
  """Uploads the package as a new version and runs it once in `experiment`.

  The run's pipeline root is `pipeline_root`, else the package's defaultPipelineRoot.
  """
  spec = _read_spec(package_path)
  typed = _typed_params(spec, params)
  root = _pipeline_root(spec, pipeline_root)
  version_name = _version_name(pipeline_name, package_path)
  run_name = run_name or f"{pipeline_name} {_stamp()}"
  if dry_run:
    run = {"display_name": run_name, "experiment_id": f"<id of {experiment}>",
           "pipeline_version_reference": {"pipeline_id": "<id>", "pipeline_version_id": "<id>"},
           "runtime_config": _runtime_config(typed, root)}
    return _dry_run(conn, _planned_upload(conn, pipeline_name, version_name, package_path)
                    + _planned_experiment(conn, experiment)
                    + [_request("POST", f"{API}/runs", run)], echo)
  kfp_client, pipeline_id, version_id, experiment_id = _publish(
      conn, package_path, pipeline_name, version_name, experiment, echo)
  with _errors(conn, "the run"):
    run = kfp_client.run_pipeline(experiment_id, run_name, params=typed,
                                  pipeline_id=pipeline_id, version_id=version_id,
                                  pipeline_root=root)
  return {"run_id": run.run_id, "url": conn.ui_url("runs", run.run_id), "pipeline_root": root,
          "pipeline_id": pipeline_id, "version_id": version_id, "experiment_id": experiment_id}


def wait(conn: Connection, run_id: str, timeout_s: float, echo: Echo = print,
         poll_s: float = 10) -> str:
  """Follows a run to its end; a failed, canceled or overdue run raises KubeflowError."""
  kfp_client = client(conn)
  deadline = time.monotonic() + timeout_s
  state, misses = None, 0
  while True:
    try:
      with _errors(conn, f"the status of run {run_id}"):
        run = kfp_client.get_run(run_id)
      misses = 0
    except KubeflowError as e:
      # A long wait outlives gateway restarts; a 4xx will not heal.
      misses += 1
      if (e.status or 500) < 500 or misses >= _POLL_RETRIES:
        raise
      echo(f"Run {run_id}: {e} (retrying)")
      run = None
    if run is not None and run.state != state:
      state = run.state
      echo(f"Run {run_id}: {state}")
    if state in _DONE:
      return state
    if state in _FAILED:
      detail = run.error.message if run.error and run.error.message else ""
      raise KubeflowError(_one_line(f"run {run_id} {state}" + (f": {detail}" if detail else "")
                                    + f" ({conn.ui_url('runs', run_id)})", conn))
    if time.monotonic() >= deadline:
      raise KubeflowError(f"run {run_id} is still {state or 'unknown'} after {timeout_s:g} s; "
                          f"it goes on in Kubeflow: {conn.ui_url('runs', run_id)}")
    time.sleep(max(0.0, min(poll_s, deadline - time.monotonic())))


def schedule(conn: Connection, package_path: str, pipeline_name: str, experiment: str, cron: str,
             max_concurrency: int = 1, no_catchup: bool = True,
             params: dict[str, str] | None = None, name: str | None = None,
             pipeline_root: str | None = None, dry_run: bool = False,
             echo: Echo = print) -> dict:
  """Uploads the package as a new version and runs it on `cron` (six fields).

  `no_catchup` (the default): after a pause, one run instead of one per missed slot;
  the pipeline root is as for submit.
  """
  cron = validate_cron(cron)
  low, high = MAX_CONCURRENCY
  if not low <= max_concurrency <= high:
    raise KubeflowError(f"max concurrency must be {low} to {high}, got {max_concurrency}")
  spec = _read_spec(package_path)
  typed = _typed_params(spec, params)
  root = _pipeline_root(spec, pipeline_root)
  version_name = _version_name(pipeline_name, package_path)
  name = name or f"{pipeline_name} ({cron})"
  if dry_run:
    body = {"display_name": name, "experiment_id": f"<id of {experiment}>", "mode": "ENABLE",
            "trigger": {"cron_schedule": {"cron": cron}}, "max_concurrency": max_concurrency,
            "no_catchup": no_catchup,
            "pipeline_version_reference": {"pipeline_id": "<id>", "pipeline_version_id": "<id>"},
            "runtime_config": _runtime_config(typed, root)}
    return _dry_run(conn, _planned_upload(conn, pipeline_name, version_name, package_path)
                    + _planned_experiment(conn, experiment)
                    + [_request("POST", f"{API}/recurringruns", body)], echo)
  kfp_client, pipeline_id, version_id, experiment_id = _publish(
      conn, package_path, pipeline_name, version_name, experiment, echo)
  with _errors(conn, "the schedule"):
    recurring = kfp_client.create_recurring_run(
        experiment_id, name, cron_expression=cron, max_concurrency=max_concurrency,
        no_catchup=no_catchup, params=typed, pipeline_id=pipeline_id, version_id=version_id,
        enabled=True, pipeline_root=root)
  rid = recurring.recurring_run_id
  return {"recurring_run_id": rid, "url": conn.ui_url("recurringruns", rid), "cron": cron,
          "pipeline_root": root,
          "pipeline_id": pipeline_id, "version_id": version_id, "experiment_id": experiment_id}


def _row(recurring) -> dict:
  trigger = recurring.trigger
  if trigger and trigger.cron_schedule:
    cron = trigger.cron_schedule.cron
  elif trigger and trigger.periodic_schedule:
    cron = f"every {trigger.periodic_schedule.interval_second} s"
  else:
    cron = ""
  return {"id": recurring.recurring_run_id, "name": recurring.display_name, "cron": cron,
          "enabled": recurring.mode == "ENABLE", "mode": recurring.mode,
          "max_concurrency": int(recurring.max_concurrency or 1),
          "experiment_id": recurring.experiment_id}


def list_schedules(conn: Connection, experiment: str | None = None) -> list[dict]:
  """All recurring runs (of one experiment, if named), page by page."""
  kfp_client = client(conn)
  scope: dict[str, Any] = {"namespace": conn.namespace}
  if experiment:
    with _errors(conn, "the experiment lookup"):
      try:
        found = kfp_client.get_experiment(experiment_name=experiment, namespace=conn.namespace)
      except ValueError as e:
        if str(e).startswith("No experiment is found"):
          raise KubeflowError(f"no experiment named {experiment}") from None
        raise
    scope = {"experiment_id": found.experiment_id}
  rows, token = [], ""
  while True:
    with _errors(conn, "the schedule list"):
      page = kfp_client.list_recurring_runs(page_token=token, page_size=100, **scope)
    rows += [_row(r) for r in page.recurring_runs or []]
    token = page.next_page_token
    if not token:
      return rows


def change_schedule(conn: Connection, recurring_run_id: str, action: str) -> None:
  methods = {"enable": "enable_recurring_run", "disable": "disable_recurring_run",
             "delete": "delete_recurring_run"}
  if action not in methods:
    raise KubeflowError(f"unknown schedule action {action!r}: use enable, disable or delete")
  kfp_client = client(conn)
  with _errors(conn, f"to {action} schedule {recurring_run_id}"):
    getattr(kfp_client, methods[action])(recurring_run_id)
