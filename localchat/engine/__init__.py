"""The engine: each loaded model runs in its own worker process (see DESIGN.md).

`api` is the interface (Engine, Generation, the events); `client` the local worker's parent side, `remote`
an OpenAI-compatible server. Only `llama.bindings` imports llama_cpp, and only inside the worker;
importing this package stays cheap.
"""

from typing import TYPE_CHECKING, Any

from localchat.engine.api import Engine, Event, FinishReason, Generation, Prompt, TextDelta

if TYPE_CHECKING:
    from localchat.engine.client import EngineClient, build_info


def __getattr__(name: str) -> Any:
    # The client is imported on first use, so modules the client itself imports (localchat.reasoning) may
    # import localchat.engine.api without a cycle.
    if name in ("EngineClient", "build_info"):
        from localchat.engine import client

        return getattr(client, name)
    raise AttributeError(f"module 'localchat.engine' has no attribute {name!r}")

__all__ = ["Engine", "EngineClient", "Event", "FinishReason", "Generation", "Prompt", "TextDelta", "build_info"]
