"""The ImageExampleGen executor on real Beam: records, labels, report."""
import json
import pathlib

import pytest
import tensorflow as tf
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import proto_utils

from components.image_example_gen.component import Driver, ImageExampleGen
from components.data_facts import labels_path, report_path
from components.image_example_gen.executor import Executor
from components.image_example_gen.layout import ThinDataError
from conftest import SHARED_DATA, make_dataset, requires_shared

pytestmark = pytest.mark.slow  # Beam runs of the ingestion executor (make test-fast leaves them out)

SPEC = {k: tf.io.FixedLenFeature([], t) for k, t in
        [("label", tf.int64), ("class_name", tf.string), ("path", tf.string),
         ("image_raw", tf.string), ("format", tf.string), ("height", tf.int64),
         ("width", tf.int64)]}


def ingest(data_root, out_dir, ratios=None, beam_args=("--direct_num_workers=1",),
           read_back=True, spans="all", stop_when_thin=False, driver=True):
  """Runs the component's executor as the orchestrator would; returns (report, records).

  The tiny sets tests use are often too thin for a run (a split without a
  class): ingestion then raises ThinDataError once all is written, and unless
  `stop_when_thin`, what it wrote is read back anyway. `driver=False` skips
  the driver's fingerprint of the input files, to test the executor alone.
  """
  component = ImageExampleGen(str(data_root), ratios or {"train": 8, "validation": 1, "test": 1},
                              1024, spans)
  examples = standard_artifacts.Examples()
  examples.uri = str(out_dir)
  exec_properties = {k: proto_utils.proto_to_json(v) if hasattr(v, "DESCRIPTOR") else v
                     for k, v in component.exec_properties.items()}
  # As the orchestrator does: the driver fingerprints the input files.
  if driver:
    exec_properties = Driver(None).resolve_exec_properties(exec_properties, None, None)
  try:
    Executor(Executor.Context(beam_pipeline_args=list(beam_args), tmp_dir=str(out_dir) + "_tmp")
             ).Do({}, {"examples": [examples]}, exec_properties)
  except ThinDataError:
    if stop_when_thin:
      raise
  records = {}
  for split in artifact_utils.decode_split_names(examples.split_names) if read_back else []:
    files = tf.io.gfile.glob(str(pathlib.Path(out_dir) / f"Split-{split}" / "*.gz"))
    records[split] = [tf.io.parse_single_example(r, SPEC)
                      for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
  with open(report_path(str(out_dir))) as f:
    return json.load(f), records, examples


def test_split_folders_bad_files_are_listed_and_counts_add_up(tmp_path):
  root = make_dataset(tmp_path / "photos", {"train": 4, "validation": 2, "test": 2})
  bad = {"train/cats/empty.jpg": b"", "train/dogs/text.jpg": b"just text",
         "validation/cats/cut.jpg": (root / "train/cats/cats.0.jpg").read_bytes()[:300]}
  for rel, data in bad.items():
    (root / rel).write_bytes(data)
  (root / "train" / "README.txt").write_text("outside class folders")
  (root / "train" / "dogs" / ".hidden.jpg").write_bytes(b"x")

  report, records, examples = ingest(root, tmp_path / "out")

  assert {r["path"] for r in report["rejected"]} == set(bad)
  assert all(r["reason"] for r in report["rejected"])
  assert sorted(report["ignored"]) == ["train/README.txt", "train/dogs/.hidden.jpg"]
  on_disk = sum(1 for p in root.rglob("*") if p.is_file())
  assert report["num_examples"] + report["num_rejected"] + report["num_ignored"] == on_disk
  assert {s: len(r) for s, r in records.items()} == {"train": 8, "validation": 4, "test": 4}
  assert report["examples"]["train"] == {"cats": 4, "dogs": 4}
  assert examples.get_int_custom_property("num_rejected") == 3


def test_labels_are_sorted_class_names_identical_in_every_split(tmp_path):
  root = make_dataset(tmp_path / "photos", {"train": 3, "validation": 2, "test": 2})
  report, records, _ = ingest(root, tmp_path / "out")
  with open(labels_path(str(tmp_path / "out"))) as f:
    assert json.load(f)["class_names"] == ["cats", "dogs"]
  for split_records in records.values():
    for r in split_records:
      name = r["class_name"].numpy().decode()
      assert r["label"].numpy() == ["cats", "dogs"].index(name)
      assert r["path"].numpy().decode().split("/")[1] == name  # split/class/file
      assert tf.io.decode_image(r["image_raw"]).shape[-1] == 3


def test_classes_are_mixed_in_the_written_records(tmp_path):
  # Written class by class, one class alone would fill the Trainer's shuffle
  # buffer once a dataset outgrows it, and training would see one class at a time.
  import itertools
  root = make_dataset(tmp_path / "photos", {"train": 40, "validation": 1, "test": 1})
  _, records, _ = ingest(root, tmp_path / "out")
  labels = [int(r["label"]) for r in records["train"]]
  runs = [len(list(run)) for _, run in itertools.groupby(labels)]
  assert len(labels) == 80 and len(runs) > 20 and max(runs) < 10


def test_hash_split_is_stable_and_follows_the_ratios(tmp_path):
  root = make_dataset(tmp_path / "photos", {"all": 30}, splits=False)
  ratios = {"train": 6, "validation": 2, "test": 2}
  _, first, _ = ingest(root, tmp_path / "a", ratios)
  _, second, _ = ingest(root, tmp_path / "b", ratios)
  paths = {s: sorted(r["path"].numpy() for r in recs) for s, recs in first.items()}
  assert paths == {s: sorted(r["path"].numpy() for r in recs) for s, recs in second.items()}
  assert sum(map(len, paths.values())) == 60
  assert 24 <= len(paths["train"]) <= 48 and paths["validation"] and paths["test"]


def _spans_of(records) -> dict[str, set[str]]:
  return {split: {r["path"].numpy().decode().split("/")[0] for r in recs}
          for split, recs in records.items()}


def test_spans_all_latest_and_n_with_the_newest_span_as_test(tmp_path):
  root = tmp_path / "photos"
  for n in (1, 2, 3):
    make_dataset(root / f"span-{n}", {"train": 2, "validation": 1, "test": 1}, variant=str(n))
  report, records, examples = ingest(root, tmp_path / "all")
  assert _spans_of(records) == {"train": {"span-1", "span-2", "span-3"},
                                "validation": {"span-1", "span-2", "span-3"}, "test": {"span-3"}}
  # Older spans' test photos train: nothing is left out.
  assert {s: len(r) for s, r in records.items()} == {"train": 16, "validation": 6, "test": 2}
  assert report["spans"] == {"train": [1, 2, 3], "validation": [1, 2, 3], "test": [3]}
  assert examples.span == 3 and report["num_ignored"] == 0

  report, records, _ = ingest(root, tmp_path / "latest", spans="latest")
  assert _spans_of(records) == {"train": {"span-3"}, "validation": {"span-3"}, "test": {"span-3"}}
  assert report["num_ignored"] == 16  # the older spans' files, listed
  _, records, _ = ingest(root, tmp_path / "two", spans="2")
  assert _spans_of(records)["validation"] == {"span-2", "span-3"}


def test_flat_spans_keep_only_the_newest_span_in_test(tmp_path):
  root = tmp_path / "photos"
  for n in (1, 2):
    make_dataset(root / f"span-{n}", {"all": 10}, splits=False, variant=str(n))
  report, records, _ = ingest(root, tmp_path / "out", ratios={"train": 4, "validation": 3,
                                                              "test": 3})
  spans = _spans_of(records)
  assert spans["test"] == {"span-2"} and spans["train"] == {"span-1", "span-2"}
  assert report["num_examples"] == 40


def _every_path_once(report, records, data_root):
  written = [r["path"].numpy().decode() for split in records.values() for r in split]
  rejected = [r["path"] for r in report["rejected"]]
  on_disk = sorted(str(p.relative_to(data_root)) for p in data_root.rglob("*") if p.is_file())
  return sorted(written + rejected) == on_disk


def test_parallel_reads_lose_nothing_run_after_run(tmp_path):
  """Ingestion reads on a thread per core; Beam's multi-threading mode once
  lost a record per run without an error. Every file, every time."""
  root = make_dataset(tmp_path / "photos", {"all": 150}, splits=False)
  (root / "cats" / "broken.jpg").write_bytes(b"not a photo")
  (root / "dogs" / "copy.jpg").write_bytes((root / "dogs" / "dogs.3.jpg").read_bytes())
  splits = []
  for attempt in range(3):
    report, records, _ = ingest(root, tmp_path / f"out{attempt}", beam_args=())
    assert _every_path_once(report, records, root)
    assert report["num_rejected"] == 2
    splits.append({s: sorted(r["path"].numpy() for r in rs) for s, rs in records.items()})
  assert splits[0] == splits[1] == splits[2]  # the hash split does not depend on timing


@requires_shared()
def test_real_photos_are_all_ingested_run_after_run(tmp_path):
  for attempt in range(2):
    report, records, _ = ingest(SHARED_DATA, tmp_path / f"out{attempt}", beam_args=())
    assert {s: len(r) for s, r in records.items()} == {
        "train": 2000, "validation": 500, "test": 500}
    assert report["num_rejected"] == 0 and report["num_ignored"] == 0
    assert _every_path_once(report, records, SHARED_DATA)


def test_records_lost_in_beam_stop_the_run(tmp_path, monkeypatch):
  from components.image_example_gen import executor
  root = make_dataset(tmp_path / "photos", {"train": 3, "validation": 1, "test": 1})
  count_labels = executor._count_labels

  def one_record_short(split_uri, class_names):  # as if a shard had lost a record
    counts = count_labels(split_uri, class_names)
    if split_uri.endswith("Split-train"):
      counts["cats"] -= 1
    return counts

  monkeypatch.setattr(executor, "_count_labels", one_record_short)
  with pytest.raises(executor.IngestionIncompleteError, match="10 image files were listed"
                     ".*9 examples were written and 0 files rejected: 1 went missing"):
    ingest(root, tmp_path / "out")


def test_camera_names_ingested_extreme_shapes_and_conflicting_labels_rejected(tmp_path):
  from conftest import CLASS_COLORS, image_bytes
  root = make_dataset(tmp_path / "photos", {"all": 6}, splits=False)
  (root / "cats" / "_DSC0001.JPG").write_bytes(image_bytes(CLASS_COLORS["cats"], seed=99))
  (root / "dogs" / "strip.png").write_bytes(image_bytes((0, 0, 0), size=(30000, 9), fmt="PNG"))
  both = image_bytes((128, 128, 128), seed=7)  # one photo filed under both classes
  (root / "cats" / "grey.jpg").write_bytes(both)
  (root / "dogs" / "grey.jpg").write_bytes(both)
  (root / "dogs" / "x-copy.jpg").write_bytes((root / "dogs" / "dogs.0.jpg").read_bytes())
  # The same pixels with a comment added (as photo tools add metadata): other bytes.
  original = (root / "cats" / "cats.1.jpg").read_bytes()
  comment = b"edited"
  (root / "cats" / "z-tagged.jpg").write_bytes(
      original[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + original[2:])
  (root / "Thumbs.db").write_bytes(b"x")

  report, records, _ = ingest(root, tmp_path / "out")

  paths = {r["path"].numpy().decode() for split in records.values() for r in split}
  assert "cats/_DSC0001.JPG" in paths
  reasons = {r["path"]: r["reason"] for r in report["rejected"]}
  assert set(reasons) == {"dogs/strip.png", "cats/grey.jpg", "dogs/grey.jpg", "dogs/x-copy.jpg",
                          "cats/z-tagged.jpg"}
  assert reasons["dogs/strip.png"].startswith("extreme aspect ratio 30000x9")
  assert reasons["cats/grey.jpg"] == ("conflicting labels: the same photo is filed under "
                                      "cats and dogs (also dogs/grey.jpg)")
  assert reasons["dogs/x-copy.jpg"] == "duplicate of dogs/dogs.0.jpg (same bytes)"
  assert reasons["cats/z-tagged.jpg"] == "duplicate of cats/cats.1.jpg (same pixels, another file)"
  assert report["num_conflicting"] == 2
  assert report["ignored"] == ["Thumbs.db"]
  assert report["num_examples"] == len(paths) == 13  # 6 + 6 + _DSC0001 ; all else accounted for


def test_every_file_on_disk_is_an_example_a_rejection_or_ignored(tmp_path):
  root = tmp_path / "photos"
  make_dataset(root / "span-1", {"all": 1}, splits=False)  # an older span: ignored (latest)
  make_dataset(root / "span-2", {"train": 2, "validation": 1, "test": 1})
  stray = {  # a file at every level of the tree
      "README.md": "ignored", ".DS_Store": "ignored", "span-1/notes.txt": "ignored",
      "span-2/README.txt": "ignored", "span-2/extra/list.csv": "ignored",
      "span-2/train/README.txt": "ignored", "span-2/test/Thumbs.db": "ignored",
      "span-2/train/cats/.DS_Store": "ignored", "span-2/train/cats/nested/deep.jpg": "ignored",
      "span-2/train/dogs/notes.txt": "rejected"}
  for rel in stray:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text("not a photo")

  report, _, _ = ingest(root, tmp_path / "out", spans="latest")

  assert report["num_examples"] == 8
  assert [r["path"] for r in report["rejected"]] == ["span-2/train/dogs/notes.txt"]
  assert report["ignored"] == sorted(
      [rel for rel, fate in stray.items() if fate == "ignored"]
      + ["span-1/cats/cats.0.jpg", "span-1/dogs/dogs.0.jpg"])
  on_disk = sum(1 for p in root.rglob("*") if p.is_file())
  assert report["num_examples"] + report["num_rejected"] + report["num_ignored"] == on_disk


def test_odd_files_are_rejections_with_their_reason_and_the_run_goes_on(tmp_path):
  """A broken link, a link loop and a name that is not UTF-8 each stopped the run."""
  import os
  from test_layout import _odd_files
  root = make_dataset(tmp_path / "photos", {"train": 3, "validation": 1, "test": 1})
  _odd_files(root / "train" / "cats")

  report, records, _ = ingest(root, tmp_path / "out", stop_when_thin=True)

  reasons = {r["path"]: r["reason"] for r in report["rejected"]}
  assert reasons == {
      "train/cats/dangling.jpg": f"broken symbolic link: it points to {root}/train/cats/gone.jpg, "
                                 "which does not exist",
      "train/cats/loop.jpg": "symbolic link loop: following it never reaches a file",
      "train/cats/again": "symbolic link loop: it points back to a folder it is in",
      "train/cats/caf\\xe9.jpg": "file name is not valid UTF-8 (caf\\xe9.jpg); rename it"}
  assert {s: len(r) for s, r in records.items()} == {"train": 6, "validation": 2, "test": 2}
  assert len(os.listdir(root / "train" / "cats")) == 3 + len(reasons)  # each one accounted for


def test_a_class_with_no_usable_photo_stops_with_the_counts_written(tmp_path):
  """A class folder of .txt files trained as "dogs 0" everywhere, and ended NOT BLESSED."""
  root = make_dataset(tmp_path / "photos", {"train": 3, "validation": 1, "test": 1},
                      classes=("cats",))
  for split in ("train", "validation", "test"):
    (root / split / "dogs").mkdir()
    (root / split / "dogs" / "notes.txt").write_text("not a photo")

  with pytest.raises(ThinDataError, match="^No usable photo of class dogs: every file in its "
                                          "folder was rejected"):
    ingest(root, tmp_path / "out", stop_when_thin=True)

  with open(report_path(str(tmp_path / "out"))) as f:  # written first, to show why
    report = json.load(f)
  assert report["examples"]["train"] == {"cats": 3, "dogs": 0}
  assert report["num_rejected"] == 3


def test_an_empty_validation_split_stops_before_the_trainer(tmp_path):
  """All validation photos rejected: the Trainer failed with KeyError: 'val_loss'."""
  root = make_dataset(tmp_path / "photos", {"train": 3, "validation": 1, "test": 1})
  for photo in (root / "validation").glob("*/*.jpg"):
    photo.write_bytes(photo.read_bytes()[:200])  # truncated
  with pytest.raises(ThinDataError, match="^The validation split has no usable photo of classes "
                                          "cats, dogs: add photos to its validation/<class>"):
    ingest(root, tmp_path / "out", stop_when_thin=True)
