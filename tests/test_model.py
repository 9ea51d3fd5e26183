"""Freeze/unfreeze rules, optimizers and weights resolution of the Trainer."""

import numpy as np
import pytest
import tf_keras as keras

from components.trainer import model as model_lib
from components.trainer.weights import WeightsNotFoundError, resolve_weights
from components.train_settings import TrainConfig


def tiny(base="mobilenet_v2", size=32, **kw):
  config = TrainConfig(base_model=base, alpha=0.35, weights="none", image_size=size, **kw)
  return config, model_lib.build_model(config, 2)


def graph(model):
  """The model as a graph function of float images, in inference mode."""
  import tensorflow as tf
  function = tf.function(lambda images: model(images, training=False))
  return lambda images: function(images).numpy()


def base_trainable(model):
  return [layer.name for layer in model_lib.base_of(model).layers
          if layer.trainable and layer.weights]


def test_phase1_freezes_every_base_weight():
  _, model = tiny()
  model_lib.freeze_base(model)
  assert base_trainable(model) == []
  head = {w.name.split("/")[0] for w in model.trainable_weights}
  assert head == {"probability"}


def test_phase2_last_n_layers_excludes_batchnorm():
  _, model = tiny()
  model_lib.freeze_base(model)
  model_lib.unfreeze_top(model, "10", "mobilenet_v2")
  base = model_lib.base_of(model)
  last10 = base.layers[-10:]
  expected = [l.name for l in last10 if l.weights and
              not isinstance(l, keras.layers.BatchNormalization)]
  assert base_trainable(model) == expected and expected
  assert all(not l.trainable for l in base.layers
             if isinstance(l, keras.layers.BatchNormalization))


def test_phase2_from_a_named_layer():
  _, model = tiny("vgg16")
  model_lib.unfreeze_top(model, "block5_conv1", "vgg16")
  assert base_trainable(model) == ["block5_conv1", "block5_conv2", "block5_conv3"]


def test_auto_rule_and_all():
  _, model = tiny()
  model_lib.unfreeze_top(model, "auto", "mobilenet_v2")  # MobileNetV2's rule: from block 6
  assert base_trainable(model)[0] == "block_6_expand"
  model_lib.unfreeze_top(model, "all", "mobilenet_v2")
  assert base_trainable(model)[0] == "Conv1"
  model_lib.unfreeze_top(model, "block_11_expand", "mobilenet_v2")
  assert base_trainable(model)[0] == "block_11_expand"
  _, vgg = tiny("vgg16")
  model_lib.unfreeze_top(vgg, "auto", "vgg16")
  assert base_trainable(vgg)[0] == "block5_conv1"


def test_unknown_layer_is_a_clear_error():
  _, model = tiny("vgg16")
  with pytest.raises(model_lib.UnfreezeError, match="no layer named 'block9_conv1'"):
    model_lib.unfreeze_top(model, "block9_conv1", "vgg16")


def test_learning_rates_are_applied_and_phase2_changes_only_unfrozen_weights():
  config, model = tiny("vgg16", flip=False, rotation=0, zoom=0, translation=0, dropout=0)
  model_lib.freeze_base(model)
  model_lib.compile_for_phase(model, "adam", 1e-3, 2)
  assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
  model_lib.unfreeze_top(model, "block5_conv1", "vgg16")
  model_lib.compile_for_phase(model, "rmsprop", 1e-5, 2)
  assert isinstance(model.optimizer, keras.optimizers.RMSprop)
  assert float(model.optimizer.learning_rate) == pytest.approx(1e-5)

  before = {w.name: w.numpy().copy() for w in model.weights}
  images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
  model.train_on_batch(images, np.array([[0], [1], [0], [1]], "float32"))
  changed = {w.name for w in model.weights if not np.array_equal(before[w.name], w.numpy())}
  trainable = {w.name for w in model.trainable_weights}
  assert changed and changed <= trainable
  assert any(n.startswith("block5_conv") for n in changed)
  assert not any(n.startswith("block4") for n in changed)


