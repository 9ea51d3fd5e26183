"""The Pusher: a blessed model into the TF Serving model folder, whole or not at all.

TFX's Pusher copies the SavedModel straight into `<base>/<version>/`, where
TF Serving polls: a failed copy (disk full) leaves a half-written version
behind. Here the copy goes to a temporary folder beside the versions (TF
Serving ignores names that are not numbers) and is renamed into place. On
`gs://` and `s3://` no rename is atomic: the version is written in place with
`saved_model.pb` last, since TF Serving loads a version only once that file
exists, and removed again if the copy fails.

Before copying, it checks that the served model is still the one BlessingGate
compared the candidate with: a verdict against a model no longer served says
nothing about the one that is (a rollback, or another run's push, since).
The staged copy must then pass the serving canary (components/canary.py),
which also writes its warm-up requests, and it gets its model card
(components/model_card.py); only then does it become a version.
"""
from __future__ import annotations

import json
import os
import posixpath
import tempfile
import time

import tensorflow as tf
from tfx.components.pusher import executor as tfx_pusher
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

from components.blessing import read_verdict
from components.canary import CanaryError, check_servable
from components.model_card import card_files, model_card
from components.serving import served_versions

INCOMING = ".incoming-"  # a version being copied; not a number, so never served


class PushRefused(RuntimeError):
  """A blessed model that must not be pushed; the message says why in one line."""


class StaleVerdictError(PushRefused):
  """The served model changed between the blessing and the push."""


def new_version(base_dir: str) -> int:
  """Seconds since the epoch (TFX's versioning), above every version folder already there."""
  taken = [int(n.rstrip("/").rsplit("-", 1)[-1]) for n in
           (tf.io.gfile.listdir(base_dir) if tf.io.gfile.isdir(base_dir) else [])
           if n.rstrip("/").rsplit("-", 1)[-1].isdigit()]
  return max([int(time.time())] + [t + 1 for t in taken])


def check_verdict_current(verdict: dict | None, base_dir: str) -> None:
  judged = (verdict or {}).get("served_version")
  served = served_versions(base_dir)
  now = max(served) if served else None
  if judged != now:
    raise StaleVerdictError(
        f"The served model changed after the blessing: judged against "
        f"{'version ' + str(judged) if judged else 'no served model'}, but "
        f"{'version ' + str(now) if now else 'none'} is served now under {base_dir}. "
        "Nothing was pushed; run again to judge the candidate against it.")


def push(model_dir: str, base_dir: str, version: int, prepare=lambda staging: None) -> str:
  """Copies `model_dir` to `<base_dir>/<version>`, never leaving a partial version.

  `prepare(staging)` runs on the complete staged copy before it becomes the
  version (checks, files for `assets.extra/`); if it raises, nothing is pushed.
  """
  target = posixpath.join(base_dir, str(version))
  local = "://" not in base_dir
  # Locally the copy is staged beside the versions (same file system: the
  # rename is atomic); for a bucket, in a local folder, uploaded at the end.
  staging = (posixpath.join(base_dir, f"{INCOMING}{version}") if local
             else tempfile.mkdtemp(prefix="finetune-push-"))
  tf.io.gfile.makedirs(base_dir)
  try:
    io_utils.copy_dir(model_dir, staging, deny_regex_patterns=[r"saved_model\.pb"])
    io_utils.copy_file(posixpath.join(model_dir, "saved_model.pb"),
                       posixpath.join(staging, "saved_model.pb"))
    prepare(staging)
    if local:
      os.rename(staging, target)
    else:
      try:  # TF Serving loads a version once saved_model.pb exists: it goes last
        io_utils.copy_dir(staging, target, deny_regex_patterns=[r"saved_model\.pb"])
        io_utils.copy_file(posixpath.join(staging, "saved_model.pb"),
                           posixpath.join(target, "saved_model.pb"))
      except BaseException:
        if tf.io.gfile.exists(target):
          tf.io.gfile.rmtree(target)
        raise
  finally:
    if tf.io.gfile.exists(staging):
      tf.io.gfile.rmtree(staging)
  return target


class Executor(tfx_pusher.Executor):

  def Do(self, input_dict, output_dict, exec_properties) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    model_push = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.PUSHED_MODEL_KEY])
    if not self.CheckBlessing(input_dict):
      self._MarkNotPushed(model_push)
      _record_push(model_push, None)
      return
    destination = pusher_pb2.PushDestination()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY],
                              destination)
    base_dir = destination.filesystem.base_directory
    blessing = artifact_utils.get_single_instance(
        input_dict[standard_component_specs.MODEL_BLESSING_KEY])
    verdict = read_verdict(blessing.uri)
    check_verdict_current(verdict, base_dir)
    model_dir = self.GetModelPath(input_dict)
    version = new_version(base_dir)
    model = artifact_utils.get_single_instance(input_dict[standard_component_specs.MODEL_KEY])
    from components.trainer.train import SUMMARY_FILE
    with tf.io.gfile.GFile(posixpath.join(model.uri, SUMMARY_FILE)) as f:
      training = json.load(f)
    model_name = posixpath.basename(base_dir.rstrip("/"))

    def prepare(staging: str) -> None:
      try:
        checked = check_servable(staging, verdict["test_examples"], warmup_dir=staging,
                                 model_name=model_name)
      except CanaryError as e:
        raise PushRefused(f"the model failed the serving check, nothing was pushed: {e}") from None
      print(f"Serving check passed in {checked['seconds']:.1f}s: {checked['photos']} test photos "
            f"through {', '.join(checked['requests'])} answered as the evaluator's model "
            "does; warm-up requests written", flush=True)
      for name, text in card_files(model_card(model_name, version, verdict, training)).items():
        io_utils.write_string_file(posixpath.join(staging, "assets.extra", name), text)
      on_device = posixpath.join(model.uri, "model.tflite")
      if tf.io.gfile.exists(on_device):  # serving.tflite: the on-device model travels along
        io_utils.copy_file(on_device, posixpath.join(staging, "assets.extra", "model.tflite"))

    target = push(model_dir, base_dir, version, prepare)
    self._MarkPushed(model_push, pushed_destination=target, pushed_version=str(version))
    _record_push(model_push, target)


def _record_push(model_push, target: str | None) -> None:
  """What was pushed, in the PushedModel artifact itself (the model is in the
  serving folder): a file for whoever opens it, and for a launcher that
  uploads what a task wrote."""
  io_utils.write_string_file(posixpath.join(model_push.uri, "push.json"), json.dumps(
      {"pushed": target is not None, "destination": target}))
