"""Infra validation without a model server: is a candidate SavedModel servable?

`check_servable` loads the candidate in a fresh Python process, as a model
server would (the SavedModel alone: no project code importable, a clean
environment), sends it real test photos the way TF Serving clients do and
checks the answers against the evaluator's in-process prediction:

  REST  {"instances": [{"b64": ...}]} bodies, decoded as TF Serving's REST API
        decodes them (row format: a {"b64": ...} object is the bytes of a
        string input), through serving_default and, where the model has it,
        predict_images; answered in the REST API's "predictions" layout.
  gRPC  tensorflow_serving.apis PredictRequests, serialized, their `inputs`
        TensorProtos converted with tf.make_ndarray and run through the
        signature the request names; answered as a serialized PredictResponse.

This reproduces the request contracts, not a server: no model server config
parsing, batching, version policy or transport (deploy/serving/README.md).

With `warmup_dir` it also writes <warmup_dir>/assets.extra/tf_serving_warmup_requests,
the PredictionLog TFRecord TF Serving replays when it loads a version, and the
fresh process replays it the same way, so a version whose warm-up would fail
its load is never pushed.

This file doubles as the worker script: run as `python -I canary.py REQUEST
RESPONSE`, it imports only TensorFlow and tensorflow_serving.
"""
from __future__ import annotations

import base64
import concurrent.futures
import json
import math
import os
import subprocess
import sys
import tempfile
import time

EXAMPLES_SIGNATURE = "serving_default"
IMAGES_SIGNATURE = "predict_images"
IMAGE_FEATURE = "image_raw"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
WARMUP_REQUESTS = 4
TOLERANCE = 1e-3
TIMEOUT_S = 600
# Object-store credentials a model server reading the same path would also hold.
_PASSED_ENV_PREFIXES = ("AWS_", "S3_", "GOOGLE_", "CLOUDSDK_")


class CanaryError(RuntimeError):
  """The candidate is not servable; the message is one line saying what failed."""

  def __init__(self, message: str):
    super().__init__(" ".join(str(message).split()))


def check_servable(saved_model_dir: str, test_split_uri: str, warmup_dir: str | None = None,
                   count: int = 8, model_name: str = "") -> dict:
  """Raises CanaryError unless the SavedModel answers TF Serving requests for
  `count` test photos as the evaluator's in-process prediction does.

  `warmup_dir`: the version folder to be pushed (usually `saved_model_dir`
  itself); the warm-up requests are written there. `model_name` only fills
  the requests' model_spec.name. Returns what was checked, for the run's log.
  """
  started = time.monotonic()
  # The fresh process runs in a scratch folder: relative paths would not resolve there.
  saved_model_dir, warmup_dir = (p if not p or "://" in p else os.path.abspath(p)
                                 for p in (saved_model_dir, warmup_dir))
  records = _read_examples(test_split_uri, count)
  if not records:
    raise CanaryError(f"canary: no test examples under {test_split_uri} (*.gz)")
  photos = [_image_bytes(record) for record in records]

  with tempfile.TemporaryDirectory(prefix="canary-") as scratch:
    warmup_file = None
    if warmup_dir:
      warmup_file = write_warmup_requests(warmup_dir, photos[:WARMUP_REQUESTS], model_name)
    job = {
        "saved_model_dir": saved_model_dir,
        "rest": [{"signature_name": EXAMPLES_SIGNATURE,
                  "body": _rest_body(EXAMPLES_SIGNATURE, [_minimal_example(p) for p in photos])},
                 {"signature_name": IMAGES_SIGNATURE, "optional": True,
                  "body": _rest_body(IMAGES_SIGNATURE, photos)}],
        "grpc": [base64.b64encode(
            _predict_request(photos, model_name).SerializeToString()).decode()],
        "warmup_file": warmup_file,
    }
    # The in-process prediction runs while the fresh process starts: 2-3 s less.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
      in_process = pool.submit(_in_process_predictions, saved_model_dir, records, scratch)
      answers = _run_worker(job, scratch)  # its failure, if any, is the one reported
      expected = in_process.result()

  classes = answers["class_names"]
  checked = []
  for answer in answers["rest"]:
    if answer is None:  # predict_images is optional
      continue
    rows = answer["response"].get("predictions")
    if (not isinstance(rows, list) or len(rows) != len(photos)
        or not all(isinstance(row, dict) for row in rows)):
      raise CanaryError(f"canary: REST {answer['signature_name']} answered "
                        f"{len(rows) if isinstance(rows, list) else 'no'} predictions "
                        f"for {len(photos)} instances, or not one object of outputs each")
    _check_answers(f"REST {answer['signature_name']}", classes, expected,
                   [row.get("probabilities") for row in rows],
                   [row.get("class_names") for row in rows],
                   [row.get("predicted_class") for row in rows])
    checked.append(f"REST {answer['signature_name']}")
  for answer in answers["grpc"]:
    response = _predict_response(answer["response"])
    outputs = {key: _ndarray(value) for key, value in response.outputs.items()}
    missing = {"probabilities", "class_names", "predicted_class"} - set(outputs)
    if missing:
      raise CanaryError(f"canary: gRPC {answer['signature_name']} has no output "
                        f"{', '.join(sorted(missing))}")
    _check_answers(f"gRPC {answer['signature_name']}", classes, expected,
                   outputs["probabilities"].tolist(),
                   [[_text(n) for n in row] for row in outputs["class_names"]],
                   [_text(n) for n in outputs["predicted_class"]])
    checked.append(f"gRPC {answer['signature_name']}")
  return {
      "photos": len(photos),
      "classes": classes,
      "requests": checked,
      "warmup_file": warmup_file,
      "warmup_requests": answers["warmup_replayed"],
      "seconds": round(time.monotonic() - started, 1),
  }


def write_warmup_requests(version_dir: str, photos: list[bytes], model_name: str = "") -> str:
  """<version_dir>/assets.extra/tf_serving_warmup_requests: one serving_default
  PredictRequest per photo, as TF Serving reads them at load
  (https://www.tensorflow.org/tfx/serving/saved_model_warmup)."""
  import tensorflow as tf
  from tensorflow_serving.apis import prediction_log_pb2
  path = os.path.join(version_dir, WARMUP_FILE)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.TFRecordWriter(path) as writer:
    for photo in photos:
      log = prediction_log_pb2.PredictionLog(
          predict_log=prediction_log_pb2.PredictLog(request=_predict_request([photo], model_name)))
      writer.write(log.SerializeToString())
  return path


# --- the caller's side -----------------------------------------------------------------


def _read_examples(split_uri: str, count: int) -> list[bytes]:
  import tensorflow as tf
  files = sorted(tf.io.gfile.glob(os.path.join(split_uri, "*.gz")))
  if not files:
    return []
  dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").take(count)
  return [record.numpy() for record in dataset]


def _image_bytes(record: bytes) -> bytes:
  import tensorflow as tf
  example = tf.train.Example.FromString(record)
  values = example.features.feature[IMAGE_FEATURE].bytes_list.value
  if not values:
    raise CanaryError(f"canary: a test example has no {IMAGE_FEATURE} feature")
  return values[0]


def _minimal_example(photo: bytes) -> bytes:
  """What a client sends: the photo alone, not the split's labels and paths."""
  import tensorflow as tf
  return tf.train.Example(features=tf.train.Features(feature={
      IMAGE_FEATURE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[photo]))})
  ).SerializeToString()


