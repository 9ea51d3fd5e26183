"""The terminal shows this project's lines and live progress; the rest goes to a log file.

TensorFlow's C++ logging, absl, Beam and Python warnings write to the
process's stdout and stderr file descriptors, from any thread or child
process. While a command runs, both descriptors point at the log file, and
this project's lines go to the terminal through copies of the originals.
`--verbose` leaves the descriptors alone.
"""
from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import sys
import tempfile
import time
import traceback

import click

from components import progress

class Console:
  """Where `echo` goes during a command, with live progress bars on a terminal."""

  def __init__(self, out, err, capturing: bool = True):
    self.out, self.err, self.capturing = out, err, capturing
    self.log_path, self.log_is_temporary = None, False
    self._bars = None
    self._tasks: dict[str, int] = {}
    if out.isatty():
      from rich.console import Console as RichConsole
      from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                 TimeElapsedColumn, TimeRemainingColumn)
      self._bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                            console=RichConsole(file=out), transient=True,
                            # Other libraries' prints belong in the log, not above the bars.
                            redirect_stdout=False, redirect_stderr=False)

  def echo(self, line: str = "", err: bool = False) -> None:
    if self._bars is not None and not err:
      self._bars.console.print(line, markup=False, highlight=False, soft_wrap=True)
    else:
      click.echo(line, file=self.err if err else self.out)

  # components.progress listener
  def start(self, task: str, total: int | None) -> None:
    if self._bars is not None:
      if not self._tasks:
        self._bars.start()
      self._tasks[task] = self._bars.add_task(task, total=total)

  def advance(self, task: str, steps: int = 1) -> None:
    if self._bars is not None and task in self._tasks:
      self._bars.advance(self._tasks[task], steps)

  def finish(self, task: str, line: str) -> None:
    if self._bars is not None and task in self._tasks:
      self._bars.remove_task(self._tasks.pop(task))
      if not self._tasks:
        self._bars.stop()
    self.echo(line)

  def set_log(self, path: str | None) -> None:
    """Sends the captured output to `path` from now on, with what came before;
    None: a temporary file. Only local paths: a bucket URI keeps the temporary file."""
    if not self.capturing or (path and "://" in path):
      return
    previous = getattr(self, "log", None)
    if path is None:
      self.log = tempfile.NamedTemporaryFile(  # pylint: disable=consider-using-with
          "a+", prefix="finetune-", suffix=".log", delete=False)
      self.log_path, self.log_is_temporary = self.log.name, True
    else:
      os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
      self.log = open(path, "a", buffering=1)  # pylint: disable=consider-using-with
      self.log_path, self.log_is_temporary = path, False
    if previous is None:
      self.log.write(f"--- finetune {' '.join(sys.argv[1:])} at "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    else:
      sys.stdout.flush()
      sys.stderr.flush()
      previous.flush()
      with open(previous.name) as f:
        self.log.write(f.read())
      previous.close()
      os.unlink(previous.name)
    self.log.flush()
    for fd in (1, 2):
      os.dup2(self.log.fileno(), fd)

  def close(self) -> None:
    if self._bars is not None and self._tasks:
      self._bars.stop()


def _fd(stream) -> int | None:
  try:
    return stream.fileno()
  except (AttributeError, OSError, io.UnsupportedOperation):
    return None


_active: Console | None = None


def terminal_err():
  """Where a one-line error goes now: the terminal, even while output is captured."""
  return _active.err if _active else sys.stderr


@contextlib.contextmanager
def quiet(verbose: bool = False):
  """Runs the block with other libraries' output in a log file; yields the Console.

  The log starts as a temporary file; `console.set_log(path)` moves it to
  the run's folder once that is known. An unexpected exception escaping the
  block leaves its traceback in the log and one line on the terminal, and
  exits with status 1.
  """
  global _active
  if verbose:  # everything on the terminal, as the libraries write it
    console = _active = Console(sys.stdout, sys.stderr, capturing=False)
    progress.set_listener(console)
    try:
      yield console
    finally:
      _active = None
      progress.set_listener(None)
      console.close()
    return
  sys.stdout.flush()
  sys.stderr.flush()
  saved = {fd: os.dup(fd) for fd in (1, 2)}
  # Our own lines: through copies of the terminal's descriptors, or (when the
  # streams have none, e.g. under click's test runner) the stream objects.
  out = (os.fdopen(os.dup(saved[1]), "w", buffering=1) if _fd(sys.stdout) == 1 else sys.stdout)
  err = (os.fdopen(os.dup(saved[2]), "w", buffering=1) if _fd(sys.stderr) == 2 else sys.stderr)
  console = _active = Console(out, err)
  console.set_log(None)
  progress.set_listener(console)
  failed = False
  try:
    yield console
  except click.ClickException:
    raise  # click shows it, once the terminal is back
  except Exception as e:  # pylint: disable=broad-except
    failed = True
    try:
      console.log.write(traceback.format_exc())
      console.log.flush()
      logged = True
    except OSError:  # the disk the log is on may be the full one
      logged = False
    full = disk_full_line(e, _working_folder(console))
    if full:
      console.echo(full, err=True)
    else:
      first_line = (str(e).strip().splitlines() or [""])[0]
      console.echo(f"Failed: {type(e).__name__}: {first_line}" +
                   (f"\nThe full traceback is in {console.log_path}" if logged else ""), err=True)
    raise SystemExit(1) from None
  finally:
    _active = None
    progress.set_listener(None)
    console.close()
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, copy in saved.items():
      os.dup2(copy, fd)
      os.close(copy)
    for stream in (out, err):
      if stream not in (sys.stdout, sys.stderr):
        stream.close()
    console.log.close()
    if console.log_is_temporary and not failed:
      os.unlink(console.log_path)


_DISK_FULL = ("No space left on device", "database or disk is full", "Disk quota exceeded")


def disk_full_line(error: BaseException, where: str) -> str | None:
  """One line for an error caused by a full disk, wherever it surfaced (SQLite
  prints its SQL statement, Beam and TensorFlow wrap the OSError), else None.
  `where`: the folder the command writes to, when the error names no file."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
      where = error.filename or where
      break
    if any(marker in str(error) for marker in _DISK_FULL):
      break
    error = error.__cause__ or error.__context__
  else:  # no error in the chain came from a full disk
    return None
  where = os.fspath(where)
  try:
    free = f" ({shutil.disk_usage(_existing(where)).free / 2**20:.0f} MB free now)"
  except OSError:
    free = ""
  return (f"Failed: the disk is full at {where}{free}: free some space, then run the same "
          "command again (finished steps are kept)")


def _existing(path: str) -> str:
  while path and not os.path.exists(path):
    path = os.path.dirname(path.rstrip("/"))
  return path or "."


def _working_folder(console: Console) -> str:
  """The run's folder, from where its log goes (<run dir>/logs/...), else the working folder."""
  if console.log_path and not console.log_is_temporary:
    return os.path.dirname(os.path.dirname(console.log_path))
  return os.getcwd()


def log_path_for(run_dir: str, command: str) -> str:
  """<run dir>/logs/<command>-<local time>.log"""
  return os.path.join(run_dir, "logs", f"{command}-{time.strftime('%Y%m%d-%H%M%S')}.log")
