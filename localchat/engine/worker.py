"""The model worker: `python -m localchat.engine.worker`, one process per loaded model.

Frames (localchat.engine.protocol) arrive on stdin and leave on the original stdout; fd 1 itself is pointed
at stderr (the parent's log file) so nothing llama.cpp prints can corrupt the protocol. A reader thread
takes frames off stdin at once: a cancel (or an end-thought) flips a flag the decode loop polls every token, a
count is answered on the spot, everything else queues for the main thread, which loads, generates and embeds.
`--build-info` prints what the llama.cpp build supports as one JSON object and exits; `--amx-selftest` prints
the result of llama.selftest.amx_selftest (see localchat.engine.amx) the same way.
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
from typing import IO, TYPE_CHECKING

from localchat.engine import protocol
from localchat.engine.batch import BatchLoop, BatchRequest, BatchScheduler, CoalescingSink
from localchat.engine.protocol import Cancel, Count, Embed, EndThought, Generate, Load, LoadState, SaveState, Shutdown
from localchat.structured import SchemaError
from localchat.errors import EngineContextOverflow, EngineError, EngineRequestError, LocalchatError, ModelLoadError
from localchat.types import SamplingParams, Usage

if TYPE_CHECKING:
    from localchat.engine.llama.model import NativeModel

FLUSH_SECONDS = 0.025  # deltas go out at most this often (the first one at once): smooth for a TUI, cheap


Request = Load | Generate | Embed | SaveState | LoadState | Shutdown


class Worker:
    def __init__(self, inp: IO[bytes], out: IO[bytes]) -> None:
        self.inp = inp
        self.out = out
        self.write_lock = threading.Lock()  # the main thread and the reader thread both answer
        self.requests: queue.Queue[Request] = queue.Queue()
        self.model: NativeModel | None = None
        self.state_lock = threading.Lock()
        self.current: int | None = None  # id of the running generation
        self.cancel = threading.Event()
        self.cancelled_early: set[int] = set()  # cancels that arrived before their generation started
        self.end_thought = threading.Event()  # close the running reply's thought now (a reasoning model)
        self.ended_early: set[int] = set()  # end-thoughts that arrived before their generation started
        self.batch: BatchLoop | None = None  # parallel > 1: the continuous-batching decode thread

    def send(self, frame: protocol.FromWorker) -> None:
        data = protocol.encode(frame)
        with self.write_lock:
            self.out.write(data)
            self.out.flush()

    def error(self, rid: int | None, kind: str, exc: BaseException | str, hint: str = "") -> None:
        if isinstance(exc, LocalchatError):
            text, hint = exc.message, exc.hint
        else:
            text = str(exc)
        self.send(protocol.Error(rid, kind, text, hint))

    # -- reader thread -----------------------------------------------------------------------------

    def read_loop(self) -> None:
        while True:
            try:
                frame = protocol.read_frame(self.inp)
            except protocol.ProtocolError as e:  # answered; the stream is still in step
                self.error(e.rid, "request", f"malformed request: {e}")
                continue
            except (OSError, ValueError):
                frame = None
            if frame is None or isinstance(frame, Shutdown):  # no more input: the parent left or said goodbye
                self.cancel.set()
                self.requests.put(Shutdown())
                return
            if isinstance(frame, Cancel) and self.batch is not None:
                self.batch.scheduler.cancel(str(frame.id))
            elif isinstance(frame, Cancel):
                with self.state_lock:
                    if frame.id == self.current:
                        self.cancel.set()
                    else:
                        self.cancelled_early.add(frame.id)
            elif isinstance(frame, EndThought):
                with self.state_lock:
                    if self.batch is not None:
                        if not self.batch.scheduler.end_thought(str(frame.id)):
                            self.ended_early.add(frame.id)  # its generate frame is still on its way to submit
                    elif frame.id == self.current:
                        self.end_thought.set()
                    else:
                        self.ended_early.add(frame.id)
            elif isinstance(frame, Count):
                self.count(frame)
            elif isinstance(frame, (Load, Generate, Embed, SaveState, LoadState)):
                self.requests.put(frame)
            else:
                self.error(getattr(frame, "id", None), "request", f"a {frame.op!r} frame is the worker's to send")

    def count(self, request: Count) -> None:
        """Token counts of texts, as the prompt would be tokenized; llama.cpp's tokenizer is thread-safe."""
        if self.model is None:
            self.error(request.id, "request", "no model is loaded yet")
            return
        try:
            counts = [len(self.model.tokenize(t)) for t in request.texts]
        except Exception as e:  # noqa: BLE001 - reported to the parent, the worker carries on
            self.error(request.id, "engine", e)
            return
        self.send(protocol.Counts(request.id, counts))

    # -- main thread -------------------------------------------------------------------------------

    def run(self) -> None:
        threading.Thread(target=self.read_loop, name="worker-reader", daemon=True).start()
        while True:
            request = self.requests.get()
            if isinstance(request, Shutdown):
                break
            try:
                if isinstance(request, Load):
                    self.load(request)
                elif isinstance(request, (SaveState, LoadState)):
                    self.state(request)
                elif isinstance(request, Embed):
                    self.embed(request)
                else:
                    self.generate(request)
            except Exception as e:  # noqa: BLE001 - one bad request must not end the worker
                traceback.print_exc()
                self.error(getattr(request, "id", None), "internal", f"{type(e).__name__}: {e}")
        if self.batch is not None:
            self.batch.close()
        if self.model is not None:
            self.model.close()

    def load(self, request: Load) -> None:
        from localchat.engine.llama.model import NativeModel  # imports llama_cpp

        if self.model is not None:
            self.error(None, "request", "this worker already holds a model; start another worker")
            return
        try:
            self.model = NativeModel(request.path, request.options)
        except ModelLoadError as e:
            self.error(None, "load", e)
            return
        if self.model.parallel > 1:
            self.batch = self._batch_loop(self.model)
        print(f"localchat worker {os.getpid()}: loaded {request.path}", file=sys.stderr, flush=True)
        self.send(protocol.Loaded(self.model.info()))

    def state(self, request: SaveState | LoadState) -> None:
        """A conversation's state to or from disk. Refusals (a stale or damaged file, none held) are
        answers, not errors: the next turn is then evaluated normally."""
        from localchat.engine.checkpoints import CheckpointRejected

        if self.model is None:
            self.error(request.id, "request", "no model is loaded")
            return
        if self.batch is not None:
            self.send(protocol.StateDone(request.id, 0, "the batched decoder keeps no conversation state"))
            return
        try:
            if isinstance(request, SaveState):
                n = self.model.save_prefix(request.prompt, request.path, request.template)
                note = "" if n else "no state of this conversation is held"
            else:
                n, note = self.model.load_file(request.path, request.template), ""
        except CheckpointRejected as e:
            n, note = 0, e.message
        except OSError as e:
            n, note = 0, f"{type(e).__name__}: {e}"
        self.send(protocol.StateDone(request.id, n, note))

    def _batch_loop(self, model: NativeModel) -> BatchLoop:
        from localchat.engine.llama.sequences import LlamaSequences

        worker = self

        class Frames:  # the scheduler's events as frames keyed by request id
            def delta(self, request_id: str, text: str) -> None:
                worker.send(protocol.Delta(int(request_id), text))

            def done(self, request_id: str, usage: dict) -> None:
                worker.send(protocol.Done(int(request_id), Usage.from_dict({**usage, "threads": model.n_threads})))

            def error(self, request_id: str, error: EngineError) -> None:
                kind = "context" if isinstance(error, EngineContextOverflow) else "engine"
                worker.error(int(request_id), kind, error)

        sink = CoalescingSink(Frames(), FLUSH_SECONDS)
        n_batch = max(model.options.n_batch, model.parallel)
        scheduler = BatchScheduler(LlamaSequences(model, n_batch), sink, n_slots=model.parallel,
                                   n_ctx_slot=model.n_ctx, n_batch=n_batch)
        return BatchLoop(scheduler, sink).start()

    def generate(self, request: Generate) -> None:
        rid = request.id
        if self.model is None:
            self.error(rid, "request", "no model is loaded")
            return
        if self.batch is not None:  # answered by the decode thread, many at once
            if request.sampling.grammar is not None:  # a schema that cannot compile fails here, not mid-batch
                try:
                    self.model.grammar_sampler(request.sampling).free()
                except SchemaError as e:
                    self.error(rid, "schema", e)
                    return
            try:
                with self.state_lock:  # an end-thought that came first is either seen here or finds it queued
                    ended = rid in self.ended_early
                    self.ended_early = {i for i in self.ended_early if i > rid}
                    self.batch.scheduler.submit(BatchRequest(str(rid), request.prompt, request.sampling,
                                                             end_thought=ended))
            except EngineContextOverflow as e:
                self.error(rid, "context", e)
            except EngineError as e:
                self.error(rid, "engine", e)
            return
        with self.state_lock:
            self.current = rid
            if rid in self.cancelled_early:
                self.cancel.set()
            else:
                self.cancel.clear()
            if rid in self.ended_early:
                self.end_thought.set()
            else:
                self.end_thought.clear()
            # ids only grow: cancels for this one or older (sent just as they finished) are spent
            self.cancelled_early = {i for i in self.cancelled_early if i > rid}
            self.ended_early = {i for i in self.ended_early if i > rid}
        try:
            self.stream(self.model, rid, request.prompt, request.sampling)
        except EngineContextOverflow as e:
            self.error(rid, "context", e)
        except SchemaError as e:  # a schema the grammar converter or llama.cpp refused: the request's fault
            self.error(rid, "schema", e)
        except EngineError as e:
            self.error(rid, "engine", e)
        finally:
            with self.state_lock:
                self.current = None

    def embed(self, request: Embed) -> None:
        """Vectors of texts in the embedding context (with parallel slots, beside the decode thread's work)."""
        if self.model is None:
            self.error(request.id, "request", "no model is loaded")
            return
        try:
            result = self.model.embed(request.texts, request.truncate)
        except EngineContextOverflow as e:
            self.error(request.id, "context", e)
        except EngineRequestError as e:
            self.error(request.id, "request", e)
        except LocalchatError as e:
            self.error(request.id, "engine", e)
        else:
            self.send(protocol.Embedded(request.id, result.vectors, result.prompt_tokens))

    def stream(self, model: NativeModel, rid: int, prompt: str, sampling: SamplingParams) -> None:
        """Run one generation, sending its text in batches: the first piece at once (time to first token),
        then whatever accumulated every FLUSH_SECONDS, and the rest just before `done`."""
        send, now, delta = self.send, time.perf_counter, protocol.Delta
        parts: list[str] = []
        next_flush = 0.0
        try:
            for piece in model.generate(prompt, sampling, self.cancel.is_set, self.end_thought.is_set):
                parts.append(piece)
                t = now()
                if t >= next_flush:
                    send(delta(rid, "".join(parts)))
                    parts.clear()
                    next_flush = t + FLUSH_SECONDS
        finally:
            if parts:  # what was generated before an error still reaches the parent
                send(delta(rid, "".join(parts)))
        send(protocol.Done(rid, Usage.from_dict(model.last_usage)))


