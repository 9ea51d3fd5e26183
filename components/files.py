"""Writing the state files a run keeps under its output folder.

A run killed mid-write, or a full disk, must not leave half a file that
every later run then fails to read: local files are written next to their
destination and renamed over it, so a reader sees the old file or the new
one, never a torn one. Objects in buckets (gs://, s3://) appear whole when
their upload completes, so they are written directly.
"""
from __future__ import annotations

import os
import tempfile


def _is_local(path: str) -> bool:
  return "://" not in path or path.startswith("file://")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  """Replaces the file at `path` with `text` (UTF-8) in one step; creates its folder."""
  path = os.fspath(path)
  if not _is_local(path):
    import tensorflow as tf
    with tf.io.gfile.GFile(path, "w") as f:
      f.write(text)
    return
  path = path.removeprefix("file://")
  folder = os.path.dirname(path) or "."
  os.makedirs(folder, exist_ok=True)
  fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.",
                                   suffix=".tmp")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())  # the bytes are on disk before the name points at them
    os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide it from other readers
    os.replace(temporary, path)
  except BaseException:
    try:
      os.unlink(temporary)
    except OSError:
      pass
    raise

