"""One fingerprint of a data root: every file's relative path, size and
modification time. It decides whether ingestion reruns (the ImageExampleGen
driver's cache key) and whether a scheduled run has anything new to do.

An odd entry (a dangling symlink, a symlink loop, a name that is not UTF-8)
changes the fingerprint like any file and never stops it: ingestion lists
it as a rejection with its reason.
"""
from __future__ import annotations

import hashlib
import os
import posixpath

import tensorflow as tf


def _local_entries(root: str):
  seen = set()  # real folders already walked: a symlink loop ends here
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    real = os.path.realpath(dirpath)
    if real in seen:
      dirnames[:] = []
      continue
    seen.add(real)
    dirnames.sort()
    for name in sorted(filenames):
      path = os.path.join(dirpath, name)
      try:
        stat = os.stat(path)
        size, mtime = stat.st_size, stat.st_mtime_ns
      except OSError as e:  # dangling link, loop, no permission
        size, mtime = -1, e.errno
      yield os.fsencode(path[len(root):]), size, mtime


def _remote_entries(root: str):
  for dirpath, _, filenames in sorted(tf.io.gfile.walk(root)):
    for name in sorted(filenames):
      path = posixpath.join(dirpath.rstrip("/"), name)
      stat = tf.io.gfile.stat(path)
      yield path[len(root):].encode(), stat.length, stat.mtime_nsec


def data_fingerprint(data_root: str) -> str:
  root = data_root.rstrip("/")
  entries = _remote_entries(root) if "://" in root else _local_entries(root)
  digest = hashlib.sha256()
  for relative, size, mtime in entries:
    digest.update(relative + f"\0{size}\0{mtime}\n".encode())
  return digest.hexdigest()
