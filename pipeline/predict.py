"""`finetune predict`: classify image files with a pushed model."""
import click


@click.command()
@click.argument("images", nargs=-1, required=True)
def predict(images):
  """Placeholder, being written."""
  raise click.ClickException("not implemented yet")
