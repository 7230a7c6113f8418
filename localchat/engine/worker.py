"""The model worker: `python -m localchat.engine.worker`, one process per loaded model.

Frames (localchat.engine.protocol) arrive on stdin and leave on the original stdout; fd 1 itself is pointed
at stderr (the parent's log file) so nothing llama.cpp prints can corrupt the protocol. A reader thread
takes frames off stdin at once: a cancel flips a flag the decode loop polls every token, a count is
answered on the spot, everything else queues for the main thread, which loads and generates.
`--build-info` prints what the llama.cpp build supports as one JSON object and exits; `--amx-selftest` prints
the result of native.amx_selftest (see localchat.engine.amx) the same way.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import threading
import time
import traceback

from localchat.engine import protocol
from localchat.errors import EngineContextOverflow, EngineError, LocalchatError, ModelLoadError
from localchat.types import LoadOptions, SamplingParams

FLUSH_SECONDS = 0.025  # deltas go out at most this often (the first one at once): smooth for a TUI, cheap


class Worker:
    def __init__(self, inp, out) -> None:
        self.inp = inp
        self.out = out
        self.write_lock = threading.Lock()  # the main thread and the reader thread both answer
        self.requests: queue.Queue[dict] = queue.Queue()
        self.model = None
        self.state_lock = threading.Lock()
        self.current: int | None = None  # id of the running generation
        self.cancel = threading.Event()
        self.cancelled_early: set[int] = set()  # cancels that arrived before their generation started

    def send(self, msg: dict) -> None:
        data = protocol.encode(msg)
        with self.write_lock:
            self.out.write(data)
            self.out.flush()

    def error(self, rid, kind: str, exc: BaseException | str, hint: str = "") -> None:
        if isinstance(exc, LocalchatError):
            text, hint = exc.message, exc.hint
        else:
            text = str(exc)
        self.send({"op": "error", "id": rid, "kind": kind, "text": text, "hint": hint})

    # -- reader thread -----------------------------------------------------------------------------

    def read_loop(self) -> None:
        while True:
            try:
                msg = protocol.read_frame(self.inp)
            except (OSError, ValueError):
                msg = None
            if msg is None or msg.get("op") == "shutdown":  # no more input: the parent left or said goodbye
                self.cancel.set()
                self.requests.put({"op": "shutdown"})
                return
            op = msg.get("op")
            if op == "cancel":
                with self.state_lock:
                    if msg.get("id") == self.current:
                        self.cancel.set()
                    else:
                        self.cancelled_early.add(msg.get("id"))
            elif op == "count":
                self.count(msg)
            else:
                self.requests.put(msg)

    def count(self, msg: dict) -> None:
        """Token counts of texts, as the prompt would be tokenized; llama.cpp's tokenizer is thread-safe."""
        if self.model is None:
            self.error(msg.get("id"), "request", "no model is loaded yet")
            return
        try:
            counts = [len(self.model.tokenize(t)) for t in msg.get("texts", [])]
        except Exception as e:  # noqa: BLE001 - reported to the parent, the worker carries on
            self.error(msg.get("id"), "engine", e)
            return
        self.send({"op": "counts", "id": msg.get("id"), "counts": counts})

    # -- main thread -------------------------------------------------------------------------------

    def run(self) -> None:
        threading.Thread(target=self.read_loop, name="worker-reader", daemon=True).start()
        while True:
            msg = self.requests.get()
            op = msg.get("op")
            if op == "shutdown":
                break
            try:
                if op == "load":
                    self.load(msg)
                elif op == "generate":
                    self.generate(msg)
                else:
                    self.error(msg.get("id"), "request", f"unknown request {op!r}")
            except Exception as e:  # noqa: BLE001 - one bad request must not end the worker
                traceback.print_exc()
                self.error(msg.get("id"), "internal", f"{type(e).__name__}: {e}")
        if self.model is not None:
            self.model.close()

    def load(self, msg: dict) -> None:
        from localchat.engine.native import NativeModel  # imports llama_cpp

        if self.model is not None:
            self.error(None, "request", "this worker already holds a model; start another worker")
            return
        path = msg["path"]
        try:
            self.model = NativeModel(path, LoadOptions.from_dict(msg.get("options") or {}))
        except ModelLoadError as e:
            self.error(None, "load", e)
            return
        print(f"localchat worker {os.getpid()}: loaded {path}", file=sys.stderr, flush=True)
        self.send({"op": "loaded", "info": self.model.info()})

    def generate(self, msg: dict) -> None:
        rid = msg["id"]
        if self.model is None:
            self.error(rid, "request", "no model is loaded")
            return
        with self.state_lock:
            self.current = rid
            if rid in self.cancelled_early:
                self.cancel.set()
            else:
                self.cancel.clear()
            # ids only grow: cancels for this one or older (sent just as they finished) are spent
            self.cancelled_early = {i for i in self.cancelled_early if isinstance(i, int) and i > rid}
        try:
            self.stream(rid, msg.get("prompt", ""), SamplingParams.from_dict(msg.get("sampling") or {}))
        except EngineContextOverflow as e:
            self.error(rid, "context", e)
        except EngineError as e:
            self.error(rid, "engine", e)
        finally:
            with self.state_lock:
                self.current = None

    def stream(self, rid: int, prompt: str, sampling: SamplingParams) -> None:
        """Run one generation, sending its text in batches: the first piece at once (time to first token),
        then whatever accumulated every FLUSH_SECONDS, and the rest just before `done`."""
        send, now = self.send, time.perf_counter
        parts: list[str] = []
        next_flush = 0.0
        try:
            for piece in self.model.generate(prompt, sampling, self.cancel.is_set):
                parts.append(piece)
                t = now()
                if t >= next_flush:
                    send({"op": "delta", "id": rid, "text": "".join(parts)})
                    parts.clear()
                    next_flush = t + FLUSH_SECONDS
        finally:
            if parts:  # what was generated before an error still reaches the parent
                send({"op": "delta", "id": rid, "text": "".join(parts)})
        send({"op": "done", "id": rid, "usage": self.model.last_usage})


def _protocol_streams():
    """Keep the real stdout for frames and point fd 1 at stderr, where stray prints and C output belong."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return sys.stdin.buffer, out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from localchat.offline import enforce_if_inherited

    enforce_if_inherited()  # a worker of an offline app stays offline too
    if "--amx-selftest" in argv:  # localchat.engine.amx runs this in a throwaway process: it may crash
        try:
            from localchat.engine.native import amx_selftest

            result = amx_selftest()
        except Exception as e:  # noqa: BLE001 - reported to the parent, which keeps AMX off
            result = {"present": True, "ok": False, "why": f"the AMX self-test failed ({type(e).__name__}: {e})"}
        print(json.dumps(result), flush=True)
        return 0
    if "--build-info" in argv:
        out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        from localchat.engine.native import build_info

        out.write(json.dumps(build_info()) + "\n")
        out.flush()
        return 0
    # Ctrl-C in the terminal reaches the whole process group: the parent decides what it means (cancel, quit)
    # and tells the worker; when the parent goes away, stdin closes and the worker ends by itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inp, out = _protocol_streams()
    Worker(inp, out).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
