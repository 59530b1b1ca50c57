"""python -m services.classifier: batch predictions across songs, vote, publish verdicts."""

from __future__ import annotations

import logging
import sys

from shared import kafka_io
from services.classifier.loop import ClassifierLoop
from shared.metrics import ServiceMetrics
from shared.service import configure_logging
from shared.settings import Settings

logger = logging.getLogger("services.classifier")


def main() -> int:
    settings = Settings.from_env()
    configure_logging(settings)
    metrics = ServiceMetrics("classifier")
    metrics.serve(settings.metrics_port)
    loop = ClassifierLoop(settings, metrics)
    loop.stop.install()
    try:
        loop.run_forever()
    except kafka_io.AuthenticationFailed as exc:
        logger.error("%s", exc)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
