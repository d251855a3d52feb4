# `ssd serve` in a container: the CPU build of torch, the [serve] and [onnx] extras, a non-root user.
#   docker build -t ssd-serve .
#   docker run -p 8000:8000 -v $PWD/runs/exp/best.pt:/models/model.pt:ro ssd-serve
# Health: GET /health (readiness: 200 once the model is loaded), GET /health/live (liveness).
FROM python:3.11-slim

# The CPU build first, from PyTorch's own index, so that pip never pulls the CUDA packages.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /opt/ssd
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir ".[serve,onnx]"

RUN useradd --create-home --uid 1000 ssd
USER ssd
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
    CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2).status != 200)"
# uvicorn finishes the requests in flight on SIGTERM (docker stop), then the server exits 0.
ENTRYPOINT ["ssd", "serve", "--host", "0.0.0.0", "--port", "8000"]
CMD ["--weights", "/models/model.pt"]