def _in_process_predictions(saved_model_dir: str, records: list[bytes], scratch: str) -> list[str]:
  """The evaluator's own path (predict_examples) on exactly these photos."""
  import tensorflow as tf
  from components.evaluation import predict_examples
  split = os.path.join(scratch, "split")
  os.makedirs(split)
  with tf.io.TFRecordWriter(os.path.join(split, "photos.gz"),
                            tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
    for record in records:
      writer.write(record)
  try:
    rows = predict_examples(saved_model_dir, split)
  except Exception as e:  # noqa: BLE001  (any failure here means: not servable)
    raise CanaryError(f"canary: in-process prediction failed: {type(e).__name__}: {e}") from e
  return [row["predicted_class"] for row in rows]


def _rest_body(signature_name: str, values: list[bytes]) -> str:
  return json.dumps({"signature_name": signature_name,
                     "instances": [{"b64": base64.b64encode(v).decode()} for v in values]})


def _predict_request(photos: list[bytes], model_name: str = ""):
  import tensorflow as tf
  from tensorflow_serving.apis import predict_pb2
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = EXAMPLES_SIGNATURE
  request.inputs["examples"].CopyFrom(
      tf.make_tensor_proto([_minimal_example(p) for p in photos], dtype=tf.string))
  return request


def _predict_response(encoded: str):
  from tensorflow_serving.apis import predict_pb2
  return predict_pb2.PredictResponse.FromString(base64.b64decode(encoded))


def _ndarray(proto):
  import tensorflow as tf
  return tf.make_ndarray(proto)


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def _check_answers(what: str, classes: list[str], expected: list[str],
                   probabilities, class_names, predicted) -> None:
  for i, (p, names, top) in enumerate(zip(probabilities, class_names, predicted)):
    if (not isinstance(p, list) or len(p) != len(classes)
        or not all(isinstance(x, (int, float)) for x in p)):
      raise CanaryError(f"canary: {what} photo {i}: probabilities {p!r:.80} are not "
                        f"{len(classes)} numbers")
    if not all(math.isfinite(x) for x in p):
      raise CanaryError(f"canary: {what} photo {i}: probabilities are not finite: {p}")
    if min(p) < -TOLERANCE or abs(sum(p) - 1) > TOLERANCE:
      raise CanaryError(f"canary: {what} photo {i}: probabilities {[round(x, 4) for x in p]} "
                        f"sum to {sum(p):.4f}, not 1")
    if names != classes:
      raise CanaryError(f"canary: {what} photo {i}: class_names {names} are not the "
                        f"model's {classes}")
    if top not in classes or top != classes[max(range(len(p)), key=p.__getitem__)]:
      raise CanaryError(f"canary: {what} photo {i}: predicted_class {top!r} is not the "
                        "most probable of the model's classes")
    if top != expected[i]:
      raise CanaryError(f"canary: {what} photo {i}: predicted {top!r}, the evaluator's "
                        f"in-process prediction {expected[i]!r}")


def run_fresh_process(command: list[str], cwd: str,
                      env: dict[str, str]) -> tuple[int | None, str]:
  """Runs the worker command in a new interpreter: (exit code, None if it ran
  past TIMEOUT_S; stderr)."""
  try:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired:
    return None, ""
  return done.returncode, done.stderr


def _run_worker(job: dict, scratch: str) -> dict:
  request, response = os.path.join(scratch, "job.json"), os.path.join(scratch, "answers.json")
  with open(request, "w") as f:
    json.dump(job, f)
  env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": scratch, "LANG": "C.UTF-8",
         "TF_CPP_MIN_LOG_LEVEL": "2"}
  env.update({k: v for k, v in os.environ.items() if k.startswith(_PASSED_ENV_PREFIXES)})
  # -I: no PYTHONPATH, no user site, not even this file's folder on sys.path.
  command = [sys.executable, "-I", os.path.abspath(__file__), request, response]
  returncode, stderr = run_fresh_process(command, scratch, env)
  if returncode is None:
    raise CanaryError(f"canary: the fresh process took over {TIMEOUT_S} s")
  answers = None
  if os.path.exists(response):
    with open(response) as f:
      answers = json.load(f)
  if answers and "error" in answers:
    raise CanaryError(f"canary: {answers['error']}")
  if returncode != 0 or not answers:
    lines = [line for line in stderr.splitlines() if line.strip()]
    raise CanaryError(f"canary: the fresh process exited {returncode}: "
                      f"{lines[-1] if lines else 'no output'}")
  if answers.get("project_importable"):
    raise CanaryError("canary: project code was importable in the fresh process")
  return answers


# --- the fresh process: TensorFlow and tensorflow_serving only -----------------------


class _Refused(Exception):
  """A request TF Serving would refuse, or a model it could not serve."""


