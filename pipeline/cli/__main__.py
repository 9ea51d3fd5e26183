"""`python -m pipeline.cli ...`: the same as the `finetune` console script."""
from pipeline.cli.main import entry

entry()
