"""python -m services.classifier: batch predictions across songs, vote, publish verdicts.

Runs on the GPU when TensorFlow sees one (memory growth on; GENRE_MIXED_PRECISION=1 for
float16 compute), on the CPU otherwise; the device is logged at start and exported as
genre_classifier_device. The CPU and GPU images differ only by the VARIANT build argument
(deploy/Dockerfile).
"""

from __future__ import annotations

import logging
import sys

from services.classifier.loop import ClassifierLoop
from shared.metrics import ServiceMetrics
from shared.model import ModelLoadError
from shared.service import StartupError, StopFlag, run_service
from shared.settings import Settings
from shared.thread_priority import COMPUTE_THREADS, lower_other_threads

logger = logging.getLogger("services.classifier")
SERVICE = "classifier"


def log_devices() -> None:
    from shared.model import device
    from shared.tf_import import import_tensorflow_quietly

    tf = import_tensorflow_quietly()  # also drops the retracing warning of hot reloads

    gpus = [g.name for g in tf.config.list_physical_devices("GPU")]
    logger.info("TensorFlow %s; GPUs visible: %s; inference on %s", tf.__version__, ", ".join(gpus) or "none", device())


def build(settings: Settings, metrics: ServiceMetrics, stop: StopFlag) -> ClassifierLoop:
    log_devices()
    try:
        loop = ClassifierLoop(settings, metrics, stop=stop)
    except ModelLoadError as exc:
        raise StartupError(f"{exc} (GENRE_MODEL_PATH={settings.model_path})") from None
    # The model is loaded and warmed up, so TensorFlow's (and CUDA's) threads exist; the Kafka
    # clients and the inference worker start later and inherit the poll thread's value.
    changed = lower_other_threads(settings.classifier_io_nice, COMPUTE_THREADS)
    if changed:
        logger.info("threads other than TensorFlow's run at nice +%d (GENRE_CLASSIFIER_IO_NICE)",
                    settings.classifier_io_nice)
    return loop


def main() -> int:
    return run_service(SERVICE, build)


if __name__ == "__main__":
    sys.exit(main())
