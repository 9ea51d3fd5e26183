"""`finetune kubeflow`: compile, submit and schedule the pipeline on Kubeflow Pipelines."""
from __future__ import annotations

import os
import tempfile

import click
import yaml

from pipeline.cli.options import fail, parse_sets, run_options
from pipeline.config import ConfigError, load_config, with_overrides


@click.group()
def kubeflow():
  """Run the pipeline on Kubeflow Pipelines (see deploy/kubeflow/README.md)."""


def _compile(config, image: str | None, pipeline_root: str | None, output: str) -> dict:
  from pipeline.kubeflow_runner import compile_pipeline
  overrides = {k: v for k, v in (("kubeflow.image", image), ("output_dir", pipeline_root))
               if v is not None}
  try:
    return compile_pipeline(with_overrides(config, overrides), output)
  except ConfigError as e:
    fail(str(e))


_ROOT_HELP = ("Object storage for artifacts and served models, e.g. "
              "s3://mlpipeline/finetune or gs://bucket/finetune.")


def _compile_options(command, root_help: str = _ROOT_HELP):
  for option in reversed([
      click.option("--image", help="The project's image, e.g. registry.example.com/finetune:1.0."),
      click.option("--pipeline-root", help=root_help),
  ]):
    command = option(command)
  return command


@kubeflow.command("compile")
@run_options
@_compile_options
@click.option("--output", "package", default="pipeline.yaml", show_default=True,
              help="The package to write (.yaml).")
def compile_command(config, image, pipeline_root, package, console):
  """Compile the pipeline into a KFP v2 package (every `run` option applies)."""
  spec = _compile(config, image, pipeline_root, package)
  tasks = spec["deploymentSpec"]["executors"]  # one per task, the sub-DAG's included
  console.echo(f"Compiled {spec['pipelineInfo']['name']}: {len(tasks)} tasks, schema "
             f"{spec['schemaVersion']} -> {package}")


def _connection(host, token, namespace):
  from pipeline.kubeflow_client import Connection, read_token
  return Connection(host=host, token=read_token(token), namespace=namespace)


def _package(source: str, config_overrides: dict, image, pipeline_root,
             workdir: str) -> tuple[str, str | None]:
  """(package, the run's pipeline root): `source` itself, run in `pipeline_root` when
  given, or compiled on the fly from a config file, run in the root it was compiled for.

  Either way a root is sent with the run: the backend never reads the package's own.
  """
  try:
    with open(source) as f:
      document = next(yaml.safe_load_all(f), None)
  except (OSError, yaml.YAMLError) as e:
    fail(f"cannot read {source}: {e}")
  if isinstance(document, dict) and "deploymentSpec" in document:
    return source, pipeline_root
  try:
    config = load_config(source, config_overrides)
  except ConfigError as e:
    fail(f"{source} is neither a compiled package nor a valid config: {e}")
  package = os.path.join(workdir, "pipeline.yaml")
  _compile(config, image, pipeline_root, package)
  return package, None  # the compiled package's defaultPipelineRoot


def _pipeline_name(package: str) -> str:
  from pipeline.kubeflow_runner import read_package
  return read_package(package)[0]["pipelineInfo"]["name"]


def _params(values: tuple[str, ...]) -> dict[str, str]:
  params = {}
  for item in values:
    key, sep, value = item.partition("=")
    if not sep or not key:
      fail(f"--param expects KEY=VALUE, got {item!r}")
    params[key] = value
  return params


def _kubeflow_options(command):
  for option in reversed([
      click.option("--host", required=True,
                   help="KFP API endpoint, e.g. http://ml-pipeline.kubeflow:8888."),
      click.option("--token", help="Bearer token (default: the in-cluster service-account "
                                   "token, when present)."),
      click.option("--namespace", help="Kubeflow profile namespace (multi-user installs)."),
      click.option("--experiment", default="finetune", show_default=True),
      click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
                   help="Pipeline parameter (repeatable)."),
      click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                   help="With a config file: any setting, as for `finetune run`."),
      click.option("--dry-run", is_flag=True, help="Print the requests; send nothing."),
  ]):
    command = option(command)
  return _compile_options(command, root_help=(
      "With a config file: " + _ROOT_HELP[0].lower() + _ROOT_HELP[1:] + " With a compiled "
      "package: the run's pipeline root (where its artifacts go) instead of the package's "
      "defaultPipelineRoot; served models stay where the package says."))


