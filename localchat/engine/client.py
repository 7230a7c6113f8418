"""The parent's side of a model worker: start it, stream generations, count tokens, close it.

One EngineClient = one worker process = one loaded model. A reader thread takes every frame off the pipe
as soon as it arrives and files it with the generation or request it belongs to (unbounded queues: a slow
consumer never stalls the worker, and the worker never stalls the reader). A writer thread sends what the
outbox (a SimpleQueue, safe to fill from any thread, a signal handler or a __del__) holds, so cancel() can
never block or deadlock. Swapping models = close() the old client and start() a new one: the old process
ends, so its memory goes back to the system.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import localchat
from localchat.engine import amx, protocol
from localchat.errors import EngineContextOverflow, EngineError, ModelLoadError, WorkerCrashed
from localchat.types import LoadOptions, ModelInfo, SamplingParams, Usage

LOG_TAIL_LINES = 20
LOG_ROTATE_BYTES = 5 * 1024 * 1024


class _Done:
    __slots__ = ("usage",)

    def __init__(self, usage: Usage) -> None:
        self.usage = usage


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


class _Stream:
    """What the reader thread fills for one generation (the client holds it; Generation reads it)."""

    def __init__(self, rid: int) -> None:
        self.rid = rid
        self.items: queue.SimpleQueue = queue.SimpleQueue()
        self.finished = threading.Event()  # done, error or crash received


class Generation:
    """An iterator of text deltas (str) for one reply.

    After the end, `usage` and `finish_reason` (stop | length | cancelled) are set. `cancel()` may be called
    from any thread; the worker stops within a token. Iterating raises WorkerCrashed if the worker dies
    mid-stream, EngineError for other engine failures; `text` always holds what was received. A Generation
    dropped before its end is cancelled, so the next one need not wait for an abandoned reply.
    """

    def __init__(self, client: "EngineClient", stream: _Stream) -> None:
        self._client = client
        self._stream = stream
        self._parts: list[str] = []
        self._ended = False
        self.usage: Usage | None = None
        self.finish_reason: str | None = None

    @property
    def id(self) -> int:
        return self._stream.rid

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def __iter__(self) -> "Generation":
        return self

    def __next__(self) -> str:
        if self._ended:
            raise StopIteration
        item = self._stream.items.get()
        if type(item) is str:
            self._parts.append(item)
            return item
        self._ended = True
        if isinstance(item, _Done):
            self.usage = item.usage
            self.finish_reason = item.usage.finish_reason
            raise StopIteration
        raise item.error

    def cancel(self) -> None:
        """Ask the worker to stop this generation (thread-safe, idempotent); iteration then ends normally
        with finish_reason "cancelled" (or "stop"/"length" if it had already finished)."""
        if not self._stream.finished.is_set():
            self._client._send({"op": "cancel", "id": self._stream.rid})

    close = cancel

    def __enter__(self) -> "Generation":
        return self

    def __exit__(self, *exc) -> None:
        self.cancel()

    def __del__(self) -> None:
        try:
            self.cancel()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class _Reply:
    """A one-shot answer (token counts) that the reader thread fills."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.value = None
        self.error: Exception | None = None

    def set(self, value=None, error: Exception | None = None) -> None:
        if self.event.is_set():
            return  # the first answer stands (a crash after `loaded` changes nothing)
        self.value, self.error = value, error
        self.event.set()

    def wait(self):
        self.event.wait()
        if self.error is not None:
            raise self.error
        return self.value


