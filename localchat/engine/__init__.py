"""The engine: each loaded model runs in its own worker process (see DESIGN.md).

`api` is the interface (Engine, Generation, the events); `client` the local worker's parent side, `remote`
an OpenAI-compatible server. Only `llama.bindings` imports llama_cpp, and only inside the worker;
importing this package stays cheap.
"""

from localchat.engine.api import Engine, Event, FinishReason, Generation, Prompt, TextDelta
from localchat.engine.client import EngineClient, build_info

__all__ = ["Engine", "EngineClient", "Event", "FinishReason", "Generation", "Prompt", "TextDelta", "build_info"]