def _signature(signatures: dict, name: str):
  if name not in signatures:
    raise _Refused(f"no signature {name!r} (the SavedModel has {sorted(signatures) or 'none'})")
  return signatures[name]


def _input_specs(function) -> dict:
  return dict(function.structured_input_signature[1])


def _rest_value(value, spec, path: str):
  """A JSON value as TF Serving's REST API reads it for one input: {"b64": ...}
  objects are binary strings, lists nest, numbers and text are literals."""
  import tensorflow as tf
  if isinstance(value, dict):
    if set(value) != {"b64"}:
      raise _Refused(f"{path}: an object that is not {{\"b64\": ...}}")
    if spec.dtype != tf.string:
      raise _Refused(f"{path}: b64 data for a {spec.dtype.name} input")
    return base64.b64decode(value["b64"], validate=True)
  if isinstance(value, list):
    return [_rest_value(v, spec, path) for v in value]
  if isinstance(value, str) and spec.dtype == tf.string:
    return value.encode()
  return value


def _rest_predict(signatures: dict, body: dict) -> dict:
  """POST /v1/models/<name>:predict with a row-format ("instances") body."""
  import numpy as np
  import tensorflow as tf
  function = _signature(signatures, body.get("signature_name") or EXAMPLES_SIGNATURE)
  specs = _input_specs(function)
  instances = body.get("instances")
  if not isinstance(instances, list) or not instances:
    raise _Refused("REST body without a non-empty \"instances\" list")
  columns = {name: [] for name in specs}
  for i, instance in enumerate(instances):
    # A single-input signature takes bare values; otherwise objects by input name.
    named = (isinstance(instance, dict) and set(instance) != {"b64"})
    if not named and len(specs) != 1:
      raise _Refused(f"instance {i}: the signature has inputs {sorted(specs)}; name them")
    values = instance if named else {next(iter(specs)): instance}
    if set(values) != set(specs):
      raise _Refused(f"instance {i}: inputs {sorted(values)}, the signature wants {sorted(specs)}")
    for name, value in values.items():
      columns[name].append(_rest_value(value, specs[name], f"instance {i} {name}"))
  inputs = {name: tf.constant(np.array(column, dtype=object if specs[name].dtype == tf.string
                                       else specs[name].dtype.as_numpy_dtype),
                              dtype=specs[name].dtype)
            for name, column in columns.items()}
  outputs = {k: v.numpy() for k, v in function(**inputs).items()}
  if any(v.ndim == 0 or v.shape[0] != len(instances) for v in outputs.values()):
    raise _Refused("an output's first dimension is not the batch: no row-format answer")

  def to_json(value):
    if isinstance(value, np.ndarray):
      return [to_json(v) for v in value]
    if isinstance(value, bytes):
      try:
        return value.decode("utf-8")
      except UnicodeDecodeError:
        return {"b64": base64.b64encode(value).decode()}
    return value.item() if isinstance(value, np.generic) else value

  rows = [{k: to_json(v[i]) for k, v in outputs.items()} for i in range(len(instances))]
  if len(outputs) == 1:
    rows = [next(iter(row.values())) for row in rows]
  return {"predictions": rows}


def _grpc_predict(signatures: dict, request):
  """PredictionService.Predict, past the transport: TensorProtos in and out."""
  import tensorflow as tf
  from tensorflow_serving.apis import predict_pb2
  function = _signature(signatures, request.model_spec.signature_name or EXAMPLES_SIGNATURE)
  specs = _input_specs(function)
  if set(request.inputs) != set(specs):
    raise _Refused(f"request inputs {sorted(request.inputs)}, the signature wants {sorted(specs)}")
  inputs = {name: tf.constant(tf.make_ndarray(proto), dtype=specs[name].dtype)
            for name, proto in request.inputs.items()}
  outputs = function(**inputs)
  wanted = list(request.output_filter) or list(outputs)
  response = predict_pb2.PredictResponse()
  response.model_spec.CopyFrom(request.model_spec)
  for name in wanted:
    if name not in outputs:
      raise _Refused(f"output_filter names {name!r}, not an output")
    response.outputs[name].CopyFrom(tf.make_tensor_proto(outputs[name].numpy()))
  return response


