# A single-node Apache Kafka (KRaft) image from the Maven jars `genre broker` uses
# (deploy/kafka/pom.xml) and Debian's Java 17, for machines that cannot pull
# apache/kafka. It reads the same KAFKA_* variables as apache/kafka (see kafka-run.sh),
# so docker-compose.yml's kafka service runs unchanged on it.
# Build context: prepared by deploy/local/build-images.sh (libs/, log4j2.yaml, bin/).
ARG DEBIAN_IMAGE=genre-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
# the base excludes man pages, but Java's postinst links one into man1
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 appuser \
 && useradd --uid 1000 --gid 1000 --home-dir /opt/kafka --no-create-home --shell /usr/sbin/nologin appuser \
 && mkdir -p /var/lib/kafka/data /opt/kafka/config \
 && chown -R 1000:1000 /var/lib/kafka /opt/kafka/config
COPY libs/ /opt/kafka/libs/
COPY log4j2.yaml /opt/kafka/log4j2.yaml
COPY bin/ /opt/kafka/bin/
ENV KAFKA_HEAP_OPTS="-Xmx512m -Xms128m"
USER 1000:1000
EXPOSE 9092 9093
ENTRYPOINT ["/opt/kafka/bin/kafka-run.sh"]
