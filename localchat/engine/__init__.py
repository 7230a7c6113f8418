"""The engine: each loaded model runs in its own worker process (see DESIGN.md).

Only `native` imports llama_cpp, and only inside the worker; importing this package stays cheap.
"""

from localchat.engine.client import EngineClient, Generation, build_info

__all__ = ["EngineClient", "Generation", "build_info"]