class EngineClient:
    """A model loaded in its own worker process."""

    def __init__(self, model_path: Path, log_path: Path, log_file, log_offset: int, proc: subprocess.Popen) -> None:
        self.model_path = model_path
        self.log_path = log_path
        self.info: ModelInfo = ModelInfo(path=str(model_path))
        self._log_file = log_file
        self._log_offset = log_offset
        self._proc = proc
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()  # encoded frames, None to stop the writer
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # guards _waiting and _dead
        self._waiting: dict[int, _Stream | _Reply] = {}
        self._loaded = _Reply()
        self._turn = threading.Semaphore(1)  # one generation at a time; released when the worker finishes it
        self._dead: Exception | None = None
        self._closing = False
        self._closed = False
        self._reader = threading.Thread(target=self._read_loop, name=f"engine-reader-{proc.pid}", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name=f"engine-writer-{proc.pid}", daemon=True)
        self._reader.start()
        self._writer.start()

    # -- start -------------------------------------------------------------------------------------

    @classmethod
    def start(cls, model_path: Path, options: LoadOptions, log_dir: Path) -> "EngineClient":
        """Start a worker, load the model and return once it is ready.

        Raises ModelLoadError (the reason llama.cpp gave) or WorkerCrashed (the worker died while loading;
        the message carries the last lines of its log, `log_dir/<model>.log`).
        """
        model_path = Path(model_path)
        options.validate()
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{model_path.stem}.log"
        if log_path.exists() and log_path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(log_path, log_path.with_name(log_path.name + ".1"))
        log_file = open(log_path, "ab")  # noqa: SIM115 - the worker writes into it as long as it lives
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log_file.write(f"\n=== {stamp} localchat engine worker for {model_path} ===\n".encode())
        log_file.flush()
        offset = log_file.tell()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "localchat.engine.worker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, close_fds=True,
                env=amx.worker_env(_worker_env(), log_dir),  # the AMX self-test runs here, once per build
            )
        except OSError as e:
            log_file.close()
            raise EngineError(f"could not start the model worker: {e}") from e
        client = cls(model_path, log_path, log_file, offset, proc)
        try:
            client._send({"op": "load", "path": str(model_path), "options": options.to_dict()})
            info = client._loaded.wait()
        except BaseException:
            client.close()
            raise
        client.info = ModelInfo.from_dict({**info, "path": str(model_path)})
        return client

    # -- public API --------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return not self._closed and self._dead is None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        return self._proc.pid

    def generate(self, prompt: str, sampling: SamplingParams) -> Generation:
        """Start generating a reply to a rendered prompt (special tokens such as <|im_start|> are parsed).

        One generation runs at a time per client: a second call waits until the worker has finished the
        first (cancel it to make that quick).
        """
        request = {"op": "generate", "id": next(self._ids), "prompt": str(prompt), "sampling": sampling.validate().to_dict()}
        frame = protocol.encode(request)
        self._turn.acquire()
        stream = _Stream(request["id"])
        with self._lock:
            error = self._dead
            if error is None:
                self._waiting[stream.rid] = stream
        if error is not None:
            self._turn.release()
            raise error
        # if the worker has just died, the reader thread fails this stream when it sees the pipe close
        self._outbox.put(frame)
        return Generation(self, stream)

    def count_tokens(self, texts: list[str]) -> list[int]:
        """How many tokens each text is, tokenized as a prompt is (one round trip, answered even while a
        generation runs)."""
        reply = _Reply()
        rid = next(self._ids)
        with self._lock:
            if self._dead is not None:
                raise self._dead
            self._waiting[rid] = reply
        self._send({"op": "count", "id": rid, "texts": list(texts)})
        return reply.wait()

    def close(self, timeout: float = 5.0) -> None:
        """Shut the worker down (kill it if it does not exit within `timeout`); safe to call twice."""
        if self._closed:
            return
        self._closing = True
        self._send({"op": "shutdown"})
        self._outbox.put(None)
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._writer.join(timeout=timeout)
        self._reader.join(timeout=timeout)
        for f in (self._proc.stdin, self._proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        self._log_file.close()
        self._closed = True

    def __enter__(self) -> "EngineClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------------

    def _send(self, msg: dict) -> None:
        self._outbox.put(protocol.encode(msg))

    def _write_loop(self) -> None:
        stdin = self._proc.stdin
        while True:
            data = self._outbox.get()
            if data is None:
                return
            try:
                stdin.write(data)
                stdin.flush()
            except (OSError, ValueError):
                pass  # the worker is gone; the reader thread reports it to whoever waits

    def _read_loop(self) -> None:
        out = self._proc.stdout
        while True:
            try:
                msg = protocol.read_frame(out)
            except (OSError, ValueError):
                msg = None
            if msg is None:
                break
            self._dispatch(msg)
        self._on_exit()

    def _dispatch(self, msg: dict) -> None:
        op, rid = msg.get("op"), msg.get("id")
        if op == "delta":
            target = self._waiting.get(rid)
            if isinstance(target, _Stream):
                target.items.put(msg["text"])
            return
        if op == "loaded":
            self._loaded.set(msg.get("info") or {})
            return
        if op == "error" and rid is None:
            self._loaded.set(error=ModelLoadError(msg.get("text", ""), msg.get("hint", "")) if msg.get("kind") == "load"
                             else EngineError(msg.get("text", ""), msg.get("hint", "")))
            return
        with self._lock:
            target = self._waiting.pop(rid, None)
        if target is None:
            return
        if op == "counts" and isinstance(target, _Reply):
            target.set(msg.get("counts", []))
        elif op == "done" and isinstance(target, _Stream):
            self._end_stream(target, _Done(Usage.from_dict(msg.get("usage") or {})))
        elif op == "error":
            cls = EngineContextOverflow if msg.get("kind") == "context" else EngineError
            error = cls(msg.get("text", ""), msg.get("hint", ""))
            if isinstance(target, _Stream):
                self._end_stream(target, _Failed(error))
            else:
                target.set(error=error)

    def _end_stream(self, stream: _Stream, item) -> None:
        stream.items.put(item)
        stream.finished.set()
        self._turn.release()

    def _on_exit(self) -> None:
        """The worker's stdout closed: it exited. Fail whatever still waits on it."""
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        if self._closing:
            error: Exception = EngineError("the model worker was closed")
        else:
            error = self._crash_error(code)
        with self._lock:
            self._dead = error
            waiting, self._waiting = self._waiting, {}
        self._loaded.set(error=error)  # no effect if the model had loaded
        for target in waiting.values():
            if isinstance(target, _Stream):
                self._end_stream(target, _Failed(error))
            else:
                target.set(error=error)

    def _crash_error(self, code: int | None) -> WorkerCrashed:
        if code is None:
            how = "closed its pipe"
        elif code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exit code {code}"
        lines = self._log_tail()
        error = WorkerCrashed(
            f"the model worker for {self.model_path.name} stopped unexpectedly ({how})",
            f"last lines of its log {self.log_path}:\n" + "\n".join(lines) if lines else f"its log is {self.log_path}",
        )
        error.log_path = self.log_path
        error.log_lines = lines
        error.returncode = code
        return error

    def _log_tail(self, n: int = LOG_TAIL_LINES) -> list[str]:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                data = f.read()
        except OSError:
            return []
        lines = [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
        return lines[-n:]


def _worker_env() -> dict[str, str]:
    """The worker must import this very localchat, wherever it was imported from (a checkout, a wheel)."""
    env = dict(os.environ)
    package_root = str(Path(localchat.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def build_info(timeout: float = 120.0) -> dict:
    """What the installed llama.cpp build supports (GPU offload, devices, free memory, flash attention),
    asked of a short-lived worker so this process never imports llama_cpp (`localchat doctor`)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "localchat.engine.worker", "--build-info"],
            capture_output=True, env=_worker_env(), timeout=timeout, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EngineError(f"could not ask llama.cpp about its build: {e}") from e
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-5:]
        raise EngineError("llama-cpp-python could not be loaded", "\n".join(tail) or "is llama-cpp-python installed?")
    return json.loads(done.stdout.decode("utf-8"))
