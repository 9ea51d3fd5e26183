"""How a data root is laid out: spans, split folders, class folders.

Accepted layouts (class folders hold the images):

    root/cats/*.jpg, root/dogs/*.jpg                      hash-split by path
    root/train|validation|test/cats/*.jpg ...             split folders
    root/span-1/..., root/span-2/...                      one folder per data drop
                                                          (data.spans: all, latest or N)

With spans, training and validation use every selected span, and the test
split is the newest span's alone, so a candidate and the served model are
compared on the same new photos; older spans' test photos join training.

The same code answers at pipeline-construction time (to build the ExampleGen's
input/output config) and inside the executor (to list the files), so a layout
problem is reported before any Beam work starts.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import posixpath
import re
from typing import Iterator

import tensorflow as tf

SPLIT_FOLDERS = ("train", "validation", "test")
SPAN_DIR = re.compile(r"^span-(\d+)$")
SPAN_GLOB = "span-*"


class DataLayoutError(ValueError):
  """The data root cannot be used; the message names the offending path."""


# What operating systems and photo tools leave in folders. Names starting
# with "_" are photos too: cameras write _DSC1234.JPG.
OS_LITTER = frozenset({"Thumbs.db", "ehthumbs.db", "desktop.ini", "Icon\r", "__MACOSX",
                       "@eaDir", "$RECYCLE.BIN", "System Volume Information"})


def _is_hidden(name: str) -> bool:
  name = name.rstrip("/")
  return name.startswith(".") or name in OS_LITTER


def _is_local(path: str) -> bool:
  return "://" not in path


def shown(name: str) -> str:
  """A local name as reports and the console show it: bytes that are not
  UTF-8 (Python keeps them as surrogates) written as \\xNN escapes."""
  return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _listdir(path: str) -> list[str]:
  """Names in a folder. Local folders through `os`: TensorFlow's listing fails
  on the whole folder when one name is not UTF-8."""
  try:
    if _is_local(path):
      return os.listdir(path)
    return tf.io.gfile.listdir(path)
  except (OSError, tf.errors.OpError) as e:
    raise DataLayoutError(f"Cannot read folder {shown(path)}: "
                          f"{getattr(e, 'strerror', None) or getattr(e, 'message', e)}") from None


def _isdir(path: str) -> bool:
  return os.path.isdir(path) if _is_local(path) else tf.io.gfile.isdir(path)


def _subdirs(path: str) -> list[str]:
  return sorted(
      name.rstrip("/") for name in _listdir(path)
      if not _is_hidden(name) and _isdir(posixpath.join(path, name.rstrip("/"))))


def walk(top: str) -> Iterator[tuple[str, list[str], list[str]]]:
  """(folder, subfolders, files) under `top`, top-down, like tf.io.gfile.walk;
  pruning the subfolder list in place skips them.

  Locally, links to folders are followed (a class folder may be a link), but
  a link back to a folder above it is reported as a file, not followed
  forever; broken links and link loops are files too, so the listing
  accounts for them and reading them gives the reason.
  """
  if not _is_local(top):
    yield from tf.io.gfile.walk(top)
    return
  yield from _walk_local(top.rstrip("/") or "/", frozenset())


def _walk_local(folder: str, above: frozenset) -> Iterator[tuple[str, list[str], list[str]]]:
  above = above | {os.path.realpath(folder)}
  try:
    entries = sorted(os.scandir(folder), key=lambda e: e.name)
  except OSError:  # unreadable: as os.walk, skip it
    return
  subdirs, files = [], []
  for entry in entries:
    try:
      is_dir = entry.is_dir()  # follows links; False for a broken one or a loop
    except OSError:
      is_dir = False
    if is_dir and os.path.realpath(entry.path) not in above:
      subdirs.append(entry.name)
    else:
      files.append(entry.name)
  yield folder, subdirs, files
  for name in subdirs:
    yield from _walk_local(os.path.join(folder, name), above)


@dataclasses.dataclass(frozen=True)
class Layout:
  """The shape of a data root, as the ExampleGen needs it."""
  has_split_folders: bool
  class_names: tuple[str, ...]  # label i is class_names[i], the same in every span
  spans: tuple[int, ...] = ()   # the spans used, oldest first; () without span folders
  split_dirs: tuple[str, ...] = ()  # every folder read (split folders, or class-folder roots)

  @property
  def has_spans(self) -> bool:
    return bool(self.spans)

  @property
  def newest_span(self) -> int | None:
    return self.spans[-1] if self.spans else None

  def split_patterns(self) -> dict[str, str]:
    """Input split name -> glob pattern relative to the data root (TFX's
    driver fingerprints the files they match: a changed span reruns ingestion)."""
    prefix = SPAN_GLOB + "/" if self.has_spans else ""
    if self.has_split_folders:
      return {s: f"{prefix}{s}/*/*" for s in SPLIT_FOLDERS}
    return {"all": f"{prefix}*/*"}

  def split_sources(self, data_root: str) -> dict[str, list[str]]:
    """Input split name -> the folders it reads: the newest span's test folder
    is the test split; older spans' test folders join training."""
    roots = ([posixpath.join(data_root, f"span-{n}") for n in self.spans] if self.spans
             else [data_root])
    if not self.has_split_folders:
      return {"all": roots}
    return {"train": [posixpath.join(r, "train") for r in roots]
                     + [posixpath.join(r, "test") for r in roots[:-1]],
            "validation": [posixpath.join(r, "validation") for r in roots],
            "test": [posixpath.join(roots[-1], "test")]}

  def spans_per_split(self) -> dict[str, list[int]]:
    """Which spans each output split holds, for the report."""
    spans = list(self.spans)
    return {"train": spans, "validation": spans, "test": spans[-1:]}


