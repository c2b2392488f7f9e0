# syntax=docker/dockerfile:1
# The trustwarden operator image:
#   docker build -t trustwarden:0.1.0 .
# Two stages: build wheels for the package and its pinned dependencies, then install them into
# a slim runtime that has no compiler, no pip cache, no source tree and no root user.

# The Python the test suite runs on (pyproject: requires-python >= 3.11).
ARG PYTHON_VERSION=3.11.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# pyproject.toml pins every runtime dependency to an exact version.
RUN pip wheel --wheel-dir /wheels .

FROM python:${PYTHON_VERSION}-slim-bookworm
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 \
    # Bytecode is compiled at install time; the root filesystem is read-only at run time.
    PYTHONDONTWRITEBYTECODE=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels trustwarden \
    && groupadd --gid 65532 trustwarden \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin trustwarden
# Numeric, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 65532:65532
WORKDIR /tmp
# Webhook 9443, metrics 8080, liveness 8081 (the chart passes the same ports).
EXPOSE 9443 8080 8081
ENTRYPOINT ["trustwarden", "run"]
