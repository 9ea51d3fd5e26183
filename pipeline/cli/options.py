"""What the `finetune` commands share: one-line errors and the options that say what to run."""
from __future__ import annotations

import functools
import sys

import click

from pipeline import storage
from pipeline.config import ConfigError, load_config, recorded_config
from pipeline.cli.console import quiet, terminal_err


def fail(message: str, code: int = 2):
  """One line on stderr, no traceback: for mistakes in what the user asked."""
  click.echo(f"Error: {message}", file=terminal_err())
  sys.exit(code)


def parse_sets(values: tuple[str, ...]) -> dict[str, str]:
  overrides = {}
  for item in values:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
      fail(f"--set expects KEY=VALUE, e.g. --set train.image_size=160; got {item!r}")
    overrides[key.strip()] = value
  return overrides


VERBOSE = click.option("--verbose", is_flag=True,
                       help="Show every library's output here, not only in the log file.")


def run_options(command):
  """The options that say what to run on and where: shared by run and experiment."""
  options = [
      click.option("--config", "config_path", type=click.Path(), help="YAML configuration file."),
      click.option("--data-root", help="Folder of class folders (see README for layouts)."),
      click.option("--outputs", "output_dir",
                   help="The output folder: pipeline root, metadata, served models "
                        "(default: outputs)."),
      click.option("--pipeline-name", help="Pipeline name; also the default served model name."),
      click.option("--weights",
                   help="imagenet | none | weights file | folder of Keras weight files."),
      click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                   help="Any setting, e.g. --set train.image_size=160 (repeatable)."),
      click.option("--beam-arg", "beam_args", multiple=True,
                   help="Beam pipeline argument (repeatable)."),
      click.option("--warn-on-anomalies", is_flag=True,
                   help="Report data anomalies but keep training."),
      VERBOSE,
  ]

  @functools.wraps(command)
  def wrapper(config_path, data_root, output_dir, pipeline_name, weights, sets, beam_args,
              warn_on_anomalies, verbose, **kwargs):
    overrides = parse_sets(sets)
    for key, value in (("data.root", data_root), ("output_dir", output_dir),
                       ("pipeline_name", pipeline_name), ("train.weights", weights)):
      if value is not None:
        overrides[key] = value
    if beam_args:
      overrides["beam_args"] = list(beam_args)
    if warn_on_anomalies:
      overrides["data.fail_on_anomalies"] = False
    # Checking the settings loads TensorFlow: its notices are captured too,
    # and land in the log the command picks (console.set_log).
    with quiet(verbose) as console:
      try:
        config = load_config(config_path, overrides).validate()
      except ConfigError as e:
        fail(str(e))
      return command(config=config, console=console, **kwargs)

  for option in reversed(options):
    wrapper = option(wrapper)
  return wrapper


def located_options(command):
  """--config/--outputs/--pipeline-name: the outputs a `finetune run` left
  (the only pipeline under them by default); passes (config, echo)."""

  @functools.wraps(command)
  def wrapper(config_path, output_dir, pipeline_name, verbose, **kwargs):
    try:
      config = recorded_config(config_path, output_dir, pipeline_name)
    except ConfigError as e:
      fail(str(e))
    if storage.uses_s3(config.run_dir, config.serving_dir):
      storage.enable_s3()
    with quiet(verbose) as console:
      return command(config=config, echo=console.echo, **kwargs)

  options = [
      click.option("--config", "config_path", type=click.Path(), help="YAML configuration file."),
      click.option("--outputs", "output_dir",
                   help="The output folder `finetune run` used (default: outputs)."),
      click.option("--pipeline-name",
                   help="Pipeline name (default: the only one under the outputs)."),
      VERBOSE,
  ]
  for option in reversed(options):
    wrapper = option(wrapper)
  return wrapper
