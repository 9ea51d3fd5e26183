#!/usr/bin/env python3.11
"""Builds a wheel for every package in requirements.lock into one folder.

The image installs the lock from this folder with --no-index --no-deps, so it
needs neither a compiler (pyfarmhash, crcmod and a few others are sdists
only) nor the network. Run it with a CPython 3.11 on Linux x86_64 whose glibc
is no newer than the image's (Debian bookworm: glibc 2.36), since the sdists
are compiled here:

    python3.11 deploy/kubeflow/wheelhouse.py [--lock requirements.lock] [--dir build/wheelhouse]

A folder that already holds exactly the lock's wheels for this interpreter is
left as it is, so rebuilding the image does not download anything again.
"""
from __future__ import annotations

import argparse
import hashlib
import pathlib
import re
import subprocess
import sys
import sysconfig

ROOT = pathlib.Path(__file__).resolve().parents[2]
STAMP = ".lock.sha256"
SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tgz")


def normalize(name: str) -> str:
  return re.sub(r"[-_.]+", "_", name).lower()


def locked(lock: pathlib.Path) -> dict[str, str]:
  pins = {}
  for line in lock.read_text().splitlines():
    line = line.split("#", 1)[0].strip()
    if line:
      name, _, version = line.partition("==")
      if not version:
        sys.exit(f"{lock}: {line!r} is not pinned with ==")
      pins[normalize(name)] = version.strip()
  return pins


def wheels(folder: pathlib.Path) -> dict[str, tuple[str, pathlib.Path]]:
  """{normalized name: (version, path)} of the wheels in the folder."""
  found = {}
  for path in folder.glob("*.whl"):
    name, version = path.name.split("-")[:2]
    found[normalize(name)] = (version, path)
  return found


def missing(pins: dict[str, str], folder: pathlib.Path) -> list[str]:
  have = wheels(folder)
  # Wheel file names carry the normalized version; the lock's pins are normalized already.
  return sorted(f"{n}=={v}" for n, v in pins.items()
                if n not in have or have[n][0].replace("_", "-") != v)


def fingerprint(lock: pathlib.Path) -> str:
  # The same lock built by another interpreter or platform needs other wheels.
  tag = f"{sys.implementation.name}{sys.version_info[0]}{sys.version_info[1]}-{sysconfig.get_platform()}"
  return f"{hashlib.sha256(lock.read_bytes()).hexdigest()} {tag}\n"


def pip(*args: str) -> None:
  subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], check=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--lock", type=pathlib.Path, default=ROOT / "requirements.lock")
  parser.add_argument("--dir", type=pathlib.Path, default=ROOT / "build" / "wheelhouse")
  args = parser.parse_args()
  if sys.version_info[:2] != (3, 11) or sysconfig.get_platform() != "linux-x86_64":
    sys.exit(f"wheelhouse: needs CPython 3.11 on linux-x86_64 (the image's), "
             f"this is {sys.version.split()[0]} on {sysconfig.get_platform()}")
  pins, folder = locked(args.lock), args.dir
  stamp = folder / STAMP
  if stamp.is_file() and stamp.read_text() == fingerprint(args.lock) and not missing(pins, folder):
    print(f"wheelhouse: {folder} matches {args.lock.name} ({len(pins)} wheels)")
    return
  folder.mkdir(parents=True, exist_ok=True)
  stamp.unlink(missing_ok=True)
  # Wheels of other versions (an older lock) would be candidates for nothing: drop them.
  for name, (version, path) in wheels(folder).items():
    if pins.get(name, "").replace("-", "_") != version.replace("-", "_"):
      path.unlink()
  # Binary wheels where PyPI has them; the rest come as sdists and are built below.
  # --ignore-requires-python: tfx 1.16 declares <3.11, yet runs on it (see the Makefile).
  pip("download", "--no-deps", "--ignore-requires-python", "--prefer-binary",
      "--dest", str(folder), "-r", str(args.lock))
  sdists = sorted(p for p in folder.iterdir() if p.name.endswith(SDIST_SUFFIXES))
  if sdists:
    pip("wheel", "--no-deps", "--ignore-requires-python", "--wheel-dir", str(folder),
        *map(str, sdists))
    for path in sdists:
      path.unlink()
  gaps = missing(pins, folder)
  if gaps:
    sys.exit(f"wheelhouse: no wheel for {', '.join(gaps)}")
  stamp.write_text(fingerprint(args.lock))
  print(f"wheelhouse: {len(pins)} wheels in {folder}"
        + (f" ({len(sdists)} built from sdists)" if sdists else ""))


if __name__ == "__main__":
  main()
