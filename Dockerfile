# driftmon: the data-drift monitoring daemon.
# CPU torch by default; for a CUDA image pass a CUDA wheel index, for example
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 -t driftmon:cuda .
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# tini forwards SIGTERM to driftmon and reaps children (exec-form ENTRYPOINT below).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --system --uid 10001 --home-dir /var/lib/driftmon --create-home driftmon

WORKDIR /opt/driftmon
COPY pyproject.toml README.md ./
COPY driftmon ./driftmon
COPY migrations ./migrations
# The same install command as the Makefile's (tests/test_packaging.py checks it).
RUN pip install --no-cache-dir --extra-index-url "${TORCH_INDEX_URL}" .

# Mount your own config over this file; secrets come from the environment
# (DRIFTMON_DATABASE_URL, and ${VARS} referenced in the config).
COPY config.yaml /etc/driftmon/config.yaml
ENV DRIFTMON_CONFIG=/etc/driftmon/config.yaml \
    DRIFTMON_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1

USER 10001
WORKDIR /var/lib/driftmon
EXPOSE 9847
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 CMD ["driftmon", "healthcheck"]
ENTRYPOINT ["tini", "--", "driftmon"]
CMD ["serve"]
