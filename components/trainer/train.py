"""The Trainer's run_fn: the two-phase fine-tune, then the export.

Phase 1 trains a new head on the frozen base. Phase 2 unfreezes the top of
the base and continues at a low learning rate, so the pretrained features
adapt without being wrecked. Both phases write one history.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time

import components  # noqa: F401  (selects Keras 2 before TensorFlow loads)

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tfx.components.trainer.fn_args_utils import FnArgs

from components import progress
from components import data_facts
from components.data_facts import report_path
from components.train_settings import TrainConfig
from components.trainer import model as model_lib
from components.trainer import tflite
from components.trainer.signatures import export_serving_model
from components.transform import IMAGE_KEY, LABEL_KEY, TRANSFORMED_IMAGE_KEY

HISTORY_FILE = "history.json"
SUMMARY_FILE = "training_summary.json"
# What each phase's early stopping watches and keeps the best epoch by.
# Phase 1 (a small head on fixed features): validation loss, the smoother
# signal; on cats vs dogs it chose better heads than accuracy did. Phase 2
# (the base unfrozen, cosine schedule): validation accuracy, what blessing
# judges. Its loss turns up as the model grows confident while accuracy still
# climbs: on the flowers photos the lowest loss came 3 epochs before the best
# accuracy (0.715 vs 0.750). Phase 2's model replaces phase 1's only if more
# accurate on validation.
MONITORS = {1: ("val_loss", "min"), 2: ("val_accuracy", "max")}
PARALLEL_CALLS = os.cpu_count() or 2
# The training shuffle's buffer: up to SHUFFLE_BUFFER decoded photos, and no
# more than SHUFFLE_BUFFER_BYTES of them (uint8; 2,133 at 256 px, all of
# cats vs dogs' 2,000): at 20,000 photos 4,096 held 805 MB. Ingestion writes
# the photos in random order, so a window of them still mixes the classes.
SHUFFLE_BUFFER = 4096
SHUFFLE_BUFFER_BYTES = 400 * 2**20
# Phase 2 computes each batch's gradients in micro-batches of at most this
# many layer-output values (model.micro_batch_train_step): the update of the
# whole batch, for the activations of a micro-batch. 8 photos of the whole
# MobileNetV2 at 256 px (29.5 M values each); from block 6 up, a whole batch.
PHASE2_MICRO_BATCH_VALUES = 8 * 29_500_000


def micro_batch_size(model: keras.Model, batch_size: int) -> int:
  return max(1, min(batch_size, PHASE2_MICRO_BATCH_VALUES // model_lib.activation_values(model)))


def shuffle_buffer(train_config: TrainConfig) -> int:
  """Photos the training shuffle holds at once, at the training size."""
  side = train_config.image_size
  return max(1, min(SHUFFLE_BUFFER, SHUFFLE_BUFFER_BYTES // (side * side * 3)))


def _fixed_parallelism() -> tf.data.Options:
  """tf.data options without autotuning, and with every core for each op.

  The autotuning thread sleeps up to a minute between rounds, and destroying
  an iterator waits for it to wake. Keras makes new iterators every epoch, so
  this cost 10-60 s per training phase here; fixed parallelism costs nothing.
  Unset, ops inside a tf.data function (the base model in the feature pass
  and phase 2's views) ran on one core of two: 2,000 training photos through
  MobileNetV2 at 256 px took 55 s (1.1 cores busy); 0, the runtime's own
  thread count, 37 s (1.85 cores), as fast as calling the model outside tf.data.
  """
  options = tf.data.Options()
  options.autotune.enabled = False
  options.threading.max_intra_op_parallelism = 0
  return options


def make_dataset(file_patterns: list[str], tf_transform_output: tft.TFTransformOutput,
                 train_config: TrainConfig, num_classes: int, training: bool,
                 cache_path: str = "", shuffle: bool | None = None) -> tf.data.Dataset:
  """Raw records -> (float pixels, label) batches, via the Transform graph.

  With `cache_path`, decoded photos are cached in files there (uint8): each is
  decoded once, not every epoch, and memory stays bounded however many there are.
  `shuffle` (default: `training`) shuffles the photos every epoch, through a
  buffer of shuffle_buffer() decoded photos (393 MB for 2,000 at 256 px).
  """
  files = [f for pattern in file_patterns for f in tf.io.gfile.glob(pattern)]
  raw_spec = {k: v for k, v in tf_transform_output.raw_feature_spec().items()
              if k in (IMAGE_KEY, LABEL_KEY)}
  tft_layer = tf_transform_output.transform_features_layer()

  def transform(serialized):
    out = tft_layer(tf.io.parse_example(serialized, raw_spec))
    # uint8 holds the rounded pixels exactly and caches in a quarter of the memory.
    return tf.cast(out[TRANSFORMED_IMAGE_KEY], tf.uint8), out[LABEL_KEY]

  dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
  if training and train_config.max_train_examples:
    # Records are not in random order (a shard may hold one class): sample, don't truncate.
    dataset = (dataset.shuffle(20000, seed=train_config.seed, reshuffle_each_iteration=False)
               .take(train_config.max_train_examples))
  dataset = (dataset.batch(64)
             .map(transform, num_parallel_calls=PARALLEL_CALLS)
             .unbatch())
  if cache_path:
    dataset = dataset.cache(cache_path)
  if training if shuffle is None else shuffle:
    dataset = dataset.shuffle(shuffle_buffer(train_config), seed=train_config.seed,
                              reshuffle_each_iteration=True)

  def to_model_inputs(images, labels):
    images = tf.cast(images, tf.float32)
    if num_classes == 2:
      return images, tf.cast(tf.reshape(labels, [-1, 1]), tf.float32)
    return images, labels

  return (dataset.batch(train_config.batch_size)
          .map(to_model_inputs, num_parallel_calls=PARALLEL_CALLS)
          .prefetch(2)
          .with_options(_fixed_parallelism()))


class EpochRecorder(keras.callbacks.Callback):
  """Appends one row per epoch (metrics, phase, learning rate, seconds)."""

  def __init__(self, rows: list[dict], phase: int):
    super().__init__()
    self.rows, self.phase = rows, phase

  def on_epoch_begin(self, epoch, logs=None):
    self._start = time.time()

  def on_epoch_end(self, epoch, logs=None):
    self.rows.append({
        "epoch": epoch + 1, "phase": self.phase,
        **{k: float(v) for k, v in (logs or {}).items()},
        "learning_rate": float(keras.backend.get_value(self.model.optimizer.learning_rate)),
        "seconds": round(time.time() - self._start, 2),
    })


class EpochProgress(keras.callbacks.Callback):
  """Each epoch's batches as live progress, and its metrics as one line (components.progress)."""

  def __init__(self, phase: int, epochs: int, steps: int | None):
    super().__init__()
    self.phase, self.epochs, self.steps = phase, epochs, steps
    self._done = 0

  def on_epoch_begin(self, epoch, logs=None):
    self._began = time.time()
    self._task = f"Training phase {self.phase} epoch {self._done + 1}/{self.epochs}"
    progress.start(self._task, self.steps)

  def on_train_batch_end(self, batch, logs=None):
    progress.advance(self._task)

  def on_epoch_end(self, epoch, logs=None):
    self._done += 1
    metrics = "  ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items()
                        if k in ("loss", "accuracy", "val_loss", "val_accuracy"))
    progress.finish(self._task, f"{self._task}: {metrics}  ({time.time() - self._began:.0f}s)")


