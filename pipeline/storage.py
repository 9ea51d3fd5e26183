"""Object storage: `s3://` (MinIO, AWS S3) for TensorFlow and Beam; `gs://` is native.

Credentials and the endpoint come from the environment only (in a cluster, a
Kubernetes secret), never from settings, so they cannot reach a compiled
package, a log or a report:
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, and for MinIO or any
  other S3-compatible store AWS_ENDPOINT_URL (e.g. http://minio-service.kubeflow:9000).
Beam's S3 filesystem (boto3) reads those itself. TensorFlow reads `s3://` only
once tensorflow_io is imported, and its client wants S3_ENDPOINT and
S3_USE_HTTPS, derived here from AWS_ENDPOINT_URL unless set.
"""
from __future__ import annotations

import logging
import os
import sys
import urllib.parse

S3_SCHEME = "s3://"
_s3_enabled = False


def uses_s3(*paths: object) -> bool:
  return any(str(p).startswith(S3_SCHEME) for p in paths if p)


def enable_s3() -> None:
  """Lets tf.io.gfile (and so TFX and TFT) read and write `s3://` paths."""
  global _s3_enabled
  if _s3_enabled:
    return
  endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
  if endpoint:
    os.environ.setdefault("S3_ENDPOINT", endpoint)
    https = urllib.parse.urlparse(endpoint).scheme == "https"
    os.environ.setdefault("S3_USE_HTTPS", "1" if https else "0")
    os.environ.setdefault("S3_VERIFY_SSL", "1" if https else "0")
  region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
  if region:
    os.environ.setdefault("AWS_REGION", region)
    os.environ.setdefault("AWS_DEFAULT_REGION", region)
  import tensorflow_io  # noqa: F401  (registers the s3:// filesystem with TensorFlow)
  _s3_enabled = True


def exit_code(e: SystemExit) -> int:
  """The status `sys.exit(e.code)` would end the process with."""
  if e.code is None or isinstance(e.code, int):
    return e.code or 0
  print(e.code, file=sys.stderr)
  return 1


def exit_process(code: int) -> None:
  """Ends the process with `code`.

  After `s3://` was used, tensorflow_io's S3 client aborts in C++ teardown
  ("pure virtual method called", exit code 134) once all work is done, which
  would fail a Kubeflow task that succeeded: output is flushed and the
  teardown skipped.
  """
  if not _s3_enabled:
    sys.exit(code)
  logging.shutdown()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)
