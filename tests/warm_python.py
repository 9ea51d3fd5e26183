"""`python -m <module> args...` commands, each forked from an interpreter that has
already imported the libraries every pipeline task imports.

A Kubeflow task's process spends about 12 s of its life importing TensorFlow,
TFX, Beam and TFMA on two cores, and a run of the package starts 13 of them.
Here a server imports those once (PRELOAD) and forks a child per command. The
child then does what a fresh interpreter would do with the command:
  * it takes the command's environment, working folder and argv, and its
    sys.path[0] is the working folder, as with `-m`;
  * it imports the project's own modules (pipeline.*, components.*) itself,
    under that environment: nothing of the project is preloaded;
  * stdout and stderr both go to one file, stdin is empty;
  * it ends as the interpreter ends: the exit status of SystemExit (1 and a
    traceback for an uncaught error), and interpreter teardown in full
    (atexit, C++ destructors): an abort at exit still ends it with 134.
What differs from a fresh process: the preloaded libraries were imported under
the server's environment, which a task's environment extends (credentials,
endpoints), and none of them reads those at import; and a library that starts
threads at import could not be preloaded (the server checks it started none).
The image test (tests/test_image.py) runs compiled tasks as fresh processes.
Not multiprocessing's forkserver: its children end with os._exit, skipping the
interpreter teardown a task's process goes through.

The same for `python -I script args...`, the serving check's fresh process
(components/canary.py; conftest's warm_canary): a server started with -I
preloads only what that script imports (ISOLATED_PRELOAD), and the child runs
the script with the isolated sys.path it inherits (no script folder, no cwd).

Protocol, one JSON line each way on the server's stdin and stdout: a request
{"argv", "env", "cwd", "output"} is answered {"pid"} at once and {"status"}
(the child's exit code, or minus the signal that ended it) when it ends.
"""
from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import threading
import traceback

# What every task imports before any of its own code runs (kubeflow_v2_run_executor
# brings TensorFlow, TFX's components, Beam, TFMA and kfp); then what the Trainer,
# Transform and StatisticsGen add.
PRELOAD = ("tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor",
           "tf_keras", "tensorflow_transform", "tensorflow_data_validation")
# What the serving check's worker imports: TensorFlow and tensorflow_serving only.
ISOLATED_PRELOAD = ("tensorflow", "tensorflow_serving.apis.predict_pb2",
                    "tensorflow_serving.apis.prediction_log_pb2")


def _run_child(request: dict) -> None:
  """In the fork: becomes `python -m <module> args...`; never returns."""
  code = 1
  try:
    argv, cwd = request["argv"], request["cwd"]
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(request["env"])
    output = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    sys.argv = argv[2:]
    if sys.flags.isolated:  # python -I script
      runpy.run_path(argv[2], run_name="__main__")
    else:  # python -m module
      sys.path[0] = cwd
      runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
    code = 0
  except SystemExit as e:
    code = e.code
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
  sys.exit(code)  # the interpreter's own exit: atexit handlers, then C++ teardown


def serve() -> None:
  for name in ISOLATED_PRELOAD if sys.flags.isolated else PRELOAD:
    __import__(name)
  if threading.active_count() != 1:
    raise SystemExit(f"preloading started threads ({threading.enumerate()}): forking is unsafe")
  sys.stdout.write(json.dumps({"ready": True}) + "\n")
  sys.stdout.flush()
  for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
      _run_child(request)
    sys.stdout.write(json.dumps({"pid": pid}) + "\n")
    sys.stdout.flush()
    _, status = os.waitpid(pid, 0)
    sys.stdout.write(json.dumps({"status": os.waitstatus_to_exitcode(status)}) + "\n")
    sys.stdout.flush()


class WarmPython:
  """A server (started on first use, one per test process) and `run`, which runs one
  command through it; commands run one at a time. `isolated`: the server runs
  `python -I script` commands, else `python -m module` ones."""

  def __init__(self, env: dict[str, str], isolated: bool = False):
    self._env, self._flag = env, "-I" if isolated else "-m"
    self._server: subprocess.Popen | None = None

  def handles(self, argv: list[str]) -> bool:
    return len(argv) >= 3 and argv[0] == sys.executable and argv[1] == self._flag

  def _start(self) -> subprocess.Popen:
    if self._server is None or self._server.poll() is not None:
      self._server = subprocess.Popen(
          [sys.executable, *(["-I"] if self._flag == "-I" else []), __file__],
          stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self._env, text=True, bufsize=1)
      if json.loads(self._server.stdout.readline() or '{"ready": false}').get("ready") is not True:
        raise RuntimeError("the warm Python server did not start")
    return self._server

  def run(self, argv: list[str], env: dict[str, str], cwd: str, output: str,
          timeout_s: float) -> int | None:
    """The command's exit code, None if it was killed after `timeout_s`; its output
    is in the file `output`."""
    server = self._start()
    server.stdin.write(json.dumps({"argv": argv, "env": env, "cwd": cwd,
                                   "output": output}) + "\n")
    server.stdin.flush()
    pid = json.loads(server.stdout.readline())["pid"]
    timer = threading.Timer(timeout_s, os.kill, (pid, 9))
    timer.start()
    try:
      status = json.loads(server.stdout.readline())["status"]
    finally:
      timed_out = not timer.is_alive()
      timer.cancel()
    return None if timed_out and status == -9 else status

  def close(self) -> None:
    if self._server is not None and self._server.poll() is None:
      self._server.stdin.close()
      self._server.wait(timeout=60)


if __name__ == "__main__":
  serve()