def count_trainable(model: keras.Model) -> int:
  return int(sum(tf.size(w).numpy() for w in model.trainable_weights))


def shuffled_order(count: int, train_config: TrainConfig) -> np.ndarray:
  """The order in which make_dataset's shuffle first yields `count` photos.

  It depends on the seed, the count and the buffer, not on the photos: the base
  features of photos read in file order, put in this order, are those of the
  shuffled photos, without holding the photos in a shuffle buffer.
  """
  indices = tf.data.Dataset.range(count).shuffle(shuffle_buffer(train_config),
                                                 seed=train_config.seed,
                                                 reshuffle_each_iteration=True)
  return np.fromiter(indices.as_numpy_iterator(), dtype=np.int64, count=count)


def _computed_once(batches: tf.data.Dataset, cache_dir: str,
                   name: str) -> tuple[tf.data.Dataset, int]:
  """Batches -> their examples, computed now and cached (on disk in
  `cache_dir`, else in memory), with their count."""
  examples = batches.unbatch().cache(cache_dir and os.path.join(cache_dir, name))
  return examples, sum(1 for _ in examples)  # reading it through fills the cache


def _in_memory(dataset: tf.data.Dataset, order: np.ndarray | None = None) -> tf.data.Dataset:
  """(features, label) examples -> the same, held in memory (5 KB a photo), in `order`."""
  rows, labels = (np.stack(column) for column in zip(*dataset.as_numpy_iterator()))
  if order is not None:
    rows, labels = rows[order], labels[order]
  return tf.data.Dataset.from_tensor_slices((rows, labels))


