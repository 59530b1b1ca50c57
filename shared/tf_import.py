"""Import TensorFlow without its start-up chatter on the terminal.

TensorFlow 2.21 writes absl and oneDNN notices straight to file descriptor 2 on import,
whatever TF_CPP_MIN_LOG_LEVEL says. The CLI hides them; if the import fails, the captured
text is printed, so a real problem is never hidden."""

from __future__ import annotations

import os
import sys
import tempfile
from types import ModuleType


def import_tensorflow_quietly() -> ModuleType:
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf
            import keras  # noqa: F401 - its import logs through the same channel

            tf.constant(0.0)  # the first op initialises absl logging: its notice goes here too
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tf