def select_spans(found: list[int], setting: str) -> list[int]:
  """data.spans: "all" (default), "latest", or N (the N most recent)."""
  if setting == "latest":
    return found[-1:]
  if setting == "all":
    return found
  return found[-int(setting):]


def _span_numbers(data_root: str, top: list[str]) -> list[int]:
  spans = []
  for name in top:
    if name.lower().startswith("span"):
      match = SPAN_DIR.match(name)
      if not match:
        raise DataLayoutError(f"Span folder names are span-<number>: "
                              f"{shown(posixpath.join(data_root, name))}")
      spans.append(int(match.group(1)))
  return sorted(spans)


def detect_layout(data_root: str, spans: str = "all") -> Layout:
  """Inspects `data_root` (local path or bucket URI) and checks it is usable."""
  if not tf.io.gfile.isdir(data_root):
    raise DataLayoutError(f"Data root not found or not a folder: {data_root}")
  selected = select_spans(_span_numbers(data_root, _subdirs(data_root)), spans)
  roots = [posixpath.join(data_root, f"span-{n}") for n in selected] or [data_root]
  has_split_folders = any(f in SPLIT_FOLDERS for f in _subdirs(roots[-1]))
  per_root = {}
  for root in roots:
    dirs = ([posixpath.join(root, s) for s in SPLIT_FOLDERS] if has_split_folders else [root])
    per_root[root] = (dirs, class_names(dirs))  # raises on missing/empty/too few classes
  names = per_root[roots[-1]][1]
  for root, (_, found) in per_root.items():
    if found != names:
      raise DataLayoutError(
          f"{root} has classes {', '.join(found)}, but {roots[-1]} has {', '.join(names)}: "
          "every span needs the same class folders (the label mapping must not change)")
  split_dirs = tuple(d for dirs, _ in per_root.values() for d in dirs)
  return Layout(has_split_folders, tuple(names), tuple(selected), split_dirs)


