# Prometheus from Debian's package, for machines that cannot pull prom/prometheus.
# Same entry point and paths as that image: docker-compose.yml's prometheus service
# (its command line, /etc/prometheus, /prometheus) runs unchanged on it.
ARG DEBIAN_IMAGE=genre-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus wget \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus && chown 65534:65534 /prometheus
USER 65534:65534
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
