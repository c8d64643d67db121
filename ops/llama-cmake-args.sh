#!/bin/sh
# CMake flags for building llama-cpp-python on this machine's CPU.
#
# ggml's default native build compiles AMX tile kernels wherever the CPU reports AMX, and some virtual machines
# report AMX but fault on the first tile instruction (SIGILL). So the instruction sets are named one by one from
# /proc/cpuinfo, AMX left out. On a CUDA workstation set CMAKE_ARGS="-DGGML_CUDA=on" yourself instead.
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
has() { case " $flags " in *" $1 "*) return 0 ;; esac; return 1; }
args="-DGGML_NATIVE=OFF"
has avx && args="$args -DGGML_AVX=ON"
has avx2 && args="$args -DGGML_AVX2=ON"
has fma && args="$args -DGGML_FMA=ON"
has f16c && args="$args -DGGML_F16C=ON"
has avx512f && args="$args -DGGML_AVX512=ON"
has avx512vbmi && args="$args -DGGML_AVX512_VBMI=ON"
has avx512_vnni && args="$args -DGGML_AVX512_VNNI=ON"
has avx512_bf16 && args="$args -DGGML_AVX512_BF16=ON"
echo "$args"
