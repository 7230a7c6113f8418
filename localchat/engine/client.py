"""The parent's side of a model worker: start it, stream generations, count tokens, embed texts, close it.

One EngineClient = one worker process = one loaded model. A reader thread takes every frame off the pipe
as soon as it arrives and files it with the generation or request it belongs to (unbounded queues: a slow
consumer never stalls the worker, and the worker never stalls the reader). A writer thread sends what the
outbox (a SimpleQueue, safe to fill from any thread, a signal handler or a __del__) holds, so cancel() can
never block or deadlock. Swapping models = close() the old client and start() a new one: the old process
ends, so its memory goes back to the system. Conforms to localchat.engine.api.Engine.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

import localchat
from localchat.engine import amx, protocol
from localchat.engine.api import FinishReason, Prompt, ReasoningDelta, TextDelta
from localchat.engine.lifecycle import CancellingGeneration, ClosingEngine
from localchat.errors import EngineContextOverflow, EngineError, EngineRequestError, ModelLoadError, WorkerCrashed
from localchat.structured import SchemaError
from localchat.types import Embeddings, LoadOptions, ModelInfo, SamplingParams, Usage
from localchat.reasoning import ReasoningSplitter, of_model

LOG_TAIL_LINES = 20
LOG_ROTATE_BYTES = 5 * 1024 * 1024
CLOSE_TIMEOUT = 5.0  # seconds a closing worker gets to exit before it is killed
_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "cancelled": "cancelled", "tool_calls": "tool_calls"}


class _Done:
    __slots__ = ("usage",)

    def __init__(self, usage: Usage) -> None:
        self.usage = usage


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


_Item = TextDelta | _Done | _Failed


class _Stream:
    """What the reader thread fills for one generation (the client holds it; Generation reads it)."""

    def __init__(self, rid: int, outbox: "queue.SimpleQueue[bytes | None]") -> None:
        self.rid = rid
        self.items: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self.finished = threading.Event()  # done, error or crash received
        self._cancel_frame = protocol.encode(protocol.Cancel(rid))
        self._outbox = outbox

    def cancel(self) -> None:
        if not self.finished.is_set():
            self._outbox.put(self._cancel_frame)

    def end_thought(self) -> bool:
        if self.finished.is_set():
            return False
        self._outbox.put(protocol.encode(protocol.EndThought(self.rid)))
        return True


class Generation(CancellingGeneration):
    """One reply from a worker: iterating yields TextDelta events (localchat.engine.api.Generation).

    After the end, `usage` and `finish_reason` (stop | length | cancelled) are set. `cancel()` may be called
    from any thread; the worker stops within a token. Iterating raises WorkerCrashed if the worker dies
    mid-stream, EngineError for other engine failures; `text` always holds what was received.
    """

    def __init__(self, stream: _Stream, splitter: ReasoningSplitter | None = None, can_end: bool = False) -> None:
        self._stream = stream
        self._splitter = splitter  # a reasoning model: the thought comes out as ReasoningDelta events
        self._can_end = can_end  # the worker controls the thought (both tags are tokens of their own)
        self._split: list[TextDelta | ReasoningDelta] = []
        self._parts: list[str] = []
        self._ended = False
        self.usage: Usage | None = None
        self.finish_reason: FinishReason | None = None

    @property
    def id(self) -> str:
        return str(self._stream.rid)

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def __iter__(self) -> "Generation":
        return self

    def __next__(self) -> TextDelta | ReasoningDelta:
        if self._splitter is not None:
            return self._next_split()
        if self._ended:
            raise StopIteration
        item = self._stream.items.get()
        if type(item) is TextDelta:
            self._parts.append(item.text)
            return item
        return self._end(item)

    def _next_split(self) -> TextDelta | ReasoningDelta:
        splitter = self._splitter
        assert splitter is not None
        while not self._split:
            if self._ended:
                raise StopIteration
            item = self._stream.items.get()
            if type(item) is TextDelta:
                self._split = splitter.feed(item.text)
                continue
            self._split = splitter.finish()  # a partial tag held back is text after all
            if not self._split:
                self._end(item)
            self._stream.items.put(item)  # nothing follows the end: take it again once these are out
        event = self._split.pop(0)
        if type(event) is TextDelta:
            self._parts.append(event.text)
        return event

    def _end(self, item: "_Item") -> NoReturn:
        self._ended = True
        if isinstance(item, _Done):
            self.usage = item.usage
            self.finish_reason = _FINISH.get(item.usage.finish_reason, "stop")
            raise StopIteration
        assert isinstance(item, _Failed)
        raise item.error

    def cancel(self) -> None:
        """Ask the worker to stop this generation (thread-safe, idempotent); iteration then ends normally
        with finish_reason "cancelled" (or "stop"/"length" if it had already finished)."""
        self._stream.cancel()

    def end_thought(self) -> bool:
        """Close a reasoning model's thought now: the worker feeds the closing tag at its next token and the
        answer follows (thread-safe). False when the reply is no thought: a model that does not reason, an
        answer already begun, or a reply that has ended; and for a model whose tags are not tokens of their
        own (the worker cannot close its thought). Before the reply's first text it is asked too: a
        thought the model then opens is closed at once."""
        splitter = self._splitter
        if not self._can_end or splitter is None or self._ended or splitter.state in ("answer", "answer_start"):
            return False
        return self._stream.end_thought()


class _Reply:
    """A one-shot answer (token counts) that the reader thread fills."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.value: Any = None
        self.error: Exception | None = None

    def set(self, value: Any = None, error: Exception | None = None) -> None:
        if self.event.is_set():
            return  # the first answer stands (a crash after `loaded` changes nothing)
        self.value, self.error = value, error
        self.event.set()

    def wait(self) -> Any:
        self.event.wait()
        if self.error is not None:
            raise self.error
        return self.value


