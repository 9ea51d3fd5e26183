"""The `finetune` command: every command and every line the terminal shows.

One module per command group (run, check, experiment, history, kubeflow,
predict; report and schema in main), the shared options (options.py), the
console and log (console.py), the run summary (summary.py) and the report
renderer (report.py). The runners and the pipeline definition stay in
`pipeline/`; nothing there prints.
"""
from pipeline.cli.main import entry, main  # noqa: F401  (the console script and its group)
