"""TensorFlow's environment defaults that `import zoo` (and the command-line tools) set before
TensorFlow is imported: oneDNN on by default (TensorFlow leaves it off on AVX2-only CPUs, where
it measured 1.6-1.75x faster), and TF_ENABLE_ONEDNN_OPTS=0 still turns it off."""
import os
import subprocess
import sys

import pytest

_ONEDNN = ("import zoo, os; import tensorflow as tf; from tensorflow.python.util import _pywrap_util_port as p; "
           "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), p.IsMklEnabled())")


def _run(code, **env):
    clean = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    done = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


@pytest.mark.parametrize("setting,expected", [(None, ["1", "True"]), ("0", ["0", "False"])])
def test_onednn_is_on_unless_turned_off(setting, expected):
    assert _run(_ONEDNN, **({"TF_ENABLE_ONEDNN_OPTS": setting} if setting else {}))[-2:] == expected


def test_command_line_packages_set_the_defaults_before_tensorflow():
    code = "import os, sys, trainers, export; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), 'tensorflow' in sys.modules)"
    assert _run(code)[-2:] == ["1", "False"]
