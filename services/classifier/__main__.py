"""python -m services.classifier: batch predictions across songs, vote, publish verdicts.

Runs on the GPU when TensorFlow sees one (memory growth on; GENRE_MIXED_PRECISION=1 for
float16 compute), on the CPU otherwise; the device is logged at start and exported as
genre_classifier_device. The CPU and GPU images differ only by the VARIANT build argument
(deploy/Dockerfile).
"""

from __future__ import annotations

import logging
import sys

from shared import kafka_io
from services.classifier.loop import ClassifierLoop, WorkerDied
from shared.metrics import ServiceMetrics
from shared.model import ModelLoadError
from shared.service import configure_logging
from shared.settings import Settings

logger = logging.getLogger("services.classifier")


def log_devices() -> None:
    from shared.model import device

    import tensorflow as tf

    gpus = [g.name for g in tf.config.list_physical_devices("GPU")]
    logger.info("TensorFlow %s; GPUs visible: %s; inference on %s", tf.__version__, ", ".join(gpus) or "none", device())


def main() -> int:
    settings = Settings.from_env()
    configure_logging(settings)
    metrics = ServiceMetrics("classifier")
    metrics.serve(settings.metrics_port)
    log_devices()
    try:
        loop = ClassifierLoop(settings, metrics)
    except ModelLoadError as exc:
        logger.error("cannot start: %s", exc)
        return 2
    loop.stop.install()
    try:
        loop.run_forever()
    except kafka_io.AuthenticationFailed as exc:
        logger.error("%s", exc)
        return 3
    except WorkerDied as exc:
        logger.error("%s; exiting so the supervisor restarts the service from the committed offsets", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
