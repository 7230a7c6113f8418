"""Bind the socket, run uvicorn, and say where the server listens once it is ready."""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
from typing import Any

from localchat.errors import LocalchatError
from localchat.server.settings import ServerSettings


def run_server(services: Any, settings: ServerSettings) -> None:
    """Serve until SIGINT/SIGTERM. Prints `localchat: serving ... on http://HOST:PORT/v1` on stderr once the
    default model is loaded and the socket accepts (with --port 0 that line tells the port chosen)."""
    import uvicorn

    from localchat.server.app import create_app

    app = create_app(services, settings)
    sock = _bind(settings.host, settings.port)
    port = sock.getsockname()[1]
    sockets = [sock]
    if settings.ollama_port is not None:  # the same app on Ollama's port, for clients that assume it
        try:
            sockets.append(_bind(settings.host, settings.ollama_port, "--ollama-port"))
        except BaseException:
            sock.close()
            raise
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config = uvicorn.Config(app, log_level="info", lifespan="on", timeout_graceful_shutdown=5,
                            server_header=False, date_header=True)
    loops: list[asyncio.AbstractEventLoop] = []

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # Ctrl-C / SIGTERM: end the running replies too, so open streams close now instead of
            # holding the graceful shutdown up. The handler may interrupt the loop anywhere: schedule.
            super().handle_exit(sig, frame)
            if loops:
                loops[0].call_soon_threadsafe(app.state.stop_generations)

    server = Server(config)

    async def main() -> None:
        loops.append(asyncio.get_running_loop())
        serving = asyncio.create_task(server.serve(sockets=sockets))
        while not server.started and not serving.done():
            await asyncio.sleep(0.02)
        if server.started:
            loaded = f"{settings.default_model} " if settings.default_model else ""
            auth = "API key required" if settings.api_key else "no API key"
            print(f"localchat: serving {loaded}on http://{host}:{port}/v1 ({auth}, up to {settings.max_models} "
                  f"model{'s' if settings.max_models != 1 else ''} loaded; Ctrl-C stops)", file=sys.stderr, flush=True)
            if len(sockets) > 1:
                print(f"localchat: Ollama API also on http://{host}:{sockets[1].getsockname()[1]} (and on the port "
                      "above, under /api)", file=sys.stderr, flush=True)
        await serving

    try:
        asyncio.run(main())
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it caught, once it has shut down cleanly
        print("localchat: server stopped", file=sys.stderr)
    except SystemExit:  # uvicorn exits when the app's startup (loading --model) failed
        error = app.state.startup_error
        if isinstance(error, LocalchatError):
            raise error from None
        raise LocalchatError("the server could not start", hint="see the messages above") from None
    finally:
        for s in sockets:
            s.close()


def _bind(host: str, port: int, option: str = "--port") -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise LocalchatError(f"cannot listen on '{host}': {exc.strerror}", hint="give an IP address or a host name of this machine") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise LocalchatError(f"port {port} on {host} is already in use", hint=f"pick another with {option}") from None
        if exc.errno == errno.EACCES:
            raise LocalchatError(f"not allowed to listen on port {port}", hint="use a port above 1024") from None
        raise LocalchatError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock
