# vsearch: the UI/API server and the indexer in one image.
#
#   docker build -t vsearch .
#   docker compose up -d                                   # Milvus + UI (docker-compose.yml)
#   docker compose run --rm indexer index /catalog/catalog.csv
#
# PyPI's Linux torch wheels are CUDA builds (the CUDA runtime comes as pip wheels), so the
# same image runs the indexer on a GPU when the container gets one (NVIDIA driver and
# container toolkit on the host; compose profile "indexer-gpu") and on the CPU otherwise.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VSEARCH_CACHE_DIR=/cache \
    HF_HOME=/cache/huggingface \
    XDG_CACHE_HOME=/cache \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_DISABLE_TELEMETRY=1

# curl: health checks; libgomp1: torch's OpenMP on slim images
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl libgomp1 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 vsearch \
    && mkdir -p /cache /catalog /app \
    && chown vsearch:vsearch /cache /catalog

WORKDIR /app
COPY pyproject.toml README.md ./
COPY search ./search
COPY indexer ./indexer
COPY ui ./ui
RUN pip install . && rm -rf /root/.cache

USER vsearch
# model weights and the URL download cache persist in this volume (VSEARCH_CACHE_DIR)
VOLUME ["/cache"]
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD curl -s -o /dev/null http://127.0.0.1:7860/health || exit 1

ENTRYPOINT ["vsearch"]
CMD ["serve", "--host", "0.0.0.0", "--port", "7860"]