def feature_datasets(model: keras.Model, train_ds: tf.data.Dataset, val_ds: tf.data.Dataset,
                     train_config: TrainConfig, cache_dir: str = "", shuffle_train: bool = False,
                     cut: model_lib.Cut | None = None):
  """(pixels, label) batches -> (pooled base features, label) batches, and
  phase 2's first view of each photo.

  One pass of each split through the frozen base, so phase 1 costs about one
  epoch of inference however many epochs it runs. The price: phase 1 sees
  no augmentation; it trains only the small head, and phase 2 augments.
  `shuffle_train`: `train_ds` holds the photos in file order; their features
  take the order of the shuffled photos (shuffled_order). The features are
  held in memory (5 KB a photo).

  With `cut` (phase 2 may train the top of the base), the pass goes through
  the frozen blocks below it, keeps their output (float16, cached on disk
  in `cache_dir`, else in memory) and goes on to the features from there:
  phase 2's view of each photo as it is costs no second pass. Returns
  (train, validation, as_they_are): as_they_are is None without `cut`, else
  (train in file order, validation) examples of (frozen blocks' output, label).
  """
  if cut:
    def extract(images):
      activations = cut.lower(images, training=False)
      return cut.features(activations, training=False), tf.cast(activations, tf.float16)
  else:
    extractor = model_lib.feature_extractor(model)

    def extract(images):
      return (extractor(images, training=False),)

  def one_pass(dataset, name):
    examples, count = _computed_once(dataset.map(lambda images, labels: (extract(images), labels)),
                                     cache_dir, f"features-{name}")
    return examples, count, examples.map(lambda outputs, labels: (outputs[0], labels))

  began = time.time()
  train_pass, train_count, train = one_pass(train_ds, "train")
  val_pass, val_count, val = one_pass(val_ds, "validation")
  seconds = time.time() - began
  print(f"  base features of {train_count} training and {val_count} validation images "
        f"in {seconds:.0f} s ({(train_count + val_count) / seconds:.0f} images/s)", flush=True)
  train = _in_memory(train, shuffled_order(train_count, train_config) if shuffle_train else None)
  batch_size = train_config.batch_size
  # Features are small (5 KB a photo for MobileNetV2): the buffer holds up to 10,000.
  train = (train.shuffle(min(train_count, 10000), seed=train_config.seed,
                         reshuffle_each_iteration=True)
           .batch(batch_size).prefetch(2))
  val = _in_memory(val).batch(batch_size).prefetch(2)
  as_they_are = None
  if cut:
    as_they_are = tuple(examples.map(lambda outputs, labels: (outputs[1], labels))
                        for examples in (train_pass, val_pass))
  return (train.with_options(_fixed_parallelism()), val.with_options(_fixed_parallelism()),
          as_they_are)


def phase2_views(train_config: TrainConfig, augment) -> int:
  """Views of each photo phase 2 computes: unaugmented ones would be copies."""
  return train_config.phase2_views if augment else 1


def first_views(lower: keras.Model, train_photos: tf.data.Dataset, val_ds: tf.data.Dataset,
                cache_dir: str = "") -> tuple[tf.data.Dataset, tf.data.Dataset]:
  """Each photo as it is through the frozen blocks (float16, cached), where
  phase 1 did not already (train.phase1_on_features off)."""
  def through_lower(dataset, name):
    return _computed_once(dataset.map(lambda images, labels: (
        tf.cast(lower(images, training=False), tf.float16), labels)), cache_dir, name)[0]
  return through_lower(train_photos, "lower-train"), through_lower(val_ds, "lower-validation")


