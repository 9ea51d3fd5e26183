"""Folder layouts the ingestion accepts, and the errors that stop a run at once."""
import pytest

from components.image_example_gen.layout import DataLayoutError, detect_layout, list_split
from conftest import make_dataset


def test_split_folders(tmp_path):
  root = make_dataset(tmp_path, {"train": 2, "validation": 1, "test": 1})
  layout = detect_layout(str(root))
  assert layout.has_split_folders and not layout.has_spans
  assert layout.class_names == ("cats", "dogs")
  assert layout.split_patterns() == {
      "train": "train/*/*", "validation": "validation/*/*", "test": "test/*/*"}


def test_flat_class_folders(tmp_path):
  root = make_dataset(tmp_path, {"all": 3}, splits=False)
  layout = detect_layout(str(root))
  assert not layout.has_split_folders
  assert layout.split_patterns() == {"all": "*/*"}


def test_spans_all_latest_or_the_n_newest(tmp_path):
  for n in (1, 2, 10):
    make_dataset(tmp_path / f"span-{n}", {"train": 1, "validation": 1, "test": 1})
  layout = detect_layout(str(tmp_path))
  assert layout.spans == (1, 2, 10) and layout.newest_span == 10  # numeric order
  assert layout.split_patterns()["train"] == "span-*/train/*/*"
  sources = layout.split_sources(str(tmp_path))
  assert sources["test"] == [f"{tmp_path}/span-10/test"]
  assert sources["train"] == [f"{tmp_path}/span-{n}/train" for n in (1, 2, 10)] + [
      f"{tmp_path}/span-{n}/test" for n in (1, 2)]
  assert detect_layout(str(tmp_path), "latest").spans == (10,)
  assert detect_layout(str(tmp_path), "2").spans == (2, 10)
  assert detect_layout(str(tmp_path), "5").spans == (1, 2, 10)


def test_a_span_with_other_classes_stops_naming_it(tmp_path):
  make_dataset(tmp_path / "span-1", {"all": 2}, splits=False)
  make_dataset(tmp_path / "span-2", {"all": 2}, splits=False, classes=("cats", "dogs", "birds"))
  with pytest.raises(DataLayoutError, match=r"span-1 has classes cats, dogs, but .*span-2 has "
                                            r"birds, cats, dogs"):
    detect_layout(str(tmp_path))
  assert detect_layout(str(tmp_path), "latest").class_names == ("birds", "cats", "dogs")


def test_a_span_folder_must_be_numbered(tmp_path):
  make_dataset(tmp_path / "span-1", {"all": 2}, splits=False)
  make_dataset(tmp_path / "span-two", {"all": 2}, splits=False)
  with pytest.raises(DataLayoutError, match=r"span-<number>: .*span-two"):
    detect_layout(str(tmp_path))


def test_missing_root_names_the_path(tmp_path):
  with pytest.raises(DataLayoutError, match=str(tmp_path / "nope")):
    detect_layout(str(tmp_path / "nope"))


def test_empty_class_names_the_folder(tmp_path):
  root = make_dataset(tmp_path, {"all": 2}, splits=False)
  (root / "birds").mkdir()
  with pytest.raises(DataLayoutError, match=r"empty: .*birds"):
    detect_layout(str(root))


def test_a_single_class_is_not_enough(tmp_path):
  root = make_dataset(tmp_path, {"all": 2}, splits=False, classes=("cats",))
  with pytest.raises(DataLayoutError, match="at least two class folders"):
    detect_layout(str(root))


def test_class_missing_from_one_split_names_it(tmp_path):
  root = make_dataset(tmp_path, {"train": 2, "validation": 1, "test": 1})
  for f in (root / "test" / "dogs").iterdir():
    f.unlink()
  (root / "test" / "dogs").rmdir()
  with pytest.raises(DataLayoutError, match=r"missing: .*test/dogs"):
    detect_layout(str(root))


def test_hidden_and_stray_files_are_ignored_and_listed(tmp_path):
  root = make_dataset(tmp_path, {"all": 2}, splits=False)
  (root / "cats" / ".DS_Store").write_bytes(b"x")
  (root / "notes.txt").write_text("stray")
  (root / "cats" / "nested").mkdir()
  (root / "cats" / "nested" / "deep.jpg").write_bytes(b"x")
  files, ignored = list_split(str(root), str(root), ["cats", "dogs"])
  assert len(files) == 4
  assert sorted(ignored) == ["cats/.DS_Store", "cats/nested/deep.jpg", "notes.txt"]


def test_files_outside_the_split_folders_are_found_at_every_level(tmp_path):
  from components.image_example_gen.layout import files_outside
  make_dataset(tmp_path / "span-1", {"all": 1}, splits=False)
  make_dataset(tmp_path / "span-2", {"train": 1, "validation": 1, "test": 1})
  for rel in ("README.md", ".DS_Store", "span-2/notes.txt", "span-2/extra/x.txt"):
    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / rel).write_text("x")
  layout = detect_layout(str(tmp_path), "latest")
  assert files_outside(str(tmp_path), list(layout.split_dirs)) == [
      ".DS_Store", "README.md", "span-1/cats/cats.0.jpg", "span-1/dogs/dogs.0.jpg",
      "span-2/extra/x.txt", "span-2/notes.txt"]
  flat = make_dataset(tmp_path / "flat", {"all": 1}, splits=False)
  assert files_outside(str(flat), [str(flat)]) == []  # list_split covers the whole root


