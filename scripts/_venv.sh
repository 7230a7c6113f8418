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
  echo "installing localchat and its dependencies into $VENV" >&2
  "$VENV/bin/python" -m pip install -q -e ".[test]" >&2
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
