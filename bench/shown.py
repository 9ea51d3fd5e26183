"""How results name paths: relative to the project (the shared photos as
../shared/...), so a results file says which data, not which machine."""
import os
import pathlib

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]


def shown(path) -> str:
  return os.path.relpath(os.path.abspath(path), PROJECT_ROOT)