def test_weights_folder_lookup_and_missing_files(tmp_path):
  name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
  (tmp_path / name).write_bytes(b"h5")
  assert resolve_weights(str(tmp_path), "mobilenet_v2", 0.35, 160) == str(tmp_path / name)
  with pytest.raises(WeightsNotFoundError, match="vgg16_weights_tf_dim_ordering"):
    resolve_weights(str(tmp_path), "vgg16")
  with pytest.raises(WeightsNotFoundError, match="nope.h5"):
    resolve_weights(str(tmp_path / "nope.h5"), "vgg16")
  assert resolve_weights("none", "vgg16") is None
  assert resolve_weights("imagenet", "vgg16") == "imagenet"


def test_augmentation_only_in_training():
  from components.trainer.augment import RandomAffine
  _, model = tiny(flip=True, rotation=0.1, zoom=0.2, translation=0.1, dropout=0)
  images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
  # Inference (evaluation, serving) is deterministic: no augmentation.
  np.testing.assert_array_equal(model(images, training=False).numpy(),
                                model(images, training=False).numpy())
  layer = RandomAffine(rotation=0.1, zoom=0.2, translation=0.1, seed=1)
  np.testing.assert_array_equal(layer(images, training=False).numpy(), images)
  augmented = layer(images, training=True).numpy()
  assert augmented.shape == images.shape and not np.allclose(augmented, images)


def test_affine_augmentation_moves_content_as_asked():
  from components.trainer.augment import RandomAffine
  image = np.zeros((1, 41, 41, 1), "float32")
  image[0, 20, 30] = 255  # a dot 10 px right of the centre
  # No rotation or zoom: a shift of up to 10% (4 px) keeps the dot in its row's band.
  shifted = RandomAffine(translation=0.1, seed=3)(np.repeat(image, 8, 0), training=True).numpy()
  for out in shifted[..., 0]:
    y, x = np.unravel_index(out.argmax(), out.shape)
    assert abs(x - 30) <= 5 and abs(y - 20) <= 5
  # Rotation alone, whatever the angle, keeps the dot 10 px from the centre.
  turned = RandomAffine(rotation=0.25, seed=4)(np.repeat(image, 8, 0), training=True).numpy()
  for out in turned[..., 0]:
    y, x = np.unravel_index(out.argmax(), out.shape)
    assert abs(np.hypot(x - 20, y - 20) - 10) <= 1.5


def test_phase1_on_features_trains_the_models_own_head():
  import tensorflow as tf
  from components.trainer.train import feature_datasets
  config, model = tiny(dropout=0)
  model_lib.freeze_base(model)
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 255, (12, 32, 32, 3)).astype("float32")
  labels = (np.arange(12) % 2).reshape(-1, 1).astype("float32")
  pixels = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(12, seed=1).batch(5)
  train, val, as_they_are = feature_datasets(model, pixels, pixels, config)
  assert as_they_are is None  # no phase 2 cut asked for

  # Each feature row still carries its own image's label, though the pixels were shuffled.
  extractor = model_lib.feature_extractor(model)
  expected = extractor.predict(images, verbose=0)
  pairs = list(train.unbatch().as_numpy_iterator())
  assert len(pairs) == 12 and sum(1 for _ in val.unbatch()) == 12
  for features, label in pairs:
    row = np.abs(expected - features).sum(axis=1).argmin()
    np.testing.assert_allclose(expected[row], features, rtol=1e-5, atol=1e-5)
    assert label == labels[row]

  base_before = [w.numpy().copy() for w in model_lib.base_of(model).weights]
  head_before = model.get_layer("probability").kernel.numpy().copy()
  head = model_lib.head_of(model)
  model_lib.compile_for_phase(head, "adam", 0.1, 2)
  head.fit(train, epochs=2, verbose=0)
  # The full model now predicts with the trained head; the base did not move.
  assert not np.allclose(model.get_layer("probability").kernel.numpy(), head_before)
  for before, after in zip(base_before, model_lib.base_of(model).weights):
    np.testing.assert_array_equal(before, after.numpy())
  np.testing.assert_allclose(model.predict(images, verbose=0),
                             head.predict(expected, verbose=0), rtol=1e-4, atol=1e-5)


