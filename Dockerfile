# Layer worker image. Build: `docker build -t layer .`; run: see docker-compose.yml.
# Configuration is by environment only (layer/settings.py); no `.env` is baked in.

# --- build stage: install the project (runtime dependencies only) into a venv ----------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A compiler, in case a dependency has no wheel for the target platform (e.g. arm64).
# It stays in this stage; the runtime image only receives the venv.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /src
COPY . .
# `pip install .`: the `[project.dependencies]` only, no `dev`/`test` extras.
RUN pip install .

# --- runtime stage ------------------------------------------------------------------------
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/opt/venv/bin:$PATH"

RUN groupadd --system --gid 10001 layer \
    && useradd --system --uid 10001 --gid layer --home-dir /home/layer --create-home layer \
    && mkdir -p /data /app \
    && chown layer:layer /data /app

COPY --from=build /opt/venv /opt/venv

# Container defaults for Layer's settings (compose sets them again, explicitly).
# /data is owned by `layer`, so a named volume mounted there starts writable.
ENV LAYER_HOST=0.0.0.0 \
    LAYER_PORT=8080 \
    LAYER_DATA_DIR=/data

USER layer
WORKDIR /app

EXPOSE 8080

# slim has no curl: probe GET /healthz on LAYER_PORT with the standard library.
# urlopen raises on a connection error or a non-2xx status, so the exit code is 1.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LAYER_PORT', '8080') + '/healthz', timeout=4)"]

CMD ["layer", "worker"]
