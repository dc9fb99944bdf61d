# driftmon: CPU torch by default; for a CUDA image pass the CUDA wheel index, e.g.
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124 .
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --system --uid 10001 --home-dir /var/lib/driftmon --create-home driftmon

WORKDIR /opt/driftmon
COPY pyproject.toml README.md alembic.ini ./
COPY driftmon ./driftmon
COPY migrations ./migrations
# The same install command as the Makefile's (tests/test_packaging.py checks it).
RUN pip install --no-cache-dir --extra-index-url "${TORCH_INDEX_URL}" .

COPY config.yaml /etc/driftmon/config.yaml
ENV DRIFTMON_CONFIG=/etc/driftmon/config.yaml \
    DRIFTMON_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1

USER driftmon
WORKDIR /var/lib/driftmon
EXPOSE 9847
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "driftmon"]
CMD ["check-config"]
