# The segbench image: worker, dashboard and migrations (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# SIGTERM (docker stop) starts Celery's soft shutdown: runs finish their epoch and
# go back to the queue instead of being lost or waited for.
ENV REMAP_SIGTERM=SIGQUIT
# nvidia-smi (utility) lets each worker pick a free GPU without touching CUDA.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility

RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY db ./db
COPY dashboard ./dashboard
COPY migrations ./migrations
RUN pip install .

# Named volumes start with the ownership of these folders.
RUN useradd --create-home --uid 1000 segbench \
    && mkdir -p /data /artifacts /gpu-locks /home/segbench/.cache/huggingface \
    && chown -R segbench:segbench /data /artifacts /gpu-locks /home/segbench/.cache
USER segbench
ENV SEGBENCH_DATA_DIR=/data \
    SEGBENCH_ARTIFACTS_DIR=/artifacts \
    SEGBENCH_GPU_LOCK_DIR=/gpu-locks

CMD ["segbench", "--help"]