def _serve(job: dict) -> dict:
  import importlib.util
  path = job["saved_model_dir"]
  if path.startswith("s3://"):
    import tensorflow_io  # noqa: F401  (registers the s3:// filesystem)
  import tensorflow as tf
  from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
  try:
    model = tf.saved_model.load(path)
  except Exception as e:  # noqa: BLE001
    raise _Refused(f"the SavedModel does not load: {type(e).__name__}: {e}") from e
  signatures = dict(model.signatures)
  serve = _signature(signatures, EXAMPLES_SIGNATURE)
  if set(_input_specs(serve)) != {"examples"}:
    raise _Refused(f"{EXAMPLES_SIGNATURE} takes {sorted(_input_specs(serve))}, not 'examples'")
  answers = {"rest": [], "grpc": [], "warmup_replayed": 0,
             "project_importable": any(importlib.util.find_spec(m) is not None
                                       for m in ("components", "pipeline"))}
  for item in job["rest"]:
    name = item["signature_name"]
    if item.get("optional") and name not in signatures:
      answers["rest"].append(None)
      continue
    try:
      response = _rest_predict(signatures, json.loads(item["body"]))
    except _Refused:
      raise
    except Exception as e:  # noqa: BLE001  (what a server answers as an error)
      raise _Refused(f"REST {name} failed: {type(e).__name__}: {e}") from e
    answers["rest"].append({"signature_name": name, "response": response})
  for encoded in job["grpc"]:
    request = predict_pb2.PredictRequest.FromString(base64.b64decode(encoded))
    name = request.model_spec.signature_name
    try:
      response = _grpc_predict(signatures, request)
    except _Refused:
      raise
    except Exception as e:  # noqa: BLE001
      raise _Refused(f"gRPC {name} failed: {type(e).__name__}: {e}") from e
    answers["grpc"].append({"signature_name": name,
                            "response": base64.b64encode(response.SerializeToString()).decode()})
  if job.get("warmup_file"):
    for i, record in enumerate(tf.data.TFRecordDataset(job["warmup_file"])):
      log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
      if log.WhichOneof("log_type") != "predict_log":
        raise _Refused(f"warm-up record {i} is not a predict_log")
      try:
        _grpc_predict(signatures, log.predict_log.request)
      except Exception as e:  # noqa: BLE001
        raise _Refused(f"warm-up request {i} failed: {type(e).__name__}: {e}") from e
      answers["warmup_replayed"] += 1
  # The class names come from the model itself, on the first test photo.
  first = json.loads(job["rest"][0]["body"])["instances"][:1]
  row = _rest_predict(signatures, {"signature_name": EXAMPLES_SIGNATURE,
                                   "instances": first})["predictions"][0]
  if not isinstance(row, dict) or not isinstance(row.get("class_names"), list):
    raise _Refused(f"{EXAMPLES_SIGNATURE} has no class_names output")
  answers["class_names"] = row["class_names"]
  return answers


def _hide_project() -> None:
  """An editable install puts the project on every interpreter's path (a
  meta path finder); a model server has none of it, so neither has this process."""
  from importlib.machinery import PathFinder
  root = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
  sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != root]
  for finder in list(sys.meta_path):
    if finder is PathFinder or not hasattr(finder, "find_spec"):
      continue
    try:
      spec = finder.find_spec("components", None)
    except Exception:  # noqa: BLE001  (a finder that cannot answer is not ours)
      continue
    if spec and spec.origin and os.path.realpath(spec.origin).startswith(root + os.sep):
      sys.meta_path.remove(finder)


def _worker_main(request_path: str, response_path: str) -> int:
  _hide_project()
  with open(request_path) as f:
    job = json.load(f)
  try:
    answers = _serve(job)
  except _Refused as e:
    answers = {"error": " ".join(str(e).split())[:500]}
  except Exception as e:  # noqa: BLE001
    answers = {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:500]}"}
  with open(response_path, "w") as f:
    json.dump(answers, f)
  return 0


if __name__ == "__main__":
  sys.exit(_worker_main(*sys.argv[1:]))
