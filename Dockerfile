# The kokpit image, for a machine with Docker, Podman or BuildKit:
#
#   docker build -t kokpit:0.1.0 --build-arg REVISION=$(git rev-parse HEAD) \
#       --build-arg SOURCE=https://example.org/your/kokpit.git .
#
# Where no registry can be reached, `make image` builds the same image from the Debian mirror
# instead (kokpit/local/kokpit_image.py); docs/image.md says how the two differ.
#
# Two stages: the builder makes a virtualenv from the hash-pinned runtime lock
# (requirements-image.lock: requirements.lock's pins, without the test and lint tools) and
# kokpit itself; the final stage is the same Python base with that virtualenv copied in,
# pip removed, and a non-root user. Every dependency is a wheel (--only-binary): no compiler
# is needed, in either stage.

ARG PYTHON=3.11

FROM python:${PYTHON}-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements-image.lock ./
RUN python -m venv /opt/kokpit/venv \
 && /opt/kokpit/venv/bin/pip install --require-hashes --no-deps --only-binary=:all: \
        -r requirements-image.lock
COPY pyproject.toml README.md ./
COPY kokpit ./kokpit
# setuptools (the build backend) is in the lock already (pbr needs it at run time), so the
# build needs no isolation and no index; then the virtualenv's pip goes.
RUN /opt/kokpit/venv/bin/pip install --no-deps --no-build-isolation --no-index . \
 && /opt/kokpit/venv/bin/python -m compileall -q /opt/kokpit/venv/lib \
 && /opt/kokpit/venv/bin/python -m pip uninstall -y -q pip

FROM python:${PYTHON}-slim-bookworm
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="kokpit" \
      org.opencontainers.image.description="A fleet manager for Kubernetes in the kube-on-kube style." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
# No pip (nor setuptools and wheel, which the base image's own Python carries) at run time.
RUN python -m pip uninstall -y -q pip setuptools wheel \
 && rm -rf /root/.cache \
 && echo 'nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'nonroot:x:65532:' >> /etc/group \
 && mkdir -p /home/nonroot && chown 65532:65532 /home/nonroot
COPY --from=builder /opt/kokpit/venv /opt/kokpit/venv
ENV PATH=/opt/kokpit/venv/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
WORKDIR /home/nonroot
ENTRYPOINT ["kokpit"]
CMD ["--help"]
