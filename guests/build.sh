#!/usr/bin/env bash
# Builds every example guest (guests/<name>/main.c) into guests/<name>.wasm with
# Debian's clang-14 + lld-14 + wasi-libc + libclang-rt-14-dev-wasm32. The built
# modules are committed, so tests never need this toolchain; run this after
# changing a guest. Installs the toolchain with apt-get when it is missing.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v clang-14 >/dev/null || [ ! -d /usr/include/wasm32-wasi ] ||
    [ ! -f /usr/lib/llvm-14/lib/clang/14.0.6/lib/wasi/libclang_rt.builtins-wasm32.a ]; then
    echo "installing clang-14, lld-14, wasi-libc and the wasm32 runtime (apt-get)" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y clang-14 lld-14 wasi-libc \
        libclang-rt-14-dev-wasm32
fi

for source in */main.c; do
    name="${source%/main.c}"
    # A reactor has no _start; the host calls its exports (see its source).
    model=command
    case "$name" in reactor-*) model=reactor ;; esac
    # -O2, no debug info: small modules; the same source and toolchain give
    # the same bytes, so a rebuild shows up in git only when it changed.
    clang-14 --target=wasm32-wasi --sysroot=/usr -O2 -g0 -Wall -Wextra -Werror \
        -mexec-model="$model" -Wl,--strip-all -o "$name.wasm" "$source"
    echo "built guests/$name.wasm ($(wc -c <"$name.wasm") bytes)" >&2
done
