"""Fixtures for the app's tests."""

from __future__ import annotations

import pytest

from tests.support.models import ENDLESS_CONTEXT


@pytest.fixture(scope="session")
def endless_model(tmp_path_factory):
    """A tiny model that talks until its 32k-token window is full: at thousands of tokens a second that still
    takes a while, so a test can stop it, swap it or kill it mid-reply (the 2k-window loop model finishes first)."""
    from tests.support.ggufgen import make_tiny_gguf

    return make_tiny_gguf(tmp_path_factory.mktemp("endless") / "endless.gguf", reply="abcdefgh ", loop=True,
                          n_ctx_train=ENDLESS_CONTEXT)
