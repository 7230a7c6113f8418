"""TUI benchmark: streaming through the real app against the engine alone, event-loop stalls, time to first
frame, and model swap time. Everything is measured side by side in one run.

    scripts/bench tui [--tokens 1000] [--repeats 5] [--embd 768 --layers 12] [--threads N]
                      [--model X.gguf --prompt TEXT] [--swap A.gguf B.gguf] [--json [PATH]]

- Streaming: a reply of --tokens tokens from a model that never stops on its own (the loop model from
  tests/support/ggufgen.py, by default at the size and pace of a small real model; --model streams a real
  one, greedy, with --prompt), generated (a) by the engine alone (EngineClient, the same rendered prompt and
  sampling) and (b) through the real app (headless, Pilot): sent, streamed into the Markdown widget. Rate = tokens from the first to the last
  text *visible* (for the app: in the widget's Markdown source, sampled every 5 ms); the ratio app/engine
  is the figure (target >= 0.95).
- Stall: while the app streams, a 5 ms asyncio timer in the app's own event loop records how late it wakes
  up; the longest lateness is the longest stall (target < 50 ms).
- First frame: `python -m localchat` started in a pseudo-terminal (120x40), time from spawn until the whole
  first frame (down to the footer) has been written (target < 1 s). Includes interpreter start and imports.
- Swap: in the app, time from asking for the other model until it is loaded and the conversation moved to it,
  next to a bare EngineClient.start of the same model (process start + load: the floor).
"""

from __future__ import annotations

import asyncio
import os
import pty
import select
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import benchlib  # noqa: E402

PROMPT = "go"  # the loop model ignores it; --model runs take --prompt


def build_models(folder: Path, embd: int, layers: int, swap: list[str] | None, model: str | None) -> dict[str, Path]:
    from tests.support.ggufgen import make_tiny_gguf

    if model:
        models = {"loop": Path(model).resolve()}
    else:
        models = {"loop": make_tiny_gguf(folder / f"loop-{embd}x{layers}.gguf", reply="abcdefgh ", loop=True,
                                         n_embd=embd, n_layer=layers)}
    if swap:
        models["swap-a"], models["swap-b"] = Path(swap[0]).resolve(), Path(swap[1]).resolve()
    else:
        models["swap-a"] = models["loop"]
        models["swap-b"] = make_tiny_gguf(folder / "other.gguf", reply="Yo!", n_embd=embd, n_layer=layers)
    return models


def make_home(folder: Path, models: dict[str, Path], tokens: int, threads: int | None) -> Path:
    from tests.support.models import register_local_model

    home = folder / "home"
    for model_id, path in models.items():
        generated = path.parent == folder  # ours: ChatML; a real model: the template its GGUF carries
        svc = register_local_model(home, path, model_id=model_id, template="chatml" if generated else None)
    svc.config.sampling = {"max_tokens": tokens, "temperature": 0.0}
    svc.config.load = {"n_ctx": max(2048, tokens + 256), **({"n_threads": threads} if threads else {})}
    svc.config.save(svc.paths.config_file)
    return home


# --- streaming ----------------------------------------------------------------------------------------------


async def engine_alone(home: Path, tokens: int, prompt_text: str) -> dict:
    """The engine consumed in a thread, while a bare asyncio loop runs the same 5 ms timer as in the app run:
    its lateness is what this machine's scheduler alone costs (the floor for the app's stall figure)."""
    from localchat.services import Services
    from localchat.types import Message

    svc = Services.open(home)
    engine = svc.start_engine("loop")
    try:
        template, _ = svc.chat_template(svc.entry("loop"), engine.info.chat_template)
        prompt = template.render([Message("user", prompt_text)], add_generation_prompt=True)
        generation = engine.generate(prompt, svc.config.sampling_for("loop"))
        marks: list[float] = []

        def consume() -> None:
            for _ in generation:
                marks.append(time.perf_counter())

        lateness = await run_with_monitor(asyncio.to_thread(consume), lambda: len(marks) > 0)
        usage = generation.usage
    finally:
        engine.close()
    return {"tokens": usage.completion_tokens, "rate": (usage.completion_tokens - 1) / (marks[-1] - marks[0]),
            "worker_rate": usage.tokens_per_second, "max_stall": max(lateness)}