def sample_files(data_root: str, layout: Layout, count: int) -> list[str]:
  """Up to `count` photo paths spread evenly over the folders the run reads."""
  files = [f.path for split_dir in layout.split_dirs
           for f in list_split(data_root, split_dir, list(layout.class_names))[0]]
  step = max(1, len(files) // count)
  return files[::step][:count]


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
  for name in names:
    if shown(name) != name:  # a class name is a label, stored and served as UTF-8
      raise DataLayoutError(f"Class folder name is not valid UTF-8: "
                            f"{shown(posixpath.join(split_dirs[0], name))}; rename it")
  if len(names) < 2:
    raise DataLayoutError(
        f"Need at least two class folders, found {names or 'none'} in "
        f"{', '.join(split_dirs)}")
  for split_dir, found in per_split.items():
    for name in names:
      class_dir = posixpath.join(split_dir, name)
      if name not in found:
        raise DataLayoutError(f"Class folder missing: {class_dir}")
      if not any(not _is_hidden(f) for f in _listdir(class_dir)):
        raise DataLayoutError(f"Class folder is empty: {class_dir}")
  return names


def _relative(data_root: str, path: str) -> str:
  """How the report names the file: relative to the root, printable."""
  root = data_root.rstrip("/") + "/"
  return shown(path[len(root):] if path.startswith(root) else path)


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
  for dirpath, subdirs, filenames in walk(split_dir):
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
  for dirpath, subdirs, filenames in walk(data_root):
    dirpath = dirpath.rstrip("/")
    if dirpath in skip:  # a flat layout: the root is the split folder
      break
    subdirs[:] = [d for d in subdirs if posixpath.join(dirpath, d.rstrip("/")) not in skip]
    outside += [_relative(data_root, posixpath.join(dirpath, f)) for f in filenames]
  return sorted(outside)


# With the hash split (8:1:1 by default), a class of n photos leaves its
# validation share (1/10) empty with probability 0.9^n: 12% at 20, 0.5% at 50.
PHOTOS_FOR_HASH_SPLIT = 50


class ThinDataError(DataLayoutError):
  """The photos that came through ingestion cannot train or judge a model.
  `report`: the ingestion report (counts, rejections), to show why."""

  def __init__(self, message: str, report: dict | None = None):
    super().__init__(message)
    self.report = report or {}


def thin_data_problem(counts: dict[str, dict[str, int]], split_folders: bool = False
                      ) -> str | None:
  """Why these examples (split -> class -> count) are too thin to train and
  judge a model, in one line, or None.

  Every class needs a usable photo, and every split one of every class: with
  no validation photos training cannot stop early or pick its epoch (and
  fails); with none of a class in test, its recall is undefined and the
  model can never be blessed. `split_folders`: the user's own folders (the
  fix is there), not the hash split (the fix is more photos or own folders).
  """
  classes = sorted({name for per_class in counts.values() for name in per_class})
  totals = {name: sum(per_class.get(name, 0) for per_class in counts.values())
            for name in classes}
  unusable = [name for name in classes if not totals[name]]
  if unusable:
    return (f"No usable photo of {_classes(unusable)}: every file in its folder was rejected "
            "(see the reasons in the ingestion report); add photos that are JPEG, PNG, GIF, "
            "BMP, HEIC/HEIF, WebP or TIFF")
  for split, per_class in counts.items():
    missing = [name for name in classes if not per_class.get(name)]
    if not missing:
      continue
    if split_folders:
      return (f"The {split} split has no usable photo of {_classes(missing)}: add photos to "
              f"its {split}/<class> folder")
    have = ", ".join(f"{name} {totals[name]}" for name in missing)
    return (f"The {split} split got no photo of {_classes(missing)} ({have} photos in all, "
            f"split by a hash of the file name): add photos, at least "
            f"{PHOTOS_FOR_HASH_SPLIT} per class, or split them yourself into "
            "train/validation/test folders")
  return None


def _classes(names: list[str]) -> str:
  return ("class " if len(names) == 1 else "classes ") + ", ".join(names)


def read_file(listed: ListedFile) -> bytes:
  """The file's bytes. A file that cannot be a photo because of what it is on
  disk raises RejectedImage with the reason: a name that is not UTF-8 (it
  could not be named in the examples or the report), a broken link, a link
  loop, a named pipe or device. Other read errors (OSError, tf.errors.OpError) propagate."""
  from components.image_example_gen.images import RejectedImage
  path = listed.path
  if _is_local(path):
    if shown(path) != path:
      raise RejectedImage(f"file name is not valid UTF-8 ({posixpath.basename(shown(path))}); "
                          "rename it")
    if os.path.islink(path):
      try:
        os.stat(path)
      except OSError as e:
        if e.errno == errno.ELOOP:
          raise RejectedImage("symbolic link loop: following it never reaches a file") from None
        raise RejectedImage(f"broken symbolic link: it points to {shown(os.readlink(path))}, "
                            "which does not exist") from None
      if os.path.isdir(path):
        raise RejectedImage("symbolic link loop: it points back to a folder it is in") from None
    # A named pipe or a device would block the read forever, or never end.
    if not os.path.isfile(path):
      raise RejectedImage("not a regular file (a named pipe, socket or device)")
  with tf.io.gfile.GFile(path, "rb") as f:
    return f.read()
