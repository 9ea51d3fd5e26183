"""One `finetune run` at a time per output folder (<output>/<pipeline>/).

Overlapping scheduled runs (a slow run still going when cron starts the
next) would both write the metadata store and push to the same serving
folder. The lock is an OS lock, fcntl.flock on `<run dir>/run.lock`: the
kernel drops it when its process ends, however it ends (SIGKILL, OOM, a
reboot), so a killed run never blocks the next one. The file stays
behind on purpose and only carries the holder's pid, start time and host
for the message of a run that finds it taken.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import sys
import tempfile
import time

# sysexits.h EX_TEMPFAIL: "try again later". Cron and systemd report it
# apart from a failed run; deploy/schedule/README.md explains it.
EX_TEMPFAIL = 75
LOCK_FILE = "run.lock"
_POLL_S = 0.5


class RunLocked(Exception):
  """Another process holds the run lock; the message names it. Exit with EX_TEMPFAIL."""
  exit_code = EX_TEMPFAIL


def lock_path(run_dir: str) -> str:
  """The lock file of a run dir. flock needs a local file: a bucket URI run dir
  is locked in this machine's temp folder, so it keeps out runs on this host only."""
  if "://" in run_dir:
    digest = hashlib.sha1(run_dir.rstrip("/").encode()).hexdigest()[:16]
    folder = os.path.join(tempfile.gettempdir(), "finetune-locks")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{digest}.lock")
  os.makedirs(run_dir, exist_ok=True)
  return os.path.join(run_dir, LOCK_FILE)


def holder(path: str) -> dict:
  """What the holder wrote into the lock file ({} if nothing yet or unreadable)."""
  try:
    with open(path) as f:
      found = json.loads(f.read() or "{}")
    return found if isinstance(found, dict) else {}
  except (OSError, ValueError):
    return {}


def describe(info: dict) -> str:
  if not info.get("pid"):
    # It took the lock a moment ago and has not written its details yet.
    return "another process"
  return (f"pid {info['pid']} on {info.get('host', '?')}, "
          f"started {info.get('started', '?')}")


@contextlib.contextmanager
def run_lock(run_dir: str, wait_s: float = 0):
  """Holds the run lock of `run_dir` for the block.

  Waits up to `wait_s` seconds (0: not at all) for another holder to finish,
  then raises RunLocked naming it. Nothing of the run dir but the lock file
  is touched before the lock is held.
  """
  path = lock_path(run_dir)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    deadline = time.monotonic() + max(wait_s, 0)
    while True:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        break
      except BlockingIOError:
        left = deadline - time.monotonic()
        if left <= 0:
          waited = f" after waiting {wait_s:g}s" if wait_s > 0 else ""
          raise RunLocked(f"another run holds the lock on {run_dir}{waited}: "
                          f"{describe(holder(path))} (lock file {path}); "
                          f"exiting with {EX_TEMPFAIL}") from None
        time.sleep(min(_POLL_S, left))
    # The file is never deleted: removing it while another process waits on
    # the old inode would let two runs hold "the" lock at once.
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "command": " ".join(["finetune", *sys.argv[1:]])}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    try:
      yield info
    finally:
      os.ftruncate(fd, 0)  # a finished run leaves no holder behind
  finally:
    os.close(fd)  # closing drops the flock
