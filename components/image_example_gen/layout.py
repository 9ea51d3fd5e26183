"""How a data root is laid out: spans, split folders, class folders.

Accepted layouts (class folders hold the images):

    root/cats/*.jpg, root/dogs/*.jpg                      hash-split by path
    root/train|validation|test/cats/*.jpg ...             split folders
    root/span-1/..., root/span-2/...                      one folder per data drop;
                                                          the newest span is used

The same code answers at pipeline-construction time (to build the ExampleGen's
input/output config) and inside the executor (to list the files), so a layout
problem is reported before any Beam work starts.
"""
from __future__ import annotations

import dataclasses
import posixpath
import re

import tensorflow as tf

SPLIT_FOLDERS = ("train", "validation", "test")
SPAN_DIR = re.compile(r"^span-(\d+)$")
SPAN_PATTERN = "span-{SPAN}"


class DataLayoutError(ValueError):
  """The data root cannot be used; the message names the offending path."""


# What operating systems and photo tools leave in folders. Names starting
# with "_" are photos too: cameras write _DSC1234.JPG.
OS_LITTER = frozenset({"Thumbs.db", "ehthumbs.db", "desktop.ini", "Icon\r", "__MACOSX",
                       "@eaDir", "$RECYCLE.BIN", "System Volume Information"})


def _is_hidden(name: str) -> bool:
  name = name.rstrip("/")
  return name.startswith(".") or name in OS_LITTER


def _subdirs(path: str) -> list[str]:
  return sorted(
      name.rstrip("/") for name in tf.io.gfile.listdir(path)
      if not _is_hidden(name) and tf.io.gfile.isdir(posixpath.join(path, name)))


@dataclasses.dataclass(frozen=True)
class Layout:
  """The shape of a data root, as the ExampleGen needs it."""
  has_spans: bool
  has_split_folders: bool
  newest_span: int | None
  class_names: tuple[str, ...]  # of the newest span; label i is class_names[i]
  split_dirs: tuple[str, ...] = ()  # the newest span's split folders (or its root)

  def split_patterns(self) -> dict[str, str]:
    """Input split name -> glob pattern relative to the data root."""
    prefix = SPAN_PATTERN + "/" if self.has_spans else ""
    if self.has_split_folders:
      return {s: f"{prefix}{s}/*/*" for s in SPLIT_FOLDERS}
    return {"all": f"{prefix}*/*"}


def detect_layout(data_root: str) -> Layout:
  """Inspects `data_root` (local path or bucket URI) and checks it is usable."""
  if not tf.io.gfile.isdir(data_root):
    raise DataLayoutError(f"Data root not found or not a folder: {data_root}")
  top = _subdirs(data_root)
  spans = [int(m.group(1)) for m in map(SPAN_DIR.match, top) if m]
  newest_span = max(spans) if spans else None
  content_root = (posixpath.join(data_root, f"span-{newest_span}")
                  if spans else data_root)
  folders = _subdirs(content_root)
  has_split_folders = any(f in SPLIT_FOLDERS for f in folders)
  split_dirs = ([posixpath.join(content_root, s) for s in SPLIT_FOLDERS]
                if has_split_folders else [content_root])
  names = class_names(split_dirs)  # raises on missing/empty/too few classes
  return Layout(bool(spans), has_split_folders, newest_span, tuple(names), tuple(split_dirs))


def sample_files(data_root: str, layout: Layout, count: int) -> list[str]:
  """Up to `count` photo paths spread evenly over the newest span's listing."""
  files = [f.path for split_dir in layout.split_dirs
           for f in list_split(data_root, split_dir, list(layout.class_names))[0]]
  step = max(1, len(files) // count)
  return files[::step][:count]


def split_dir_of(pattern: str) -> str:
  """'/root/span-2/train/*/*' -> '/root/span-2/train'."""
  assert pattern.endswith("/*/*"), pattern
  return pattern[:-len("/*/*")]


def class_names(split_dirs: list[str]) -> list[str]:
  """Sorted class names shared by all splits; label i is class_names[i].

  Every split must hold the same class folders, each with at least one file,
  so that the label mapping is identical across splits and spans.
  """
  per_split = {}
  for split_dir in split_dirs:
    if not tf.io.gfile.isdir(split_dir):
      raise DataLayoutError(f"Split folder missing: {split_dir}")
    per_split[split_dir] = _subdirs(split_dir)
  names = sorted(set().union(*per_split.values()))
  if len(names) < 2:
    raise DataLayoutError(
        f"Need at least two class folders, found {names or 'none'} in "
        f"{', '.join(split_dirs)}")
  for split_dir, found in per_split.items():
    for name in names:
      class_dir = posixpath.join(split_dir, name)
      if name not in found:
        raise DataLayoutError(f"Class folder missing: {class_dir}")
      if not any(not _is_hidden(f) for f in tf.io.gfile.listdir(class_dir)):
        raise DataLayoutError(f"Class folder is empty: {class_dir}")
  return names


def _relative(data_root: str, path: str) -> str:
  root = data_root.rstrip("/") + "/"
  return path[len(root):] if path.startswith(root) else path


@dataclasses.dataclass(frozen=True)
class ListedFile:
  path: str           # full path (local or URI)
  relative_path: str  # relative to the data root; hashed for flat layouts
  class_name: str


def list_split(data_root: str, split_dir: str, names: list[str]
               ) -> tuple[list[ListedFile], list[str]]:
  """Files to ingest from one split folder, and the files ignored there.

  Ignored: hidden files, files outside class folders, anything nested deeper.
  """
  files, ignored = [], []
  for dirpath, subdirs, filenames in tf.io.gfile.walk(split_dir):
    dirpath = dirpath.rstrip("/")
    depth = 0 if dirpath == split_dir.rstrip("/") else len(
        dirpath[len(split_dir.rstrip("/")) + 1:].split("/"))
    class_name = posixpath.basename(dirpath)
    for filename in sorted(filenames):
      path = posixpath.join(dirpath, filename)
      if depth == 1 and class_name in names and not _is_hidden(filename):
        files.append(ListedFile(path, _relative(data_root, path), class_name))
      else:
        ignored.append(_relative(data_root, path))
  return files, ignored


def files_outside(data_root: str, split_dirs: list[str]) -> list[str]:
  """Files under `data_root` but outside `split_dirs`, relative to the root: in
  the root, next to the split folders, in older spans and any other folder.
  Ingestion lists them as ignored, so that every file on disk is accounted for."""
  skip = {d.rstrip("/") for d in split_dirs}
  outside = []
  for dirpath, subdirs, filenames in tf.io.gfile.walk(data_root):
    dirpath = dirpath.rstrip("/")
    if dirpath in skip:  # a flat layout: the root is the split folder
      break
    subdirs[:] = [d for d in subdirs if posixpath.join(dirpath, d.rstrip("/")) not in skip]
    outside += [_relative(data_root, posixpath.join(dirpath, f)) for f in filenames]
  return sorted(outside)
