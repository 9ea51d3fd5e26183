"""The Trainer's settings, typed: `train:` in a run's configuration.

Here, not in components/trainer/, so that reading a configuration does not
import TensorFlow.

The pipeline hands them to the Trainer as TFX's `custom_config` (a dict);
`run_fn` rebuilds this object first, so a misspelt setting fails at once, by
name, and the model code reads attributes from then on.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class TrainConfig:
  base_model: str = "mobilenet_v2"    # mobilenet_v2 | vgg16 | resnet50 | xception | efficientnet_b0 | inception_v3
  alpha: float = 1.0                  # MobileNetV2 width multiplier
  weights: str = "imagenet"           # imagenet | none | path to a .h5 file | folder of Keras weight files
  # Pixels per side; 0 = the photos' own size: their median short side in
  # steps of 32, from 96 to 256 (see images.typical_size for why above 224).
  image_size: int = 0
  batch_size: int = 32
  # Head only, base frozen; early stopping usually ends it sooner. On base
  # features an epoch takes a fraction of a second, so the cap costs nothing.
  phase1_epochs: int = 30
  # Phase 1 on base features computed once (seconds per epoch instead of a
  # forward pass of every photo); False runs the whole model with augmentation.
  phase1_on_features: bool = True
  phase1_optimizer: str = "adam"
  phase1_learning_rate: float = 1e-3
  phase2_epochs: int = 8              # top of the base unfrozen
  phase2_optimizer: str = "adam"
  phase2_learning_rate: float = 1e-4
  phase2_schedule: str = "cosine"     # from the rate down to 0 over phase 2; or "constant"
  # Which base layers phase 2 trains: "auto" (per-base default), "all", "0"
  # (skip phase 2), N (the last N layers) or a layer name (from it onwards).
  unfreeze: str = "auto"
  # Where phase 2 leaves the bottom of the base frozen, that part runs once
  # for this many views of each training photo (as it is, then randomly
  # augmented) and phase 2 trains the top on them: each step runs only what
  # it trains. 0 runs the whole model on freshly augmented photos every step.
  phase2_views: int = 2
  dropout: float = 0.2
  flip: bool = True                   # augmentation, training only
  # Mild: stronger augmentation slowed phase 2 more than it helped (flowers, validation).
  rotation: float = 0.03              # fraction of a full turn
  zoom: float = 0.1
  translation: float = 0.05           # fraction of width/height
  # Epochs without improvement (phase 1: val_loss, phase 2: val_accuracy,
  # where an improvement also has to beat phase 1's best to reset the count:
  # phase 2 is exported only if it does). Not 2: in one of three flowers runs'
  # histories phase 2 would have stopped at validation 0.727, where 3 went on to 0.750.
  early_stopping_patience: int = 3
  # Phase 2 runs only when phase 1's validation accuracy is at most this
  # (1 = always): where the frozen base's features already fit the photos
  # (cats vs dogs: 0.99), fine-tuning costs 3/4 of the training time for at
  # most the last few photos, a gain the validation set cannot tell from noise.
  phase2_max_accuracy: float = 0.98
  # The served model averages its predictions for the photo and its mirror
  # image (twice the inference work); train.flip should be on.
  test_time_flip: bool = False
  # Decode each photo once and cache it (uint8) in a scratch folder on local
  # disk, not in memory: memory stays bounded however many photos there are.
  cache_images: bool = True
  max_train_examples: int = 0         # 0 = all; a subset for quick trials
  seed: int = 42
