"""Fixtures for the model source tests: generated GGUFs served by a local hub (tests/support/hubserver.py).

The hf and modelscope sources read HF_ENDPOINT / MODELSCOPE_ENDPOINT (and the tokens) at every call and
hand them to the clients explicitly, so in-process tests can point them at the local hub with monkeypatch;
the clients' own import-time reading of those variables is covered by test_mirror_env.py, which runs the
CLI in a subprocess with the variables set before it starts, as a user would.
"""

# The fixtures live in tests/support/sources.py (the pull-interrupt tests use them too); importing them
# here makes them this folder's fixtures, `fast_retries` autouse.
from tests.support.sources import fast_retries, hub, model_files, svc  # noqa: F401
