#!/bin/sh
# Build llama.cpp's own server (and llama-bench, which bench/llm.py compares against) from the llama.cpp sources
# inside the llama-cpp-python release we pin, so both run the same llama.cpp. Cached per version and CMAKE_ARGS,
# like the llama-cpp-python wheel: a reinstall only copies the binaries.
#
#   sh ops/build-llama-server.sh VERSION CACHE_DIR BIN_DIR
set -eu
version=$1
cache=$2
bin=$3
pip="$bin/pip"

if [ ! -x "$cache/llama-server" ] || [ ! -x "$cache/llama-bench" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    echo "building llama-server from llama-cpp-python $version's llama.cpp (minutes, once)"
    "$pip" download --quiet --no-deps --no-binary :all: -d "$work" "llama-cpp-python==$version"
    tar -xzf "$work"/llama_cpp_python-"$version".tar.gz -C "$work"
    src="$work/llama_cpp_python-$version/vendor/llama.cpp"
    # Static binaries, no web UI (nothing may be fetched at build time), no HTTPS or curl (the agents speak plain
    # HTTP on loopback). CMAKE_ARGS carries the CPU's instruction sets (ops/llama-cmake-args.sh) or GGML_CUDA.
    # shellcheck disable=SC2086
    cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
        -DLLAMA_BUILD_APP=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
        ${CMAKE_ARGS:-} > "$work/cmake.log"
    cmake --build "$work/build" --target llama-server llama-bench -j "$(nproc)" > "$work/build.log" 2>&1 ||
        { tail -40 "$work/build.log"; exit 1; }
    mkdir -p "$cache"
    cp "$work/build/bin/llama-server" "$work/build/bin/llama-bench" "$cache/"
fi
cp "$cache/llama-server" "$cache/llama-bench" "$bin/"
