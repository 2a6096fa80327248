#!/usr/bin/env bash
# Builds every example guest into guests/<name>.wasm: guests/<name>/main.c with
# Debian's clang-14 + lld-14 + wasi-libc + libclang-rt-14-dev-wasm32, and
# guests/<name>/main.zig with Zig 0.13 from PyPI's `ziglang` package. The built
# modules are committed, so tests never need these toolchains; run this after
# changing a guest. Installs the toolchains (apt-get, pip) when they are missing.
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

# Zig 0.13, pinned: the standard library's I/O changed in later releases.
zig_dir="${XDG_CACHE_HOME:-$HOME/.cache}/understudy/ziglang-0.13.0"
if [ ! -d "$zig_dir/ziglang" ]; then
    echo "installing ziglang 0.13.0 (pip) into $zig_dir" >&2
    python3 -m pip install --quiet --target "$zig_dir" ziglang==0.13.0
fi
for source in */main.zig; do
    name="${source%/main.zig}"
    PYTHONPATH="$zig_dir" python3 -m ziglang build-exe "$source" -target wasm32-wasi \
        -O ReleaseSmall -fstrip -femit-bin="$name.wasm"
    rm -f "$name.wasm.o"
    echo "built guests/$name.wasm ($(wc -c <"$name.wasm") bytes)" >&2
done
