"""The `finetune` command."""
from __future__ import annotations

import functools
import sys
import traceback

import click

import pipeline  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from pipeline import storage
from pipeline.cli.options import fail, located_options, run_options
from pipeline.cli.console import log_path_for
from pipeline.run_lock import EX_TEMPFAIL


@click.group()
def main():
  """Fine-tune a pretrained image classifier on folders of photos, with TFX."""


@main.command()
@run_options
@click.option("--no-report", is_flag=True, help="Skip writing the HTML run report.")
@click.option("--wait-for-lock", type=click.FloatRange(min=0), default=0, show_default=True,
              metavar="SECONDS",
              help="If another run holds this output folder, wait this long for it, "
                   f"then exit {EX_TEMPFAIL}.")
def run(config, no_report, wait_for_lock, console):
  """Run the pipeline locally (ingest, validate, transform, train, evaluate, push).

  One run at a time per output folder; with nothing new since the last
  successful run, it says so and does nothing (deploy/schedule/README.md).
  """
  from pipeline.cli import run as run_command
  run_command.run(config, no_report, wait_for_lock, console)


@main.command()
@run_options
def check(config, console):
  """Vet a photo folder in seconds, before a long run (no training, nothing recorded).

  Layout, photos per split and class, rejected and ignored files, repeated
  photos, sizes and formats, anomalies against the schema. Exits 2 when a run
  would stop, with the run's message.
  """
  from components.image_example_gen import DataLayoutError
  from pipeline.cli.check import check as check_data
  try:
    code = check_data(config, console.echo)
  except DataLayoutError as e:
    console.echo(f"Run stopped: {e}", err=True)
    code = 2
  sys.exit(code)


def recorded_run_options(command):
  """located_options plus --run: one recorded run, as `finetune run` left it;
  passes (config, run, echo)."""

  @functools.wraps(command)
  def wrapper(config, echo, run_id, **kwargs):
    import os
    from pipeline import runs
    if not os.path.exists(config.metadata_path):
      raise click.ClickException(f"no pipeline metadata at {config.metadata_path}; "
                                 "run `finetune run` first, or pass --outputs/--pipeline-name")
    try:
      run = runs.load_run(runs.open_store(config.metadata_path), run_id)
    except LookupError as e:
      fail(str(e), 1)
    return command(config=config, run=run, echo=echo, **kwargs)

  return located_options(click.option(
      "--run", "run_id", default="latest", show_default=True,
      help="Run id (see the run's summary) or 'latest'.")(wrapper))


@main.command()
@recorded_run_options
@click.option("--output", "report_dir", type=click.Path(),
              help="Folder for index.html and its pictures. "
                   "Default: <output>/<pipeline>/reports/<run id>/.")
def report(config, run, report_dir, echo):
  """Write the HTML report of a finished run: curves, confusion matrix, mistakes, data."""
  from pipeline.cli.report import write_report
  from pipeline.run_result import read_result
  echo(f"Writing the report of run {run.run_id} ...")
  echo(f"Report: {write_report(config, read_result(run), report_dir)}")


@main.command()
@recorded_run_options
@click.option("--output", "schema_output", type=click.Path(),
              help="Where the inferred schema goes. "
                   "Default: <output>/<pipeline>/schema/inferred.pbtxt.")
def schema(config, run, schema_output, echo):
  """Infer a schema from a trusted run's statistics and diff it against the one it used."""
  from pipeline.schema import propose_schema
  try:
    path, diff = propose_schema(config, run, schema_output)
  except LookupError as e:
    raise click.ClickException(str(e))
  echo(diff or "The inferred schema is identical to the one the run used.")
  echo(f"Inferred schema: {path}\nReview the diff; carry the changes you want into "
             f"the dataset's schema ({config.schema_file}).")


@main.group()
def experiment():
  """Train one variant per value and compare them on the test split."""


def _experiment(config, kind, values, comparison_dir, console):
  values = [v.strip() for v in values.split(",") if v.strip()]
  if not values:
    fail("give at least one value")
  console.set_log(log_path_for(config.run_dir, f"experiment-{kind}"))
  from pipeline.cli.experiment import run_experiment, to_markdown, KINDS
  from pipeline.cli.run import interrupted
  try:
    rows, out = run_experiment(config, kind, values, echo=console.echo,
                               output_dir=comparison_dir)
  except KeyboardInterrupt:
    interrupted(console.echo)
  console.echo("\n" + to_markdown(rows, KINDS[kind]))
  console.echo(f"Comparison: {out}/comparison.csv, comparison.md, comparison.png")
  if console.log_path:
    console.echo(f"Log: {console.log_path}")
  if all(row["status"] != "ok" for row in rows):
    sys.exit(1)


@experiment.command()
@click.option("--bases", required=True, help="Comma-separated, e.g. mobilenet_v2,vgg16,resnet50.")
@click.option("--comparison-dir", type=click.Path(), help="Where the table and plot go.")
@run_options
def bases(config, bases, comparison_dir, console):
  """Compare base models (same data, same settings otherwise)."""
  from components.trainer.model import BASES
  unknown = [b for b in bases.split(",") if b.strip() and b.strip() not in BASES]
  if unknown:
    fail(f"unknown base(s) {', '.join(unknown)}; choose from {', '.join(BASES)}")
  _experiment(config, "bases", bases, comparison_dir, console)


@experiment.command()
@click.option("--values", required=True,
              help="Comma-separated unfreeze rules: N (last N layers), a layer name, all, 0.")
@click.option("--comparison-dir", type=click.Path(), help="Where the table and plot go.")
@run_options
def unfreeze(config, values, comparison_dir, console):
  """Compare how much of the base phase 2 unfreezes."""
  _experiment(config, "unfreeze", values, comparison_dir, console)


@experiment.command()
@click.option("--values", required=True, help="Comma-separated pixels per side, e.g. 224,256,288.")
@click.option("--comparison-dir", type=click.Path(), help="Where the table and plot go.")
@run_options
def sizes(config, values, comparison_dir, console):
  """Compare training (and serving) image sizes."""
  bad = [v for v in values.split(",") if v.strip() and not v.strip().isdigit()]
  if bad:
    fail(f"--values: not a whole number of pixels: {', '.join(bad)}")
  _experiment(config, "sizes", values, comparison_dir, console)


from pipeline.cli.history import history, rollback  # noqa: E402
from pipeline.cli.kubeflow import kubeflow  # noqa: E402
from pipeline.cli.predict import predict  # noqa: E402

main.add_command(history)
main.add_command(kubeflow)
main.add_command(predict)
main.add_command(rollback)


def entry():
  """The `finetune` console script: `main`, ended as object storage needs (pipeline/storage.py)."""
  try:
    main()  # pylint: disable=no-value-for-parameter
  except SystemExit as e:
    storage.exit_process(storage.exit_code(e))
  except Exception:  # pylint: disable=broad-except
    traceback.print_exc()
    storage.exit_process(1)