def checkpoint_cost(path: str, options: dict) -> dict:
    """Whether the model's cache can be cut back, and what a checkpoint of it takes (measured)."""
    from dataclasses import replace

    from localchat.engine.llama.model import NativeModel
    from localchat.engine.llama.sequence import measure_checkpoint_cost
    from localchat.types import LoadOptions

    load = LoadOptions.from_dict(options)
    load = replace(load, parallel=1, checkpoint_ram=0, n_ctx=min(load.n_ctx or 4096, 4096))
    model = NativeModel(path, load)
    try:
        probe = model.tokenize("The quick brown fox jumps over the lazy dog. " * 12, special=False)[:128]
        cost = measure_checkpoint_cost(model.lib, model.ctx, model.model, True, probe)
        return {"can_cut": cost.kind.can_cut, "label": cost.kind.label, "window": cost.kind.window,
                "partial_bytes": cost.partial_bytes, "full_bytes_per_token": cost.full_bytes_per_token,
                "architecture": model.meta("general.architecture") or ""}
    finally:
        model.close()


def _protocol_streams() -> tuple[IO[bytes], IO[bytes]]:
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
            from localchat.engine.llama.selftest import amx_selftest

            result = amx_selftest()
        except Exception as e:  # noqa: BLE001 - reported to the parent, which keeps AMX off
            result = {"present": True, "ok": False, "why": f"the AMX self-test failed ({type(e).__name__}: {e})"}
        print(json.dumps(result), flush=True)
        return 0
    if "--build-info" in argv:
        text_out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        from localchat.engine.llama.buildinfo import build_info

        text_out.write(json.dumps(build_info()) + "\n")
        text_out.flush()
        return 0
    if "--checkpoint-cost" in argv:  # `localchat doctor --model ID`: PATH and the load options as JSON follow
        i = argv.index("--checkpoint-cost")
        text_out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        text_out.write(json.dumps(checkpoint_cost(argv[i + 1], json.loads(argv[i + 2]))) + "\n")
        text_out.flush()
        return 0
    # Ctrl-C in the terminal reaches the whole process group: the parent decides what it means (cancel, quit)
    # and tells the worker; when the parent goes away, stdin closes and the worker ends by itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inp, out = _protocol_streams()
    Worker(inp, out).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
