# Sourced by the scripts: makes sure a virtual environment with localchat and its test extras exists.
# The venv is reused between runs; it is refreshed only when pyproject.toml changes.
# LOCALCHAT_VENV points somewhere else (a shared venv for several checkouts).
VENV=${LOCALCHAT_VENV:-$PWD/.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.localchat-stamp"
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtual environment in $VENV (first run: llama-cpp-python compiles llama.cpp, a few minutes)" >&2
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
fi
# A venv shared by several checkouts (LOCALCHAT_VENV) is managed by its owner, not refreshed from here.
if [ -z "${LOCALCHAT_VENV:-}" ] && [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  if ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
    # llama-cpp-python compiles llama.cpp here. GCC 12 (Debian 12) miscompiles its AMX kernels unless the
    # intrinsics are corrected (scripts/build/gcc-amx-fix.h, a no-op for other compilers); with the fix,
    # Intel CPUs with AMX decode Q4 models about twice as fast. --no-cache-dir: a wheel pip cached from a
    # build without the fix must not be reused. CMAKE_ARGS (e.g. -DGGML_CUDA=on) passes through.
    echo "building llama-cpp-python (compiles llama.cpp: a few minutes)" >&2
    CXXFLAGS="${CXXFLAGS:-} -include $PWD/scripts/build/gcc-amx-fix.h" \
      "$VENV/bin/python" -m pip install -q --no-cache-dir \
      "$(grep -o '"llama-cpp-python[^"]*"' pyproject.toml | tr -d '"')" >&2
  fi
  echo "installing localchat and its dependencies into $VENV" >&2
  "$VENV/bin/python" -m pip install -q -e ".[test]" >&2
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
