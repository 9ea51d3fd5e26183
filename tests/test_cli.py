"""What a user sees when the command line is wrong: one line, exit code 2, no traceback."""
import subprocess
import sys

from click.testing import CliRunner
import pytest

from pipeline.cli import main
from conftest import make_dataset


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  return make_dataset(tmp_path_factory.mktemp("cli") / "photos", {"all": 2}, splits=False)


@pytest.mark.parametrize("args, message", [
    (["--data-root", "/no/such/photos"],
     "Run stopped: Data root not found or not a folder: /no/such/photos"),
    (["--set", "train.image_size"],
     "Error: --set expects KEY=VALUE, e.g. --set train.image_size=160; got 'train.image_size'"),
    (["--set", "train.base_model=resnet18"],
     "Error: train.base_model: unknown base 'resnet18'; choose from mobilenet_v2, vgg16, "
     "resnet50, xception, efficientnet_b0, inception_v3"),
    (["--config", "{bad_yaml}"], "Error: config file {bad_yaml} is not valid YAML"),
    (["--pipeline-name", "My_Photos"], "Error: pipeline_name 'My_Photos' is not allowed"),
])
def test_mistakes_are_one_line_with_exit_code_2(photos, tmp_path, args, message):
  bad_yaml = tmp_path / "bad.yaml"
  bad_yaml.write_text("train: [unclosed\n")
  args = [a.format(bad_yaml=bad_yaml) for a in args]
  if "--data-root" not in args:
    args += ["--data-root", str(photos)]
  result = CliRunner().invoke(main, ["run", "--outputs", str(tmp_path / "out"),
                                     "--weights", "none", *args])
  lines = result.output.strip().splitlines()
  assert result.exit_code == 2, result.output
  assert len(lines) == 1 and lines[0].startswith(message.format(bad_yaml=bad_yaml)), result.output
  assert result.exception is None or isinstance(result.exception, SystemExit)
  assert not (tmp_path / "out").exists()  # nothing was started


def test_the_installed_command_prints_no_traceback(photos, tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "pipeline.cli", "run", "--data-root", str(photos),
       "--outputs", str(tmp_path), "--set", "train.phase1_epochs=0"],
      capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stdout == ""
  errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
  assert errors == ["Error: train.phase1_epochs must be at least 1, got 0"], result.stderr
  assert "Traceback" not in result.stderr
