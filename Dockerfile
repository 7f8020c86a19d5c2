# imagine-bot: one process serving the configured chat platforms.
#
# Python 3.12: the suite runs on it too (.ci/run, next to 3.11). Needs Docker Engine 25 or
# newer (HEALTHCHECK --start-interval). The dependencies come from requirements.lock, in a
# layer of their own before any code, so a code change rebuilds only the last layers; see
# README, "Docker", for refreshing the lock.
ARG PYTHON_IMAGE=python:3.12-slim

# --- build: the project's wheel (the build backend stays out of the image) ----------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN pip install "hatchling==1.29.0"
COPY pyproject.toml README.md LICENSE ./
COPY bot ./bot
COPY adapters ./adapters
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /dist .

# --- the image ------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="imagine-bot" \
      org.opencontainers.image.description="Self-hosted image generation for Discord and Slack, with per-user quotas enforced in SQLite." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="docker.io/library/python:3.12-slim"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATABASE_URL=sqlite:////data/imagine.db \
    HTTP_PORT=8080 \
    HTTP_HOST=0.0.0.0

WORKDIR /app
# Dependencies first, exactly as locked (hashes checked): cached until requirements.lock changes.
COPY requirements.lock ./
RUN pip install --no-deps --require-hashes -r requirements.lock

RUN groupadd --system --gid 10001 imagine \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin imagine \
    && mkdir -p /data \
    && chown 10001:10001 /data

# The code last: only these layers change with it.
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-deps /tmp/dist/*.whl && rm -rf /tmp/dist

USER 10001:10001
VOLUME ["/data"]
# /healthz, /metrics and Slack HTTP mode's /slack/events.
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --start-interval=2s --retries=3 \
    CMD ["imagine-bot", "healthcheck"]
# With no platform configured, wait with the reason in the log instead of exiting into a
# restart loop.
CMD ["imagine-bot", "run", "--wait-for-config"]
