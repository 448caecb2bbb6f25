# A merge worker. The PyPI torch wheel bundles its CUDA libraries; the NVIDIA container toolkit
# provides the driver. Run one container (one process) per GPU: CUDA is never initialised before fork.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /srv/loramerge
RUN pip install torch==2.13.0
COPY pyproject.toml README.md ./
COPY merge_core merge_core
COPY jobs jobs
COPY app app
COPY worker worker
RUN pip install . && useradd --uid 10001 --create-home loramerge && mkdir -p /data && chown loramerge /data
USER loramerge
ENV LORAMERGE_DATA_DIR=/data LORAMERGE_DEVICE=cuda
CMD ["celery", "-A", "worker.celery_app", "worker", "-Q", "gpu,cpu", "--concurrency", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
