"""What a user would write instead of the pipeline: TensorFlow's transfer-learning
tutorial (MobileNetV2, frozen base + new head, then fine-tuning from layer 100
at a tenth of the rate), on split folders. For bench/compare.py; not the product.

Usage: python bench/plain_keras.py DATA_ROOT WEIGHTS_FILE [EPOCHS_PER_PHASE]
Prints one JSON line: test accuracy and seconds.
"""
import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

IMAGE_SIZE = (224, 224)
BATCH_SIZE = 32
BASE_LEARNING_RATE = 0.0001
FINE_TUNE_AT = 100


def main():
  began = time.time()
  data_root, weights = sys.argv[1], sys.argv[2]
  epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
  keras.utils.set_random_seed(42)

  def split(name, shuffle):
    return keras.utils.image_dataset_from_directory(
        os.path.join(data_root, name), shuffle=shuffle, batch_size=BATCH_SIZE,
        image_size=IMAGE_SIZE, seed=42).prefetch(tf.data.AUTOTUNE)

  train, validation, test = split("train", True), split("validation", False), split("test", False)
  augment = keras.Sequential([keras.layers.RandomFlip("horizontal"),
                              keras.layers.RandomRotation(0.2)])
  base = keras.applications.MobileNetV2(input_shape=IMAGE_SIZE + (3,), include_top=False,
                                        weights=weights)
  base.trainable = False
  inputs = keras.Input(shape=IMAGE_SIZE + (3,))
  x = augment(inputs)
  x = keras.applications.mobilenet_v2.preprocess_input(x)
  x = base(x, training=False)
  x = keras.layers.GlobalAveragePooling2D()(x)
  x = keras.layers.Dropout(0.2)(x)
  model = keras.Model(inputs, keras.layers.Dense(1)(x))
  loss = keras.losses.BinaryCrossentropy(from_logits=True)
  accuracy = keras.metrics.BinaryAccuracy(threshold=0, name="accuracy")
  model.compile(optimizer=keras.optimizers.Adam(learning_rate=BASE_LEARNING_RATE), loss=loss,
                metrics=[accuracy])
  model.fit(train, epochs=epochs, validation_data=validation, verbose=2)

  base.trainable = True
  for layer in base.layers[:FINE_TUNE_AT]:
    layer.trainable = False
  model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=BASE_LEARNING_RATE / 10),
                loss=loss, metrics=[accuracy])
  model.fit(train, epochs=2 * epochs, initial_epoch=epochs, validation_data=validation,
            verbose=2)
  _, test_accuracy = model.evaluate(test, verbose=0)
  print(json.dumps({"test_accuracy": round(float(test_accuracy), 4),
                    "seconds": round(time.time() - began, 1)}))


if __name__ == "__main__":
  main()
