# The HTTP API. It imports merge_core (method registry, spec checks), so torch comes in too.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /srv/loramerge
# torch first and pinned, so no dependency's `torch>=` pulls another build
RUN pip install torch==2.13.0
COPY pyproject.toml README.md ./
COPY merge_core merge_core
COPY jobs jobs
COPY app app
COPY worker worker
RUN pip install . && useradd --uid 10001 --create-home loramerge && mkdir -p /data && chown loramerge /data
USER loramerge
ENV LORAMERGE_DATA_DIR=/data
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["uvicorn", "--factory", "app.main:create_app", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--proxy-headers"]
