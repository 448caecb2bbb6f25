# The HTTP API (and the webhook worker, which needs no GPU). The API still imports merge_core (the
# method registry and the spec checks run at submission), so torch comes in too, but the CPU wheel
# (no CUDA libraries, a fraction of the size): the API never runs a merge. An API without torch waits
# for the method registry to be split from the merge code.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /srv/loramerge
# torch first and pinned, so no dependency's `torch>=` pulls another build
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY merge_core merge_core
COPY jobs jobs
COPY app app
COPY worker worker
COPY loramerge_client loramerge_client
RUN pip install . && useradd --uid 10001 --create-home loramerge && mkdir -p /data && chown loramerge /data
USER loramerge
ENV LORAMERGE_DATA_DIR=/data
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["uvicorn", "--factory", "app.main:create_app", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--proxy-headers"]