def _call(function, *args, **kwargs):
  from pipeline.kubeflow_client import KubeflowError
  try:
    return function(*args, **kwargs)
  except KubeflowError as e:
    fail(str(e), code=1)


@kubeflow.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@_kubeflow_options
@click.option("--wait", is_flag=True, help="Follow the run; exit non-zero if it fails.")
@click.option("--timeout", default=6 * 3600, show_default=True, help="Seconds --wait waits.")
def submit(source, host, token, namespace, experiment, params, sets, dry_run, image,
           pipeline_root, wait, timeout):
  """Run SOURCE (a compiled package, or a config file to compile) once."""
  from pipeline import kubeflow_client
  connection = _connection(host, token, namespace)
  with tempfile.TemporaryDirectory() as workdir:
    package, run_root = _package(source, parse_sets(sets), image, pipeline_root, workdir)
    result = _call(kubeflow_client.submit, connection, package, _pipeline_name(package),
                   experiment, _params(params), pipeline_root=run_root, dry_run=dry_run,
                   echo=click.echo)
  if dry_run:
    return
  click.echo(f"Run {result['run_id']}: {result['url']}")
  if wait:
    state = _call(kubeflow_client.wait, connection, result["run_id"], timeout, echo=click.echo)
    click.echo(f"Run {result['run_id']} {state}")


@kubeflow.command()
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@_kubeflow_options
@click.option("--cron", required=True,
              help='Six fields, seconds first: "0 0 3 * * *" is daily at 03:00.')
@click.option("--max-concurrency", default=1, show_default=True,
              help="Runs of this schedule at once.")
@click.option("--catchup/--no-catchup", default=False, show_default=True,
              help="After a pause, --catchup runs once per missed slot; --no-catchup runs "
                   "once.")
def schedule(source, host, token, namespace, experiment, params, sets, dry_run, image,
             pipeline_root, cron, max_concurrency, catchup):
  """Run SOURCE (a compiled package, or a config file to compile) on a cron schedule."""
  from pipeline import kubeflow_client
  _call(kubeflow_client.validate_cron, cron)  # before compiling or sending anything
  connection = _connection(host, token, namespace)
  with tempfile.TemporaryDirectory() as workdir:
    package, run_root = _package(source, parse_sets(sets), image, pipeline_root, workdir)
    result = _call(kubeflow_client.schedule, connection, package, _pipeline_name(package),
                   experiment, cron, max_concurrency=max_concurrency, no_catchup=not catchup,
                   params=_params(params), pipeline_root=run_root, dry_run=dry_run,
                   echo=click.echo)
  if not dry_run:
    click.echo(f"Schedule {result['recurring_run_id']}: {result['url']}")


@kubeflow.command()
@click.option("--host", required=True, help="KFP API endpoint.")
@click.option("--token", help="Bearer token (default: the in-cluster service-account token).")
@click.option("--namespace", help="Kubeflow profile namespace (multi-user installs).")
@click.option("--experiment", help="Only this experiment's schedules.")
@click.option("--enable", "enable_id", metavar="ID", help="Resume a schedule.")
@click.option("--disable", "disable_id", metavar="ID", help="Pause a schedule.")
@click.option("--delete", "delete_id", metavar="ID", help="Delete a schedule.")
def schedules(host, token, namespace, experiment, enable_id, disable_id, delete_id):
  """List the recurring runs, or enable, disable or delete one."""
  from pipeline import kubeflow_client
  connection = _connection(host, token, namespace)
  actions = [(a, i) for a, i in (("enable", enable_id), ("disable", disable_id),
                                 ("delete", delete_id)) if i]
  if len(actions) > 1:
    fail("give at most one of --enable, --disable, --delete")
  if actions:
    action, schedule_id = actions[0]
    _call(kubeflow_client.change_schedule, connection, schedule_id, action)
    click.echo(f"Schedule {schedule_id}: {action}d")
    return
  rows = _call(kubeflow_client.list_schedules, connection, experiment)
  for row in rows:
    click.echo(f"{row['id']}  {row['name']}  {row['cron']}  "
               f"{'enabled' if row['enabled'] else 'disabled'}  "
               f"max concurrency {row['max_concurrency']}")
  if not rows:
    click.echo("No schedules.")
