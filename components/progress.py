"""Progress of long stages, for whoever shows it.

The local `finetune` console installs a listener and draws live bars; on
Kubeflow, or without a listener, reporting is a no-op and the stage's own
log lines remain.
"""
from __future__ import annotations

from typing import Protocol


class Listener(Protocol):
  def start(self, task: str, total: int | None) -> None: ...
  def advance(self, task: str, steps: int = 1) -> None: ...
  def finish(self, task: str, line: str) -> None: ...


_listener: Listener | None = None


def set_listener(listener: Listener | None) -> None:
  global _listener
  _listener = listener


def start(task: str, total: int | None) -> None:
  if _listener:
    _listener.start(task, total)


def advance(task: str, steps: int = 1) -> None:
  if _listener:
    _listener.advance(task, steps)


def finish(task: str, line: str) -> None:
  """Ends the task; `line` is what stays on the console (e.g. an epoch's metrics)."""
  if _listener:
    _listener.finish(task, line)