def test_phase1_keeps_its_lowest_loss_epoch_phase2_its_most_accurate():
  from components.trainer.train import best_epoch
  # Phase 2's loss turns up as the model grows confident, while accuracy still climbs.
  rows = [{"phase": 1, "epoch": 1, "val_loss": 0.90, "val_accuracy": 0.66},
          {"phase": 1, "epoch": 2, "val_loss": 0.88, "val_accuracy": 0.65},
          {"phase": 1, "epoch": 3, "val_loss": 0.89, "val_accuracy": 0.68},
          {"phase": 2, "epoch": 4, "val_loss": 0.70, "val_accuracy": 0.71},
          {"phase": 2, "epoch": 5, "val_loss": 0.74, "val_accuracy": 0.75},
          {"phase": 2, "epoch": 6, "val_loss": 0.72, "val_accuracy": 0.75}]
  assert best_epoch(rows, 1)["epoch"] == 2
  assert best_epoch(rows, 2)["epoch"] == 5  # the first of equals, as early stopping keeps it


@pytest.mark.parametrize("classes", [2, 3])
def test_micro_batches_make_the_whole_batchs_update(classes):
  # Phase 2 (components/trainer/train.py) runs each batch as micro-batches for
  # memory: the weights and the reported metrics must be those of whole batches,
  # the last, shorter batch (20 = 7 + 7 + 6, in micro-batches of 3) included.
  import tensorflow as tf
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 255, (20, 32, 32, 3)).astype("float32")
  labels = (rng.integers(0, 2, (20, 1)).astype("float32") if classes == 2
            else rng.integers(0, classes, (20,)))
  data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(7)
  trained = []
  for micro_batch in (None, 3):
    keras.utils.set_random_seed(1)
    config = TrainConfig(base_model="mobilenet_v2", alpha=0.35, weights="none", image_size=32,
                         flip=False, rotation=0, zoom=0, translation=0, dropout=0)
    model = model_lib.build_model(config, classes)
    # The top 20 layers: BatchNorm among them (frozen), and half the tracing of all.
    model_lib.unfreeze_top(model, "20", "mobilenet_v2")
    model_lib.compile_for_phase(model, "adam", 1e-3, classes)
    if micro_batch:
      model.train_step = model_lib.micro_batch_train_step(model, micro_batch)
    history = model.fit(data, epochs=2, verbose=0).history
    trained.append((history, model.get_weights()))
  (whole, whole_weights), (micro, micro_weights) = trained
  assert whole.keys() == micro.keys() == {"loss", "accuracy"}
  for key in whole:
    np.testing.assert_allclose(whole[key], micro[key], rtol=1e-4)
  for a, b in zip(whole_weights, micro_weights):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_features_in_file_order_take_the_shuffled_photos_order():
  # The Trainer computes base features on photos in file order (no shuffle
  # buffer of decoded photos), then orders them as make_dataset's shuffle would.
  import tensorflow as tf
  from components.trainer.train import shuffle_buffer, shuffled_order
  config = TrainConfig(seed=7, image_size=256)
  for count in (5, 100, 3000):  # 3,000: more than the buffer holds at 256 px
    photos = tf.data.Dataset.range(count).map(lambda i: (tf.fill([2], i), i))
    shuffled = photos.shuffle(shuffle_buffer(config), seed=7,
                              reshuffle_each_iteration=True).batch(8)
    seen = np.concatenate([labels for _, labels in shuffled.as_numpy_iterator()])
    np.testing.assert_array_equal(seen, shuffled_order(count, config))


