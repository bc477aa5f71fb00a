# Pytree Playground: one server process on 0.0.0.0:8000, its data on the /data volume.
#
#   docker build -t pytree-playground .                            # CPU (the default)
#   docker build -t pytree-playground:gpu --build-arg JAX_EXTRA=cuda12 .   # JAX with CUDA 12
#   docker run -p 8000:8000 -v playground-data:/data pytree-playground
#   docker run --gpus all -p 8000:8000 -v playground-data:/data pytree-playground:gpu
#
# Settings come from the environment (PLAYGROUND_*, see docs/serving.md), e.g.
#   -e PLAYGROUND_DATABASE_URL=postgresql+psycopg://user:password@db:5432/playground
FROM python:3.11-slim

# Empty for the CPU build; "cuda12" installs jax[cuda12] (CUDA and cuDNN come as pip wheels,
# the host needs only the NVIDIA driver and the NVIDIA container toolkit for --gpus).
ARG JAX_EXTRA=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PLAYGROUND_DATA_DIR=/data \
    HOST=0.0.0.0 \
    PORT=8000

RUN groupadd --system --gid 10001 playground \
    && useradd --system --uid 10001 --gid playground --create-home --home-dir /home/playground \
       --shell /usr/sbin/nologin playground \
    && mkdir -p /data \
    && chown playground:playground /data

WORKDIR /srv/playground

# Dependencies first (their layer is reused while only the code changes).
COPY pyproject.toml README.md ./
RUN mkdir -p app library \
    && touch app/__init__.py library/__init__.py \
    && pip install . \
    && if [ -n "$JAX_EXTRA" ]; then pip install "jax[${JAX_EXTRA}]"; fi \
    && pip uninstall --yes pytree-playground \
    && rm -rf app library build *.egg-info

# The code, templates and static files; the app finds templates/ and static/ beside app/.
COPY app ./app
COPY library ./library
COPY templates ./templates
COPY static ./static
# The library's reference, served at /library.
COPY docs/library.md ./docs/library.md

USER playground

VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; url = 'http://127.0.0.1:%s/api/health' % os.environ.get('PORT', '8000'); sys.exit(0 if urllib.request.urlopen(url, timeout=4).status == 200 else 1)"]

CMD ["sh", "-c", "exec python -m app --host \"$HOST\" --port \"$PORT\""]
