"""The `finetune` command."""
from __future__ import annotations

import sys

import click

import pipeline  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from pipeline.config import ConfigError, load_config


def _parse_sets(values: tuple[str, ...]) -> dict[str, str]:
  overrides = {}
  for item in values:
    key, sep, value = item.partition("=")
    if not sep:
      raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
    overrides[key.strip()] = value
  return overrides


@click.group()
def main():
  """Fine-tune a pretrained image classifier on folders of photos, with TFX."""


@main.command()
@click.option("--config", "config_path", type=click.Path(), help="YAML configuration file.")
@click.option("--data-root", help="Folder of class folders (see README for layouts).")
@click.option("--output", "output_dir", help="Output folder (pipeline root, metadata, serving).")
@click.option("--pipeline-name", help="Pipeline name; also the default served model name.")
@click.option("--weights", help="imagenet | none | weights file | folder of Keras weight files.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Any setting, e.g. --set train.image_size=160 (repeatable).")
@click.option("--beam-arg", "beam_args", multiple=True, help="Beam pipeline argument (repeatable).")
@click.option("--warn-on-anomalies", is_flag=True, help="Report data anomalies but keep training.")
def run(config_path, data_root, output_dir, pipeline_name, weights, sets, beam_args,
        warn_on_anomalies):
  """Run the pipeline locally (ingest, validate, transform, train, evaluate, push)."""
  overrides = _parse_sets(sets)
  for key, value in (("data.root", data_root), ("output_dir", output_dir),
                     ("pipeline_name", pipeline_name), ("train.weights", weights)):
    if value is not None:
      overrides[key] = value
  if beam_args:
    overrides["beam_args"] = list(beam_args)
  if warn_on_anomalies:
    overrides["data.fail_on_anomalies"] = False
  try:
    config = load_config(config_path, overrides).validate()
  except ConfigError as e:
    raise click.UsageError(str(e))

  from components.data_gate import DataAnomaliesError
  from components.image_example_gen import DataLayoutError
  from pipeline.local_runner import run_pipeline, summarize
  try:
    result = run_pipeline(config, echo=click.echo)
  except (DataLayoutError, DataAnomaliesError) as e:
    click.echo(f"Run stopped: {e}", err=True)
    sys.exit(2)
  click.echo("\n".join(summarize(config, result)))


from pipeline.predict import predict  # noqa: E402

main.add_command(predict)

if __name__ == "__main__":
  main()
