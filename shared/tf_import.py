"""Import TensorFlow without its start-up chatter on the terminal.

TensorFlow 2.21 writes absl and oneDNN notices straight to file descriptor 2 on import,
whatever TF_CPP_MIN_LOG_LEVEL says. The CLI hides them; if the import fails, the captured
text is printed, so a real problem is never hidden.

TensorFlow also warns that tf.function "retracing" is expensive once a process has traced a
few functions. Every model artifact has its own inference function with a fixed input
signature (each fold of `genre crossval`, the seed model of `genre evaluate`, each model a
classifier hot-reloads), traced once, so that warning points at nothing to fix; it is dropped."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from types import ModuleType


class _NotRetracing(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


RETRACING_FILTER = _NotRetracing()


def import_tensorflow_quietly() -> ModuleType:
    logging.getLogger("tensorflow").addFilter(RETRACING_FILTER)  # idempotent: a set of filters
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
