"""The OpenAI-compatible HTTP server (`localchat serve`): the only package that imports FastAPI/uvicorn.

create_app(services, settings) builds the app; run_server(services, settings) binds and serves it.
"""

from localchat.server.settings import ServerSettings


def create_app(services, settings: ServerSettings | None = None):
    from localchat.server.app import create_app as _create_app

    return _create_app(services, settings)


def run_server(services, settings: ServerSettings) -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        from localchat.errors import LocalchatError

        raise LocalchatError(f"`localchat serve` needs {exc.name}, which is not installed",
                             hint="install the server extra: pip install 'localchat[serve]'") from None
    from localchat.server.runner import run_server as _run_server

    _run_server(services, settings)


__all__ = ["ServerSettings", "create_app", "run_server"]
