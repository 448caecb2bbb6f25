# A merge worker. The PyPI torch wheel bundles its CUDA libraries; the NVIDIA container toolkit
# provides the driver. Run one container (one process) per GPU: CUDA is never initialised before fork.
# The CPU-only variant (compose profile "cpu") builds with TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu:
# the same torch version without CUDA libraries.
FROM python:3.11-slim
ARG TORCH_INDEX_URL=https://pypi.org/simple
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /srv/loramerge
RUN pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0
COPY pyproject.toml README.md ./
COPY merge_core merge_core
COPY jobs jobs
COPY app app
COPY worker worker
COPY loramerge_client loramerge_client
RUN pip install . && useradd --uid 10001 --create-home loramerge && mkdir -p /data && chown loramerge /data
USER loramerge
ENV LORAMERGE_DATA_DIR=/data LORAMERGE_DEVICE=cuda
# Healthy while this container's pool process beats in Redis (jobs.heartbeat); no Celery broadcast ping.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["python", "-m", "worker.healthcheck"]
CMD ["celery", "-A", "worker.celery_app", "worker", "-Q", "gpu,cpu", "--concurrency", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
