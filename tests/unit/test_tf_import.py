"""shared.tf_import: TensorFlow's import chatter and its retracing heuristic stay off stderr."""

from __future__ import annotations

import logging
import subprocess
import sys


def test_quiet_import_drops_only_the_retracing_warning():
    code = (
        "import logging, sys\n"
        "logging.basicConfig(stream=sys.stdout, format='%(name)s %(message)s')\n"
        "from shared.tf_import import import_tensorflow_quietly\n"
        "tf = import_tensorflow_quietly()\n"
        "for i in range(8):\n"
        "    f = tf.function(lambda x: x + 1)\n"
        "    f(tf.constant(float(i)))\n"
        "    f(tf.constant([float(i)]))\n"
        "logging.getLogger('tensorflow').warning('another warning')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "tensorflow another warning" in res.stdout
    assert "retracing" not in res.stdout + res.stderr
    # without the filter the same loop does warn, so the test above can fail
    plain = code.replace("from shared.tf_import import import_tensorflow_quietly\ntf = import_tensorflow_quietly()\n",
                         "import tensorflow as tf\n")
    res = subprocess.run([sys.executable, "-c", plain], capture_output=True, text=True, timeout=300)
    assert "triggered tf.function retracing" in res.stdout + res.stderr


def test_filter_is_added_once():
    from shared.tf_import import RETRACING_FILTER, import_tensorflow_quietly

    import_tensorflow_quietly()
    import_tensorflow_quietly()
    assert logging.getLogger("tensorflow").filters.count(RETRACING_FILTER) == 1