class EngineClient(ClosingEngine):
    """A model loaded in its own worker process."""

    def __init__(self, model_path: Path, log_path: Path, log_file: IO[bytes], log_offset: int,
                 proc: "subprocess.Popen[bytes]") -> None:
        self.model_path = model_path
        self.log_path = log_path
        self.info: ModelInfo = ModelInfo(path=str(model_path))
        self._log_file = log_file
        self._log_offset = log_offset
        self._proc = proc
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()  # encoded frames, None stops the writer
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
            client._send(protocol.Load(str(model_path), options))
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

    def generate(self, prompt: Prompt, sampling: SamplingParams) -> Generation:
        """Start generating a reply to a rendered prompt (special tokens such as <|im_start|> are parsed).

        One generation runs at a time per client: a second call waits until the worker has finished the
        first (cancel it to make that quick).
        """
        request = protocol.Generate(next(self._ids), _rendered(prompt), sampling.validate())
        frame = protocol.encode(request)
        self._turn.acquire()
        stream = _Stream(request.id, self._outbox)
        with self._lock:
            error = self._dead
            if error is None:
                self._waiting[stream.rid] = stream
        if error is not None:
            self._turn.release()
            raise error
        # if the worker has just died, the reader thread fails this stream when it sees the pipe close
        self._outbox.put(frame)
        # A reasoning model (its template writes </think>, or its vocabulary has both tags): the thought streams
        # apart from the answer.
        fmt = of_model(self.info.chat_template, self.info.think_tags)
        return Generation(stream, fmt.splitter(request.prompt) if fmt is not None else None,
                          can_end=bool(self.info.think_tags))

    def count_tokens(self, texts: Sequence[Prompt]) -> list[int]:
        """How many tokens each text is, tokenized as a prompt is (one round trip, answered even while a
        generation runs)."""
        rendered = [_rendered(t) for t in texts]
        counts: list[int] = self._ask(lambda rid: protocol.Count(rid, rendered))
        return counts

    def save_state(self, prompt: Prompt, path: Path, template: str) -> tuple[int, str]:
        """Write the worker's state of the longest prefix of `prompt` it holds to `path`: (tokens covered,
        why none). Queued behind a running generation."""
        done: tuple[int, str] = self._ask(lambda rid: protocol.SaveState(rid, str(path), template, _rendered(prompt)))
        return done

    def load_state(self, path: Path, template: str) -> tuple[int, str]:
        """Offer the state at `path` to the next prompts: (tokens it covers, why it was refused)."""
        done: tuple[int, str] = self._ask(lambda rid: protocol.LoadState(rid, str(path), template))
        return done

    def embed(self, texts: Sequence[str], truncate: bool = False) -> Embeddings:
        """One L2-normalised vector per text, pooled as the model's metadata says (mean for a chat model).

        Raises EngineContextOverflow for a text longer than the embedding window (unless `truncate`), and
        EngineRequestError for one with no tokens. The worker computes them between generations (beside
        them when it decodes parallel slots)."""
        result: Embeddings = self._ask(lambda rid: protocol.Embed(rid, list(texts), truncate))
        return result

    def _ask(self, make: Callable[[int], protocol.ToWorker]) -> Any:
        """Send the frame `make(id)` builds and wait for the worker's answer to it."""
        reply = _Reply()
        rid = next(self._ids)
        with self._lock:
            if self._dead is not None:
                raise self._dead
            self._waiting[rid] = reply
        self._send(make(rid))
        return reply.wait()

    def close(self) -> None:
        """Shut the worker down (kill it if it does not exit within CLOSE_TIMEOUT); safe to call twice."""
        if self._closed:
            return
        timeout = CLOSE_TIMEOUT
        self._closing = True
        self._send(protocol.Shutdown())
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
                if f is not None:
                    f.close()
            except OSError:
                pass
        self._log_file.close()
        self._closed = True

    # -- plumbing ----------------------------------------------------------------------------------

    def _send(self, frame: protocol.ToWorker) -> None:
        self._outbox.put(protocol.encode(frame))

    def _write_loop(self) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
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
        assert out is not None
        while True:
            try:
                frame = protocol.read_frame(out)
            except protocol.ProtocolError as e:
                self._malformed(e)
                continue
            except (OSError, ValueError):
                frame = None
            if frame is None:
                break
            self._dispatch(frame)
        self._on_exit()

    def _dispatch(self, frame: protocol.Frame) -> None:
        if type(frame) is protocol.Delta:
            target = self._waiting.get(frame.id)
            if isinstance(target, _Stream):
                target.items.put(TextDelta(frame.text))
            return
        if isinstance(frame, protocol.Loaded):
            # as many generations at once as the worker decodes together (parallel slots)
            self._turn = threading.Semaphore(max(1, int(frame.info.get("parallel") or 1)))
            self._loaded.set(frame.info)
            return
        if isinstance(frame, protocol.Error) and frame.id is None:
            self._loaded.set(error=ModelLoadError(frame.text, frame.hint) if frame.kind == "load"
                             else EngineError(frame.text, frame.hint))
            return
        if (not isinstance(frame, (protocol.Done, protocol.Counts, protocol.StateDone, protocol.Embedded, protocol.Error))
                or frame.id is None):
            self._malformed(protocol.ProtocolError(f"the worker sent a {frame.op!r} frame, which only the parent sends"))
            return
        with self._lock:
            target = self._waiting.pop(frame.id, None)
        if target is None:
            return
        if isinstance(frame, protocol.Counts) and isinstance(target, _Reply):
            target.set(frame.counts)
        elif isinstance(frame, protocol.StateDone) and isinstance(target, _Reply):
            target.set((frame.tokens, frame.note))
        elif isinstance(frame, protocol.Embedded) and isinstance(target, _Reply):
            target.set(Embeddings(frame.vectors, frame.prompt_tokens))
        elif isinstance(frame, protocol.Done) and isinstance(target, _Stream):
            self._end_stream(target, _Done(frame.usage))
        elif isinstance(frame, protocol.Error):
            if frame.kind == "schema":
                self._fail(target, SchemaError(frame.text))
            else:
                cls = {"context": EngineContextOverflow, "request": EngineRequestError}.get(frame.kind, EngineError)
                self._fail(target, cls(frame.text, frame.hint))
        else:
            self._fail(target, EngineError(f"the model worker answered request {frame.id} with a {frame.op!r} frame",
                                           f"a bug in localchat; see {self.log_path}"))

    def _malformed(self, error: protocol.ProtocolError) -> None:
        """A frame the worker got wrong (a bug, not a crash): fail the request it names, note it in the log."""
        try:
            self._log_file.write(f"localchat: malformed frame from the worker: {error}\n".encode())
            self._log_file.flush()
        except (OSError, ValueError):
            pass  # the log is closed: the client is closing
        if error.rid is None:
            return
        with self._lock:
            target = self._waiting.pop(error.rid, None)
        if target is not None:
            self._fail(target, EngineError(f"the model worker sent a malformed frame: {error}",
                                           f"a bug in localchat; see {self.log_path}"))

    def _fail(self, target: "_Stream | _Reply", error: Exception) -> None:
        if isinstance(target, _Stream):
            self._end_stream(target, _Failed(error))
        else:
            target.set(error=error)

    def _end_stream(self, stream: _Stream, item: "_Done | _Failed") -> None:
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
            self._fail(target, error)

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


def _rendered(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    raise EngineError("a local model takes a rendered prompt, not a list of messages",
                      "render the messages with the model's chat template (localchat.templates) first")


def checkpoint_cost(model_path: Path, options: LoadOptions, timeout: float = 300.0) -> dict[str, Any]:
    """Whether a model's cache can be cut back and how large its checkpoints are, measured by a
    short-lived worker that loads it (`localchat doctor --model ID`)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "localchat.engine.worker", "--checkpoint-cost", str(model_path),
             json.dumps(options.to_dict())],
            capture_output=True, env=_worker_env(), timeout=timeout, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EngineError(f"could not measure the model's checkpoints: {e}") from e
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise EngineError("the model could not be loaded to measure its checkpoints", "\n".join(tail))
    cost: dict[str, Any] = json.loads(done.stdout.decode("utf-8"))
    return cost


def build_info(timeout: float = 120.0) -> dict[str, Any]:
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
    info: dict[str, Any] = json.loads(done.stdout.decode("utf-8"))
    return info
