# A Python 3.11 base from Debian's own packages (bookworm ships 3.11), for machines
# that reach no image registry: deploy/local/build-images.sh builds it on the
# debootstrap base and passes it to deploy/Dockerfile as PYTHON_IMAGE.
ARG DEBIAN_IMAGE=genre-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python-is-python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
