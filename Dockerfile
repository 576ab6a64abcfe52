# kvconf: the REST API and CLI in one image.
#   docker build -t kvconf .
#   docker run -p 127.0.0.1:8767:8767 -e KVCONF_ADMIN_TOKEN=... -v kvconf-data:/data kvconf
# Without KVCONF_REDIS_URL it serves the embedded store, durable in /data.

FROM python:3.11-slim AS build
# A C compiler builds the optional fast path of the watcher's cached reads.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY kvconf ./kvconf
COPY api ./api
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin kvconf \
    && mkdir -p /data && chown kvconf:kvconf /data && chmod 700 /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER kvconf
# HOME=/data makes the default data dir /data/.kvconf (snapshots in /data/.kvconf/snapshots)
ENV HOME=/data \
    PYTHONUNBUFFERED=1 \
    KVCONF_HOST=0.0.0.0 \
    KVCONF_PORT=8767
VOLUME ["/data"]
EXPOSE 8767
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8767/healthz', timeout=2)"]
CMD ["kvconf", "serve"]
