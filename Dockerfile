# stream-triage service image. Build from the repository root: docker build -t stream-triage .

# The compiled pipeline kernel and syslog fast path need a C compiler; only this stage has one.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY stream_triage ./stream_triage
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -m zipfile -l /wheels/*.whl | grep -q "_kernel.*\.so" \
    && python -m zipfile -l /wheels/*.whl | grep -q "_syslog_fast.*\.so"

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies and package first, so editing deploy/ files does not reinstall them.
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels

COPY deploy ./deploy

# A fixed, unprivileged uid that owns only the data directory.
RUN useradd --system --user-group --uid 10001 --home-dir /app --shell /usr/sbin/nologin stream-triage \
    && mkdir -p /data \
    && chown stream-triage:stream-triage /data \
    && chmod 0750 /data
USER stream-triage

ENV STREAM_TRIAGE_DB=/data/stream-triage.db
VOLUME ["/data"]
# 8080: HTTP (/drain, /healthz, /readyz, /metrics); 5514: syslog TCP; 6514: syslog TLS.
EXPOSE 8080 5514 6514

# slim has no curl: probe /healthz with the standard library. PORT follows the Render convention.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=4)"]

CMD ["stream-triage", "serve", "--config", "deploy/compose.toml"]
