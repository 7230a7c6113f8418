"""Fixtures for the conversation store tests: a store in the test's own LOCALCHAT_HOME."""

from __future__ import annotations

import pytest


@pytest.fixture
def db_path(paths):
    return paths.db_path


@pytest.fixture
def store(db_path):
    from localchat.store import ConversationStore

    s = ConversationStore.open(db_path)
    yield s
    s.close()


@pytest.fixture
def other(db_path, store):
    """A second store on the same file: its own connection, as another process would have."""
    from localchat.store import ConversationStore

    s = ConversationStore.open(db_path)
    yield s
    s.close()