def lower_datasets(lower: keras.Model, augment, train_photos: tf.data.Dataset,
                   first: tuple[tf.data.Dataset, tf.data.Dataset], photo_count: int,
                   train_config: TrainConfig,
                   cache_dir: str = "") -> tuple[tf.data.Dataset, tf.data.Dataset]:
  """Phase 2's data: (frozen lower blocks' output, label) batches.

  Phase 2 then runs only the part of the base it trains, forward and
  backward, on each step. `first`: the output for each photo as it is
  (training photos in file order, and validation), from the base-feature
  pass (feature_datasets) or first_views, of `photo_count` training photos.
  The lower part runs here for the other train.phase2_views of each training
  photo, randomly augmented, once, instead of on freshly augmented photos
  every epoch; cached on disk like the photos, as float16. The training examples go through a shuffle; the
  batches repeat without end: an epoch is `steps` of them.
  """
  train, val = first
  views = phase2_views(train_config, augment)
  if views > 1:
    def augmented(images, labels):
      outputs = [lower(augment(images), training=False) for _ in range(views - 1)]
      return tf.cast(tf.concat(outputs, 0), tf.float16), tf.concat([labels] * (views - 1), 0)

    began = time.time()
    more, count = _computed_once(train_photos.map(augmented), cache_dir, "lower-augmented")
    print(f"  frozen blocks' output for {views - 1} augmented view(s) of "
          f"{count // (views - 1)} training images in {time.time() - began:.0f} s", flush=True)
    # Batch by batch of photos: those as they are, then their augmented views.
    size = train_config.batch_size  # that of train_photos' batches

    def joined(first, others):
      return tuple(tf.concat([a, b], 0) for a, b in zip(first, others))
    train = tf.data.Dataset.zip(train.batch(size), more.batch(size * (views - 1))).map(
        joined).unbatch()
  # As many as fit in the photo shuffle's memory (2 bytes a value), and no
  # more than there are: a larger buffer fills on with the next pass's
  # (cats vs dogs: 6,400 held 150 MB more than 4,000).
  values = lower.output.shape[1:].num_elements()
  buffer = max(1, min(photo_count * views, SHUFFLE_BUFFER_BYTES // (2 * values)))

  def to_float(activations, labels):
    return tf.cast(activations, tf.float32), labels

  batch_size = train_config.batch_size
  train = (train.shuffle(buffer, seed=train_config.seed, reshuffle_each_iteration=True)
           .repeat().batch(batch_size).map(to_float).prefetch(2))
  val = val.batch(batch_size).map(to_float).prefetch(2)
  return (train.with_options(_fixed_parallelism()), val.with_options(_fixed_parallelism()))


def _fit_phase(model, phase, epochs, train_ds, val_ds, rows, config, log_dir, steps,
               steps_per_epoch=None, baseline=None):
  """`baseline`: phase 2 stops after train.early_stopping_patience epochs
  unless it improves and beats this (phase 1's best), as it must to be exported."""
  start = len(rows)
  callbacks = [
      EpochRecorder(rows, phase),
      EpochProgress(phase, epochs, steps),
      keras.callbacks.EarlyStopping(monitor=MONITORS[phase][0], mode=MONITORS[phase][1],
                                    restore_best_weights=True, baseline=baseline,
                                    patience=config.early_stopping_patience),
      keras.callbacks.TensorBoard(log_dir=log_dir),
  ]
  model.fit(train_ds, validation_data=val_ds, initial_epoch=start, epochs=start + epochs,
            steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=2)


def _split_count(examples_uri: str, split: str) -> int:
  """Examples in a split, from the ingestion report."""
  with tf.io.gfile.GFile(report_path(examples_uri)) as f:
    return sum(json.load(f)["examples"][split].values())


def _train_count(examples_uri: str, config: TrainConfig) -> int:
  """Training examples per epoch."""
  count = _split_count(examples_uri, "train")
  return min(count, config.max_train_examples or count)


def best_epoch(rows: list[dict], phase: int) -> dict:
  """The phase's epoch whose weights early stopping kept (the first best)."""
  monitor, mode = MONITORS[phase]
  pick = min if mode == "min" else max
  return pick((r for r in rows if r["phase"] == phase), key=lambda r: r[monitor])


SCRATCH_PREFIX = "finetune-images-"


def _scratch_dir() -> str:
  """A new cache folder named after this process, once the folders of processes
  that are gone have been removed: a Trainer killed outright (kill -9, out of
  memory) never reaches its own cleanup, and its decoded photos fill /tmp."""
  parent = tempfile.gettempdir()
  for name in os.listdir(parent):
    pid = name[len(SCRATCH_PREFIX):].split("-")[0]
    if name.startswith(SCRATCH_PREFIX) and pid.isdigit() and not _alive(int(pid)):
      shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
  return tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=parent)


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process
    return True
  return True


def run_fn(fn_args: FnArgs) -> None:
  examples_uri = os.path.dirname(os.path.dirname(fn_args.train_files[0]))
  settings = dict(fn_args.custom_config)
  tflite_kind = settings.pop("tflite", "off")  # serving.tflite: the on-device export
  config = TrainConfig(**settings)  # a misspelt setting fails here, by name
  config = dataclasses.replace(config, image_size=data_facts.training_size(
      examples_uri, config.image_size))
  keras.utils.set_random_seed(config.seed)
  class_names = data_facts.class_names(examples_uri)
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
  # A local scratch folder (the model folder may be a bucket), removed after training.
  cache_dir = _scratch_dir() if config.cache_images else ""
  try:
    _train(fn_args, config, class_names, tf_transform_output, examples_uri, cache_dir,
           tflite_kind)
  finally:
    if cache_dir:
      shutil.rmtree(cache_dir, ignore_errors=True)


def _train(fn_args: FnArgs, config: TrainConfig, class_names: list[str],
           tf_transform_output: tft.TFTransformOutput, examples_uri: str, cache_dir: str,
           tflite_kind: str):
  num_classes = len(class_names)
  train_ds = make_dataset(fn_args.train_files, tf_transform_output, config, num_classes, True,
                          cache_dir and os.path.join(cache_dir, "train"))
  val_ds = make_dataset(fn_args.eval_files, tf_transform_output, config, num_classes, False,
                        cache_dir and os.path.join(cache_dir, "validation"))

  # The base features' one pass reads the training photos in file order, and
  # puts their features in the shuffled photos' order (feature_datasets): the
  # same features in the same order as before, without the photo shuffle
  # buffer, which held every decoded photo at once. A whole cats-vs-dogs run:
  # peak RSS 2,622 MB -> 2,316 MB, the same epochs and test accuracy (0.990).
  features_train_ds = make_dataset(fn_args.train_files, tf_transform_output, config,
                                   num_classes, True,
                                   cache_dir and os.path.join(cache_dir, "train"), shuffle=False)

  model = model_lib.build_model(config, num_classes)
  rows: list[dict] = []
  summary = {"class_names": class_names, "base_model": config.base_model,
             "weights": config.weights, "config": dataclasses.asdict(config), "phases": {}}

  fine_tune = config.phase2_epochs > 0 and str(config.unfreeze) not in ("0", "none")
  # Where phase 2 would train only the top of the base, the frozen blocks
  # below run once per view of each photo, not on every step (MobileNetV2 at
  # 256 px, from block 6: a step 9.9 ms a photo, against 26.6 for all of it),
  # and phase 1's pass through them keeps each photo's view as it is.
  cut = (model_lib.lower_and_upper(model, config.unfreeze, config.base_model)
         if fine_tune and config.phase2_views else None)

  print(f"Phase 1: training the head on the frozen {config.base_model} base", flush=True)
  began = time.time()
  model_lib.freeze_base(model)
  summary["phases"]["1"] = {"trainable_params": count_trainable(model)}
  as_they_are = None
  if config.phase1_on_features:
    # The frozen base gives the same features every epoch: compute them once.
    phase1_model = model_lib.head_of(model)
    phase1_train, phase1_val, as_they_are = feature_datasets(
        model, features_train_ds, val_ds, config, cache_dir, shuffle_train=True, cut=cut)
    summary["phases"]["1"]["feature_seconds"] = round(time.time() - began, 1)
  else:
    phase1_model, phase1_train, phase1_val = model, train_ds, val_ds
  model_lib.compile_for_phase(phase1_model, config.phase1_optimizer,
                              config.phase1_learning_rate, num_classes)
  train_count = _train_count(examples_uri, config)
  steps = math.ceil(train_count / config.batch_size)
  _fit_phase(phase1_model, 1, config.phase1_epochs, phase1_train, phase1_val, rows, config,
             os.path.join(fn_args.model_run_dir, "phase1"), steps)
  summary["phases"]["1"].update(seconds=round(time.time() - began, 1), epochs=len(rows))

  exported = best_epoch(rows, 1)
  if fine_tune and exported["val_accuracy"] > config.phase2_max_accuracy:
    reason = (f"the head alone reached {exported['val_accuracy']:.4f} validation accuracy, "
              f"above train.phase2_max_accuracy {config.phase2_max_accuracy:g}")
    print(f"Phase 2 skipped: {reason}", flush=True)
    summary["phases"]["2"] = {"epochs": 0, "seconds": 0.0, "skipped": reason}
    fine_tune = False
  if fine_tune:
    layers = model_lib.unfreeze_top(model, config.unfreeze, config.base_model)
    print(f"Phase 2: fine-tuning {layers} base layers at learning rate "
          f"{config.phase2_learning_rate:g}", flush=True)
    began = time.time()
    summary["phases"]["2"] = {"trainable_params": count_trainable(model),
                              "unfrozen_layers": layers}
    if cut:
      phase2_model, augment = cut.upper, model_lib.augmenter(model)
      phase2_train, phase2_val = lower_datasets(
          cut.lower, augment, features_train_ds,
          as_they_are or first_views(cut.lower, features_train_ds, val_ds, cache_dir),
          train_count, config, cache_dir)
      summary["phases"]["2"]["views"] = phase2_views(config, augment)
    else:
      phase2_model, phase2_train, phase2_val = model, train_ds, val_ds
    rate = config.phase2_learning_rate
    if config.phase2_schedule == "cosine":  # from the rate down to 0 over the phase
      rate = keras.optimizers.schedules.CosineDecay(rate, decay_steps=config.phase2_epochs * steps)
    model_lib.compile_for_phase(phase2_model, config.phase2_optimizer, rate, num_classes)
    phase1_epochs = len(rows)
    phase1_weights = model.get_weights()
    # Each batch's gradients from micro-batches, one at a time: the same update
    # for a part of the activations. Cats vs dogs, phase 2 forced (256 px, all
    # of the base): a whole run's peak RSS 5,626 MB -> 2,887 MB, no slower.
    micro_batch = micro_batch_size(phase2_model, config.batch_size)
    summary["phases"]["2"]["micro_batch"] = micro_batch
    phase2_model.train_step = model_lib.micro_batch_train_step(phase2_model, micro_batch)
    try:
      _fit_phase(phase2_model, 2, config.phase2_epochs, phase2_train, phase2_val, rows, config,
                 os.path.join(fn_args.model_run_dir, "phase2"), steps,
                 steps_per_epoch=steps if cut else None, baseline=exported["val_accuracy"])
    finally:
      del phase2_model.train_step  # the exported model is a plain Keras model
    summary["phases"]["2"].update(seconds=round(time.time() - began, 1),
                                  epochs=len(rows) - phase1_epochs)
    if best_epoch(rows, 2)["val_accuracy"] > exported["val_accuracy"]:
      exported = best_epoch(rows, 2)
    else:  # fine-tuning never beat the head alone on validation: keep the head alone
      model.set_weights(phase1_weights)
      print("Phase 2 did not improve validation accuracy: exporting phase 1's model",
            flush=True)
  summary["exported"] = {k: v for k, v in exported.items() if k != "seconds"}

  model_dir = os.path.dirname(fn_args.serving_model_dir)
  kind = tflite_kind
  if kind != "off":  # the on-device model, beside the SavedModel (components/trainer/tflite.py)
    began = time.time()
    size = tflite.export_tflite(model, config.image_size, kind,
                                os.path.join(model_dir, tflite.FILE_NAME), train_ds)
    summary["tflite"] = {"kind": kind, "bytes": size, "seconds": round(time.time() - began, 1)}
  with tf.io.gfile.GFile(os.path.join(model_dir, HISTORY_FILE), "w") as f:
    json.dump(rows, f, indent=1)
  with tf.io.gfile.GFile(os.path.join(model_dir, SUMMARY_FILE), "w") as f:
    json.dump(summary, f, indent=1)
  export_serving_model(model, tf_transform_output, class_names, fn_args.serving_model_dir,
                       test_time_flip=config.test_time_flip)