def test_phase2_cut_below_its_first_trained_layer_predicts_as_the_whole_model():
  import tensorflow as tf
  _, model = tiny(size=64)
  images = np.random.default_rng(0).uniform(0, 255, (6, 64, 64, 3)).astype("float32")
  # Graphs, as training runs them: random weights leave the features tiny
  # (~1e-10), and eager calls round them differently.
  features = graph(model_lib.feature_extractor(model))(images)
  for rule in ("auto", "20", "block_13_expand"):
    lower, upper, upper_features = model_lib.lower_and_upper(model, rule, "mobilenet_v2")
    np.testing.assert_allclose(upper(lower(images)), model(images), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(graph(keras.Sequential([lower, upper_features]))(images), features,
                               rtol=1e-4, atol=1e-4 * np.abs(features).max())
    # The upper part holds exactly the weights phase 2 trains, shared with the model.
    model_lib.unfreeze_top(model, rule, "mobilenet_v2")
    assert ({id(v) for v in upper.trainable_variables}
            == {id(v) for v in model.trainable_variables})
  upper.layers[1].trainable_variables[0].assign_add(tf.ones_like(
      upper.layers[1].trainable_variables[0]))  # a step of training moves the exported model
  np.testing.assert_allclose(upper(lower(images)), model(images), rtol=1e-4, atol=1e-6)
  # Nothing to cut: all of the base trains, or block 5's shortcut crosses the cut.
  assert model_lib.lower_and_upper(model, "all", "mobilenet_v2") is None
  assert model_lib.lower_and_upper(model, "block_5_depthwise", "mobilenet_v2") is None


def test_phase2_sees_each_photo_as_it_is_and_augmented_and_validation_as_it_is(tmp_path, capsys):
  import tensorflow as tf
  from components.trainer.train import feature_datasets, lower_datasets
  config, model = tiny(size=32, phase2_views=2, batch_size=4)
  cut = model_lib.lower_and_upper(model, "auto", "mobilenet_v2")
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 255, (6, 32, 32, 3)).astype("float32")
  photos = tf.data.Dataset.from_tensor_slices((images, np.arange(6.0))).batch(4)
  # Phase 1's one pass keeps each photo's frozen-block output as it is ...
  phase1_train, _, as_they_are = feature_datasets(model, photos, photos, config,
                                                  str(tmp_path), cut=cut)
  # (Through the cut, the features are the whole base's: the test above.)
  rows = np.concatenate([rows for rows, _ in phase1_train.as_numpy_iterator()])
  assert rows.shape == (6, model.get_layer("pooled").output.shape[-1])
  # ... and phase 2 computes only the augmented views.
  train, val = lower_datasets(cut.lower, model_lib.augmenter(model), photos, as_they_are, 6,
                              config, str(tmp_path))
  as_is = cut.lower(images).numpy()
  close = {"rtol": 1e-2, "atol": 1e-2 * np.abs(as_is).max()}  # float16, small random weights
  rows, labels = (np.concatenate(part) for part in zip(*train.take(3).as_numpy_iterator()))
  assert sorted(labels) == sorted(list(range(6)) * 2)  # two views of each photo an epoch
  unaugmented = [any(np.allclose(row, a, **close) for a in as_is) for row in rows]
  assert sum(unaugmented) == 6  # one as it is, one augmented
  val_rows, val_labels = (np.concatenate(part) for part in zip(*val.as_numpy_iterator()))
  np.testing.assert_allclose(val_rows, as_is, **close)
  np.testing.assert_array_equal(val_labels, np.arange(6.0))
  assert ({p.name.split(".")[0] for p in tmp_path.iterdir()}
          == {"features-train", "features-validation", "lower-augmented"})
  assert "output for 1 augmented view(s) of 6 training images" in capsys.readouterr().out
  # Without phase 1's pass (train.phase1_on_features off) and with augmentation
  # off: one pass of each split, the photos as they are, nothing augmented.
  config, plain = tiny(size=32, phase2_views=2, batch_size=4, flip=False, rotation=0, zoom=0,
                       translation=0)
  cut = model_lib.lower_and_upper(plain, "auto", "mobilenet_v2")
  from components.trainer.train import first_views
  scratch = tmp_path / "plain"
  scratch.mkdir()
  train, val = lower_datasets(cut.lower, model_lib.augmenter(plain), photos,
                              first_views(cut.lower, photos, photos, str(scratch)), 6,
                              config, str(scratch))
  rows, labels = (np.concatenate(part) for part in zip(*train.take(3).as_numpy_iterator()))
  assert sorted(labels) == sorted(list(range(6)) * 2)  # each photo once an epoch, repeating
  as_is = cut.lower(images).numpy()
  assert all(any(np.allclose(row, a, **close) for a in as_is) for row in rows)
  assert {p.name.split(".")[0] for p in scratch.iterdir()} == {"lower-train", "lower-validation"}
