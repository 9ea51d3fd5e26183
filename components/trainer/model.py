"""The model: augmentation -> pretrained base -> new head, and the freeze rules.

Follows the Keras "Transfer learning & fine-tuning" guide: the base always
runs in inference mode (`training=False`), so its BatchNorm layers keep their
ImageNet statistics in both phases, and BatchNorm layers are never unfrozen.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Callable, NamedTuple

import tensorflow as tf
import tf_keras as keras

from components.train_settings import TrainConfig
from components.trainer.augment import RandomAffine
from components.trainer.weights import local_weights, resolve_weights

apps = keras.applications


@dataclasses.dataclass(frozen=True)
class Base:
  constructor: Callable[..., keras.Model]
  preprocess_input: Callable[[tf.Tensor], tf.Tensor]
  default_unfreeze: str  # the "auto" rule for phase 2
  min_image_size: int = 32  # the smallest input Keras accepts for this base


BASES = {
    # From block 6 (of 16), the blocks below computed once per view
    # (lower_and_upper): on the flowers photos, validation accuracy 0.772 and
    # 0.754 (two seeds) against 0.780 and 0.745 for all of it (within the
    # noise of 337 photos) in half the time; from block 11, as the TF
    # tutorial does, 0.751, from block 13 0.748 (one seed).
    "mobilenet_v2": Base(apps.MobileNetV2, apps.mobilenet_v2.preprocess_input, "block_6_expand"),
    "vgg16": Base(apps.VGG16, apps.vgg16.preprocess_input, "block5_conv1"),
    "resnet50": Base(apps.ResNet50, apps.resnet50.preprocess_input, "conv5_block1_1_conv"),
    "xception": Base(apps.Xception, apps.xception.preprocess_input, "block14_sepconv1", 71),
    "efficientnet_b0": Base(apps.EfficientNetB0, apps.efficientnet.preprocess_input, "20"),
    # The top two inception blocks, as in the Keras applications docs.
    "inception_v3": Base(apps.InceptionV3, apps.inception_v3.preprocess_input, "62", 75),
}
OPTIMIZERS = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop,
              "sgd": lambda learning_rate: keras.optimizers.SGD(learning_rate, momentum=0.9)}
BASE_LAYER_NAME = "base"
POOLED_LAYER_NAME = "pooled"  # the base's features, averaged over the image


class UnfreezeError(ValueError):
  """The unfreeze rule names no usable layer."""


def build_model(train_config: TrainConfig, num_classes: int) -> keras.Model:
  """Float pixels (0..255) -> class probabilities."""
  if train_config.base_model not in BASES:
    raise ValueError(f"train.base_model: unknown base {train_config.base_model!r}; "
                     f"choose from {', '.join(BASES)}")
  base_spec = BASES[train_config.base_model]
  size = int(train_config.image_size)
  kwargs = {"alpha": train_config.alpha} if train_config.base_model == "mobilenet_v2" else {}
  weights = resolve_weights(train_config.weights, train_config.base_model,
                            train_config.alpha, size)
  loadable = local_weights(weights)
  try:
    base = base_spec.constructor(include_top=False, input_shape=(size, size, 3),
                                 weights=loadable, **kwargs)
  finally:
    if loadable != weights:  # a local copy of a bucket's file
      shutil.rmtree(os.path.dirname(loadable), ignore_errors=True)
  base._name = BASE_LAYER_NAME  # a fixed name to find it by; weights are already loaded

  inputs = keras.Input((size, size, 3), name="image")
  x = inputs
  # Random augmentation layers are identity outside training.
  seed = train_config.seed
  if train_config.flip:
    x = keras.layers.RandomFlip("horizontal", seed=seed, name="random_flip")(x)
  if train_config.rotation or train_config.zoom or train_config.translation:
    x = RandomAffine(train_config.rotation, train_config.zoom,
                     train_config.translation, seed=seed, name="random_affine")(x)
  x = base_spec.preprocess_input(x)
  x = base(x, training=False)
  x = keras.layers.GlobalAveragePooling2D(name=POOLED_LAYER_NAME)(x)
  x = keras.layers.Dropout(train_config.dropout, seed=seed, name="head_dropout")(x)
  if num_classes == 2:
    outputs = keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
  else:
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probability")(x)
  return keras.Model(inputs, outputs)


def base_of(model: keras.Model) -> keras.Model:
  return model.get_layer(BASE_LAYER_NAME)


def feature_extractor(model: keras.Model) -> keras.Model:
  """Pixels -> pooled base features (augmentation is off outside training)."""
  return keras.Model(model.input, model.get_layer(POOLED_LAYER_NAME).output)


def head_of(model: keras.Model) -> keras.Model:
  """Pooled features -> probabilities; shares its layers (and weights) with `model`."""
  features = keras.Input(model.get_layer(POOLED_LAYER_NAME).output.shape[1:], name="features")
  x = model.get_layer("head_dropout")(features)
  return keras.Model(features, model.get_layer("probability")(x))


def freeze_base(model: keras.Model) -> None:
  """Phase 1: only the head trains."""
  base_of(model).trainable = False


def first_unfrozen_index(base: keras.Model, rule: str, base_model: str) -> int:
  """Index of the first base layer phase 2 trains (len(layers) = none)."""
  rule = str(rule)
  if rule == "auto":
    rule = BASES[base_model].default_unfreeze
  count = len(base.layers)
  if rule == "all":
    return 0
  if rule.isdigit():
    n = int(rule)
    if n > count:
      raise UnfreezeError(f"train.unfreeze: asked for the last {n} layers but "
                          f"{base_model} has {count}")
    return count - n
  names = [layer.name for layer in base.layers]
  if rule not in names:
    close = [n for n in names if rule.split("_")[0] in n][:5]
    raise UnfreezeError(f"train.unfreeze: {base_model} has no layer named {rule!r}"
                        + (f" (similar: {', '.join(close)})" if close else ""))
  return names.index(rule)


def unfreeze_top(model: keras.Model, rule: str, base_model: str) -> int:
  """Phase 2: unfreezes the top of the base, BatchNorm excepted.

  Returns the number of base layers with trainable weights after the change.
  """
  base = base_of(model)
  start = first_unfrozen_index(base, rule, base_model)
  base.trainable = True
  for index, layer in enumerate(base.layers):
    layer.trainable = (index >= start and
                       not isinstance(layer, keras.layers.BatchNormalization))
  return sum(1 for layer in base.layers if layer.trainable and layer.weights)


def augmenter(model: keras.Model) -> Callable[[tf.Tensor], tf.Tensor] | None:
  """Pixels -> randomly augmented pixels, by the model's own augmentation
  layers; None when augmentation is off."""
  layers = [layer for layer in model.layers if layer.name in ("random_flip", "random_affine")]
  if not layers:
    return None

  def augment(images):
    for layer in layers:
      images = layer(images, training=True)
    return images
  return augment


class Cut(NamedTuple):
  """The model cut below the first layer phase 2 trains (lower_and_upper)."""
  lower: keras.Model     # pixels -> the frozen blocks' output
  upper: keras.Model     # that output -> probabilities: what phase 2 trains
  features: keras.Model  # that output -> pooled base features: phase 1's input


def lower_and_upper(model: keras.Model, rule: str, base_model: str) -> Cut | None:
  """Phase 2's model cut below the first layer it trains, where the base can be cut.

  `lower`'s output is the same for a photo every epoch (BatchNorm runs in
  inference mode), so it is computed once; `upper` and `features` share their
  layers and weights with `model`. None when phase 2 trains all of the base,
  or a residual connection crosses the cut (the upper part would need two inputs).
  """
  base = base_of(model)
  start = first_unfrozen_index(base, rule, base_model)
  if start == 0 or start >= len(base.layers) or isinstance(base.layers[start].input, list):
    return None
  cut = base.layers[start].input
  try:
    upper_base = keras.Model(cut, base.output)
  except ValueError:  # "graph disconnected": a layer above the cut reads from below it
    return None
  lower_base = keras.Model(base.input, cut)
  pixels = keras.Input(model.input.shape[1:], name="image")
  lower = keras.Model(pixels, lower_base(BASES[base_model].preprocess_input(pixels),
                                         training=False))
  activations = keras.Input(cut.shape[1:], name="activations")
  pooled = model.get_layer(POOLED_LAYER_NAME)(upper_base(activations, training=False))
  x = model.get_layer("head_dropout")(pooled)
  return Cut(lower, keras.Model(activations, model.get_layer("probability")(x)),
             keras.Model(activations, pooled))


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
  if name not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
  return OPTIMIZERS[name](learning_rate=learning_rate)


def compile_for_phase(model: keras.Model, optimizer_name: str, learning_rate: float,
                      num_classes: int) -> None:
  if num_classes == 2:
    loss, accuracy = keras.losses.BinaryCrossentropy(), keras.metrics.BinaryAccuracy(name="accuracy")
  else:
    loss, accuracy = (keras.losses.SparseCategoricalCrossentropy(),
                      keras.metrics.SparseCategoricalAccuracy(name="accuracy"))
  model.compile(optimizer=make_optimizer(optimizer_name, learning_rate),
                loss=loss, metrics=[accuracy])


def activation_values(model: keras.Model) -> int:
  """Values in all of the model's layer outputs for one example: what a
  training step holds for the backward pass grows with it."""
  total = 0
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      total += activation_values(layer)
    else:
      outputs = layer.output if isinstance(layer.output, list) else [layer.output]
      total += sum(output.shape[1:].num_elements() for output in outputs)
  return total


def micro_batch_train_step(model: keras.Model, micro_batch: int) -> Callable:
  """A train_step that runs each batch as micro-batches of `micro_batch`
  examples, one after the other, and applies their summed gradients once.

  The same update as the whole batch (the loss is the batch's mean; the base's
  BatchNorm layers are frozen, so nothing depends on the batch's make-up), for
  the activations of one micro-batch: they are what phase 2 holds in memory.
  Dropout and augmentation draw other random numbers than in one batch.
  """
  def train_step(data):
    x, y = data
    size = tf.shape(x)[0]
    variables = model.trainable_variables
    per_example_loss = model.loss.call  # the compiled loss object, unreduced

    def body(i, grads, predictions):
      begin = i * micro_batch
      x_part, y_part = x[begin:begin + micro_batch], y[begin:begin + micro_batch]
      with tf.GradientTape() as tape:
        y_pred = model(x_part, training=True)
        loss = tf.reduce_sum(per_example_loss(y_part, y_pred)) / tf.cast(size, tf.float32)
      part = tape.gradient(loss, variables)
      return i + 1, [g + p for g, p in zip(grads, part)], predictions.write(i, y_pred)

    _, grads, predictions = tf.while_loop(
        lambda i, *_: i * micro_batch < size, body,
        (tf.constant(0), [tf.zeros_like(v) for v in variables],
         tf.TensorArray(model.output.dtype, size=0, dynamic_size=True, infer_shape=False)),
        parallel_iterations=1)  # one micro-batch's activations at a time
    model.optimizer.apply_gradients(zip(grads, variables))
    y_pred = predictions.concat()
    model.compute_loss(x, y, y_pred, None)  # the loss metric, as Keras reports it
    return model.compute_metrics(x, y, y_pred, None)

  return train_step