async def run_with_monitor(work, started, period: float = 0.005) -> list[float]:
    """Await `work` while a timer records its own lateness once `started()` is true."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    lateness = []
    while not task.done():
        before = loop.time()
        await asyncio.sleep(period)
        if started():
            lateness.append(loop.time() - before - period)
    await task
    return lateness or [0.0]


async def through_app(home: Path, tokens: int, prompt_text: str) -> dict:
    from localchat.services import Services
    from localchat.tui.app import make_app
    from localchat.tui.widgets.chatlog import MessageBlock

    app = make_app(Services.open(home), "loop")
    period = 0.005
    samples: list[tuple[float, float, int, float]] = []  # (time, lateness, visible characters, CPU in the tick)
    async with app.run_test(size=(120, 40)) as pilot:
        while app.engine is None or app.loading:
            await asyncio.sleep(0.05)
        stop = False

        async def monitor() -> None:
            loop = asyncio.get_running_loop()
            reply = None
            while not stop:
                before, cpu = loop.time(), time.thread_time()
                await asyncio.sleep(period)
                now = loop.time()
                if reply is None:
                    reply = next((b for b in app.chat.query(MessageBlock) if b.role == "assistant"), None)
                samples.append((time.perf_counter(), now - before - period, len(reply.source) if reply else 0,
                                time.thread_time() - cpu))

        task = asyncio.create_task(monitor())
        cpu_start = time.thread_time()  # this thread runs the app's event loop
        app.chat.prompt.text = prompt_text
        await pilot.press("enter")
        await pilot.pause(0.05)
        streamer = None
        while app.busy:
            streamer = app.chat._stream or streamer
            await asyncio.sleep(0.02)
        cpu_used = time.thread_time() - cpu_start
        appends = streamer.appends if streamer is not None else 0
        await pilot.pause(0.1)
        stop = True
        await task
        final = len(app.session.messages[-1].content)
        n_tokens = app.store.conversation(app.session.conversation_id).messages[-1].completion_tokens
    visible = [(t, n) for t, _, n, _ in samples if n > 0]
    first = visible[0][0]
    last = next(t for t, n in visible if n >= final)
    window = [(late, cpu) for t, late, n, cpu in samples if first - 0.05 <= t <= last]
    streaming = [late for late, _ in window]
    worst = max(window)
    return {"tokens": n_tokens, "rate": (n_tokens - 1) / (last - first), "max_stall": worst[0],
            "max_stall_cpu": worst[1],
            "p99_stall": statistics.quantiles(streaming, n=100)[98] if len(streaming) > 100 else max(streaming),
            "cpu_share": cpu_used / (last - first), "appends": appends}


# --- first frame --------------------------------------------------------------------------------------------


def first_frame(home: Path, runs: int) -> list[float]:
    import fcntl
    import termios

    times = []
    for _ in range(runs):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor", "PYTHONPATH": str(ROOT)}
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "localchat", "--home", str(home)], stdin=slave,
                                stdout=slave, stderr=slave, env=env, close_fds=True, start_new_session=True)
        os.close(slave)
        seen = b""
        elapsed = None
        deadline = start + 30
        while time.perf_counter() < deadline:
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            seen += chunk
            if b"palette" in seen:  # the footer's last item: the frame is complete
                elapsed = time.perf_counter() - start
                break
        os.write(master, b"\x11")  # ctrl+q
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(master)
        if elapsed is None:
            raise SystemExit(f"bench_tui: no frame within 30 s; the terminal got: {seen[-500:]!r}")
        times.append(elapsed)
    return times


# --- swap ---------------------------------------------------------------------------------------------------


async def swaps_in_app(home: Path, count: int) -> tuple[list[float], bool]:
    from localchat.services import Services
    from localchat.tui.app import make_app

    app = make_app(Services.open(home), "swap-a")
    times, ended = [], True
    async with app.run_test(size=(120, 40)):
        while app.engine is None or app.loading:
            await asyncio.sleep(0.02)
        for _ in range(count):
            target = "swap-b" if app.model_id == "swap-a" else "swap-a"
            old = app.engine
            start = time.perf_counter()
            app.switch_model(target)
            while app.model_id != target or app.loading:
                await asyncio.sleep(0.002)
            times.append(time.perf_counter() - start)
            for _ in range(500):  # the old worker process ends (in the background)
                if old._proc.poll() is not None:
                    break
                await asyncio.sleep(0.01)
            ended = ended and old._proc.poll() is not None
    return times, ended


def bare_starts(home: Path, count: int) -> list[float]:
    from localchat.services import Services

    svc = Services.open(home)
    times = []
    for i in range(count):
        start = time.perf_counter()
        engine = svc.start_engine("swap-b" if i % 2 == 0 else "swap-a")
        times.append(time.perf_counter() - start)
        engine.close()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = benchlib.parser("scripts/bench tui", __doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5, help="engine/app pairs of streaming runs (medians reported)")
    parser.add_argument("--embd", type=int, default=768, help="loop model width (default: a ~285 MB model that "
                        "decodes at a small real model's pace; --embd 256 --layers 2 is a 6 MB stress test)")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--frames", type=int, default=5, help="first-frame runs")
    parser.add_argument("--swaps", type=int, default=6)
    parser.add_argument("--swap", nargs=2, metavar="GGUF", help="two GGUF files to swap between")
    parser.add_argument("--model", metavar="GGUF", help="stream from this real model instead (greedy, so both sides "
                        "produce the same text; it stops at --tokens or where it ends its reply)")
    parser.add_argument("--prompt", default=PROMPT, help="the message sent (for --model)")
    parser.add_argument("--threads", type=int, help="llama.cpp threads (default: the engine's own choice)")
    args = benchlib.parse_args(parser, argv)

    with tempfile.TemporaryDirectory(prefix="bench-tui-") as tmp:
        folder = Path(tmp)
        os.environ["LOCALCHAT_HOME"] = str(folder / "home")
        models = build_models(folder, args.embd, args.layers, args.swap, args.model)
        home = make_home(folder, models, args.tokens, args.threads)
        name = models["loop"].name if args.model else f"loop {args.embd}x{args.layers}"
        threads = f"{args.threads} llama.cpp threads" if args.threads else "the engine's default threads"
        print(f"model: {name} ({models['loop'].stat().st_size / 1e6:.1f} MB), {threads}, "
              f"{args.tokens} tokens, {args.repeats} runs each, CPUs: {os.cpu_count()}")

        engine_runs, app_runs, ratios = [], [], []
        for i in range(args.repeats):
            # Side by side in pairs, the order swapped every other pair: a change in the machine's load (other
            # processes) hits both sides of a pair alike, and the median of the pair ratios ignores outliers.
            pair = {}
            for side in (("engine", "app") if i % 2 == 0 else ("app", "engine")):
                pair[side] = asyncio.run(engine_alone(home, args.tokens, args.prompt) if side == "engine"
                                         else through_app(home, args.tokens, args.prompt))
            engine_runs.append(pair["engine"])
            app_runs.append(pair["app"])
            ratios.append(pair["app"]["rate"] / pair["engine"]["rate"])
        e_rate = benchlib.median(r["rate"] for r in engine_runs)
        a_rate = benchlib.median(r["rate"] for r in app_runs)
        worst_run = max(app_runs, key=lambda r: r["max_stall"])
        stall, stall_cpu = worst_run["max_stall"], worst_run["max_stall_cpu"]
        p99 = benchlib.median(r["p99_stall"] for r in app_runs)
        print(f"\nstreaming {engine_runs[0]['tokens']} / {app_runs[0]['tokens']} tokens (engine / app)")
        e_list = ", ".join(f"{r['rate']:.1f}" for r in engine_runs)
        a_list = ", ".join(f"{r['rate']:.1f}" for r in app_runs)
        worker = benchlib.median(r["worker_rate"] for r in engine_runs)
        print(f"  engine alone      {e_rate:8.1f} tok/s   (runs: {e_list}; worker decode {worker:.1f})")
        print(f"  through the app   {a_rate:8.1f} tok/s   (runs: {a_list})")
        ratio = benchlib.median(ratios)
        r_list = ", ".join(f"{r:.2f}" for r in ratios)
        print(f"  ratio app/engine  {ratio:8.3f}         target >= 0.95  {'ok' if ratio >= 0.95 else 'MISSED'}"
              f"   (median of pairs: {r_list})")
        floor = max(r["max_stall"] for r in engine_runs)
        print(f"  longest stall     {stall * 1000:8.1f} ms      target < 50 ms  {'ok' if stall < 0.05 else 'MISSED'}"
              f"   ({stall_cpu * 1000:.1f} ms of it CPU in the loop's thread, the rest waiting for a core or the"
              f" GIL; p99 {p99 * 1000:.1f} ms; a bare asyncio loop here meanwhile: {floor * 1000:.1f} ms)")
        share = benchlib.median(r["cpu_share"] for r in app_runs)
        appends = benchlib.median(r["appends"] for r in app_runs)
        per_token = benchlib.median(r["cpu_share"] * (r["tokens"] - 1) / r["rate"] / r["tokens"] for r in app_runs)
        print(f"  app event loop    {share * 100:8.1f} % of a core while streaming "
              f"({per_token * 1e6:.0f} us of CPU per token), {appends:.0f} Markdown appends")
        print(f"  load average      {os.getloadavg()[0]:8.2f}         (other processes here skew all of the above)")

        frames = first_frame(home, args.frames)
        med = benchlib.median(frames)
        print(f"\nfirst frame (python -m localchat in a 120x40 pty, {args.frames} runs)")
        print(f"  median {med * 1000:.0f} ms, worst {max(frames) * 1000:.0f} ms   target < 1 s  "
              f"{'ok' if max(frames) < 1 else 'MISSED'}")

        swap_times, ended = asyncio.run(swaps_in_app(home, args.swaps))
        starts = bare_starts(home, args.swaps)
        print(f"\nmodel swap ({models['swap-a'].name} <-> {models['swap-b'].name}, {args.swaps} swaps)")
        print(f"  in the app        median {benchlib.median(swap_times) * 1000:.0f} ms, "
              f"worst {max(swap_times) * 1000:.0f} ms; old worker process ended: {'yes' if ended else 'NO'}")
        print(f"  bare start+load   median {benchlib.median(starts) * 1000:.0f} ms  "
              f"(swap / bare {benchlib.median(swap_times) / benchlib.median(starts):.2f})")
    benchlib.emit(args, {
        "model": name, "tokens": app_runs[0]["tokens"], "tokens_per_second": a_rate,
        "engine_tokens_per_second": e_rate, "ratio": ratio, "max_stall_ms": stall * 1000, "p99_stall_ms": p99 * 1000,
        "first_frame_ms": med * 1000, "swap_ms": benchlib.median(swap_times) * 1000,
        "bare_start_ms": benchlib.median(starts) * 1000})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