def _odd_files(folder):
  """A broken link, a link loop, a link back to its own folder and a name that
  is not UTF-8 (Latin-1 "café.jpg", as an old camera or a Windows zip writes it)."""
  import os
  os.symlink(folder / "gone.jpg", folder / "dangling.jpg")
  os.symlink(folder / "loop.jpg", folder / "loop.jpg")
  os.symlink(folder, folder / "again")
  photo = next(folder.glob("*.jpg")).read_bytes()
  fd = os.open(os.fsencode(folder) + b"/caf\xe9.jpg", os.O_WRONLY | os.O_CREAT)
  os.write(fd, photo)
  os.close(fd)


def test_odd_files_are_listed_and_each_read_gives_its_reason(tmp_path):
  from components.image_example_gen.images import RejectedImage
  from components.image_example_gen.layout import read_file
  root = make_dataset(tmp_path, {"all": 2}, splits=False)
  _odd_files(root / "cats")
  (root / "cats" / "nested").mkdir()
  (root / "cats" / "nested" / "up").symlink_to(root)  # nested: ignored, never followed
  import os
  os.mkfifo(root / "cats" / "pipe.jpg")  # reading it would wait forever

  layout = detect_layout(str(root))
  files, ignored = list_split(str(root), str(root), list(layout.class_names))

  reasons = {}
  for listed in files:
    try:
      read_file(listed)
    except RejectedImage as e:
      reasons[listed.relative_path] = str(e)
  assert reasons == {
      "cats/dangling.jpg": f"broken symbolic link: it points to {root}/cats/gone.jpg, "
                           "which does not exist",
      "cats/loop.jpg": "symbolic link loop: following it never reaches a file",
      "cats/again": "symbolic link loop: it points back to a folder it is in",
      "cats/caf\\xe9.jpg": "file name is not valid UTF-8 (caf\\xe9.jpg); rename it",
      "cats/pipe.jpg": "not a regular file (a named pipe, socket or device)",
  }
  assert len(files) == 4 + 5 and ignored == ["cats/nested/up"]
  from components.image_example_gen.layout import files_outside
  assert files_outside(str(tmp_path), [str(root / "dogs")]) == sorted(
      ["cats/cats.0.jpg", "cats/cats.1.jpg", "cats/dangling.jpg", "cats/loop.jpg", "cats/again",
       "cats/caf\\xe9.jpg", "cats/pipe.jpg", "cats/nested/up"])


def test_a_class_folder_named_in_another_encoding_stops_naming_it(tmp_path):
  import os
  root = make_dataset(tmp_path, {"all": 2}, splits=False)
  os.rename(root / "dogs", os.fsencode(root) + b"/chiens-\xe9")
  with pytest.raises(DataLayoutError, match=r"Class folder name is not valid UTF-8: "
                                            r".*chiens-\\xe9; rename it"):
    detect_layout(str(root))


@pytest.mark.parametrize("counts, split_folders, message", [
    # A class folder holding only .txt files: every file rejected.
    ({"train": {"cats": 8, "dogs": 0}, "validation": {"cats": 1, "dogs": 0},
      "test": {"cats": 1, "dogs": 0}}, False,
     "No usable photo of class dogs: every file in its folder was rejected"),
    # 20 photos a class, hash-split 8:1:1: none of cats in validation.
    ({"train": {"cats": 18, "dogs": 16}, "validation": {"cats": 0, "dogs": 2},
      "test": {"cats": 2, "dogs": 2}}, False,
     "The validation split got no photo of class cats (cats 20 photos in all, split by a hash "
     "of the file name): add photos, at least 50 per class, or split them yourself into "
     "train/validation/test folders"),
    ({"train": {"a": 5, "b": 5, "c": 5}, "validation": {"a": 1, "b": 1, "c": 1},
      "test": {"a": 0, "b": 1, "c": 0}}, False, "The test split got no photo of classes a, c"),
    # An empty validation folder (its photos all rejected): the Trainer had no val_loss.
    ({"train": {"cats": 4, "dogs": 4}, "validation": {"cats": 0, "dogs": 0},
      "test": {"cats": 1, "dogs": 1}}, True,
     "The validation split has no usable photo of classes cats, dogs: add photos to its "
     "validation/<class> folder"),
])
def test_data_too_thin_to_judge_is_one_line_saying_what_would_fix_it(counts, split_folders,
                                                                      message):
  from components.image_example_gen.layout import thin_data_problem
  problem = thin_data_problem(counts, split_folders)
  assert problem is not None and problem.startswith(message), problem
  assert "\n" not in problem


def test_one_photo_of_each_class_in_each_split_is_enough():
  from components.image_example_gen.layout import thin_data_problem
  assert thin_data_problem({"train": {"cats": 3, "dogs": 3}, "validation": {"cats": 1, "dogs": 1},
                            "test": {"cats": 1, "dogs": 1}}) is None
