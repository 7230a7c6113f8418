"""Conversation store at scale: list and full-text search over 10,000 conversations and 200,000 messages.

    scripts/bench store [--conversations N] [--messages N] [--runs N] [--db PATH] [--json [PATH]]

Builds a database of mixed English / Chinese chats (Zipf-distributed words, so common words are common
and rare ones rare), then times what the history screen and `localchat history` do, median of --runs
(page cache warm, as after the app has been open a while). Side by side with each search: the same
query answered by a LIKE scan over all messages, which is what a trigram index must fall back to for the
1-2 character queries most Chinese words are. Also: the cost of the writes a streaming reply makes.
Target (issue 4): listing the newest 50 and a full-text search each well under 100 ms.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib  # noqa: E402
from localchat.store import ConversationStore  # noqa: E402
from localchat.store.text import search_text  # noqa: E402

TARGET_MS = 100.0

EN = ["the", "of", "and", "to", "a", "in", "is", "you", "that", "it", "for", "on", "with", "as", "this", "are", "be", "can", "your", "by", "or", "from", "if", "an", "will", "use", "not", "model", "server", "data", "file", "python", "code", "run", "function", "error", "we", "need", "how", "what", "which", "when", "using", "more", "set", "one", "value", "list", "time", "test", "should", "new", "also", "into", "example", "request", "memory", "token", "user", "output", "input", "first", "here", "install", "version", "build", "config", "default", "path", "cache", "query", "table", "index", "search", "result", "response", "model's", "local", "deploy", "deployment", "docker", "compose", "kubernetes", "nginx", "proxy", "TLS", "certificate", "port", "container", "image", "volume", "network", "latency", "throughput", "GPU", "CPU", "CUDA", "tensor", "layer", "weights", "quantization", "context", "window", "prompt", "template", "llama", "qwen", "gguf", "offload", "thread", "batch", "stream", "stop", "sampling", "temperature", "seed", "chat", "history", "message", "assistant", "database", "sqlite", "transaction", "lock", "journal", "migration", "schema", "column", "row", "insert", "update", "delete", "select", "join", "async", "await", "thread", "process", "queue", "worker", "timeout", "retry", "cancel", "signal", "kill", "restart", "crash", "log", "debug", "trace", "regex", "string", "bytes", "unicode", "encoding", "utf-8", "json", "yaml", "markdown", "html", "css", "javascript", "rust", "golang", "java", "performance", "benchmark", "median", "latency", "profile", "optimize", "slow", "fast", "faster", "cache", "hit", "miss", "evict", "warm", "cold", "because", "however", "therefore", "although", "while", "since", "until", "unless", "whether", "either", "neither", "both", "each", "every", "please", "thanks", "sure", "great", "question", "answer", "explain", "why", "let", "me", "try", "again", "look", "check", "step", "first", "second"]
ZH = ["的", "是", "我们", "你", "这个", "一个", "可以", "模型", "需要", "使用", "问题", "数据", "代码", "如果", "没有", "因为", "所以", "但是", "然后", "已经", "部署", "服务器", "配置", "文件", "运行", "函数", "错误", "内存", "显存", "推理", "训练", "参数", "量化", "上下文", "窗口", "提示词", "模板", "对话", "历史", "消息", "搜索", "关键词", "结果", "速度", "性能", "优化", "缓存", "线程", "进程", "队列", "超时", "重试", "取消", "日志", "调试", "测试", "安装", "版本", "环境", "路径", "命令", "终端", "界面", "中文", "英文", "翻译", "总结", "解释", "例子", "步骤", "首先", "其次", "最后", "注意", "建议", "数据库", "事务", "索引", "查询", "表格", "字段", "插入", "更新", "删除", "迁移", "备份", "恢复", "网络", "延迟", "吞吐", "容器", "镜像", "端口", "天气", "旅行", "秋天", "落叶", "诗歌", "故事", "学习", "工作", "时间", "今天", "明天", "昨天", "朋友", "家人", "电影", "音乐", "咖啡", "早餐", "你好", "谢谢", "请问", "好的", "当然", "可能", "应该", "比较", "非常", "特别", "简单", "复杂", "重要", "正确", "完整", "快速", "安全", "稳定"]
ZH_PUNCT = ["，", "。", "、", "？", "！", "："]

QUERIES = [
    ("python", "English, common"),
    ("kubernetes", "English, rarer"),
    ("deploy", "English prefix (deploy*, deployment)"),
    ("docker compose", "two English words"),
    ("模型", "Chinese, 2 chars, common"),
    ("关键词", "Chinese, 3 chars"),
    ("秋天 落叶", "two Chinese words"),
    ("量化模型", "Chinese, 4 chars, rarer phrase"),
    ("据数", "common chars, rarely adjacent"),
    ('"the the the"', "phrase of the commonest word: worst case"),
    ("的的的", "commonest CJK char thrice: worst case"),
    ("zebra", "no hit"),
]


def zipf_weights(n: int) -> list[float]:
    return [1.0 / (rank + 1) ** 0.9 for rank in range(n)]


class TextGenerator:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        en, zh = EN[:], ZH[:]
        rng.shuffle(en)
        rng.shuffle(zh)
        self.en, self.zh = en, zh
        self.en_w, self.zh_w = zipf_weights(len(en)), zipf_weights(len(zh))

    def english(self, words: int) -> str:
        out, sentence = [], []
        for w in self.rng.choices(self.en, self.en_w, k=words):
            sentence.append(w)
            if len(sentence) > self.rng.randint(6, 18):
                out.append(" ".join(sentence).capitalize() + ".")
                sentence = []
        if sentence:
            out.append(" ".join(sentence).capitalize() + ".")
        return " ".join(out)

    def chinese(self, words: int, english_mix: float = 0.0) -> str:
        out = []
        for w in self.rng.choices(self.zh, self.zh_w, k=words):
            if english_mix and self.rng.random() < english_mix:
                w = f" {self.rng.choices(self.en, self.en_w)[0]} "
            out.append(w)
            if self.rng.random() < 0.12:
                out.append(self.rng.choice(ZH_PUNCT))
        return "".join(out) + "。"

    def message(self, role: str) -> str:
        words = self.rng.randint(5, 40) if role == "user" else self.rng.randint(30, 220)
        kind = self.rng.random()
        if kind < 0.5:
            return self.english(words)
        if kind < 0.8:
            return self.chinese(words)
        return self.chinese(words, english_mix=0.25)

    def title(self, first_user: str) -> str:
        return " ".join(first_user.split())[:60]


def build(store: ConversationStore, conversations: int, messages: int, seed: int) -> float:
    """Bulk-load through the store's own write transactions and index rules (search_text), in batches."""
    rng = random.Random(seed)
    gen = TextGenerator(rng)
    per = [messages // conversations] * conversations
    for i in range(messages - sum(per)):
        per[i] += 1
    now = time.time()
    start_time = now - 365 * 86400
    t0 = time.perf_counter()
    batch = 250
    for first in range(0, conversations, batch):
        rows = []
        for c in range(first, min(first + batch, conversations)):
            created = start_time + (now - start_time) * c / conversations
            msgs = []
            for k in range(per[c]):
                role = "user" if k % 2 == 0 else "assistant"
                msgs.append((k, role, gen.message(role), created + 20 * k))
            rows.append((created, msgs))

        def write(db, rows=rows):
            for created, msgs in rows:
                cid = db.execute(
                    "INSERT INTO conversations (title, model, system, settings, created, updated) VALUES (?, ?, NULL, '{}', ?, ?)",
                    (gen.title(msgs[0][2]), rng.choice(["qwen2.5-0.5b-instruct", "smollm2-135m-instruct", "qwen2.5-7b-instruct"]),
                     created, msgs[-1][3])).lastrowid
                db.executemany(
                    "INSERT INTO messages (conversation_id, position, role, content, search_text, status, model, "
                    "created, updated) VALUES (?, ?, ?, ?, ?, 'complete', NULL, ?, ?)",
                    [(cid, k, role, text, search_text(text), ts, ts) for k, role, text, ts in msgs])
        store._write(write)
        done = min(first + batch, conversations)
        if sys.stdout.isatty():
            print(f"\r  building: {done:,} / {conversations:,} conversations", end="", flush=True)
        elif done % 2500 == 0 or done == conversations:
            print(f"  building: {done:,} / {conversations:,} conversations", flush=True)
    if sys.stdout.isatty():
        print()
    return time.perf_counter() - t0


def timed(fn, runs: int) -> tuple[float, float, float, object]:
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return benchlib.median(times), min(times), max(times), result


def like_scan(store: ConversationStore, query: str, limit: int = 20):
    """What a trigram index falls back to for short queries: every term as a LIKE over all messages."""
    terms = query.split()
    where = " AND ".join("content LIKE ?" for _ in terms)
    return store._read(lambda db: db.execute(
        f"SELECT id FROM messages WHERE {where} ORDER BY id DESC LIMIT ?", [f"%{t}%" for t in terms] + [limit]).fetchall())


def count_hits(store: ConversationStore, query: str) -> int:
    from localchat.store.text import match_expression

    expr = match_expression(query)
    return store._read(lambda db: db.execute("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH ?",
                                             (expr,)).fetchone()[0])


def main(argv: list[str] | None = None) -> int:
    ap = benchlib.parser("scripts/bench store", __doc__.split("\n\n")[0])
    ap.add_argument("--conversations", type=int, default=10_000)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=9, help="timed runs per figure (median shown)")
    ap.add_argument("--db", type=Path, help="keep the database here (reused when it already exists)")
    ap.add_argument("--seed", type=int, default=4)
    args = benchlib.parse_args(ap, argv)

    tmp = None
    if args.db is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-store-")
        args.db = Path(tmp.name) / "conversations.db"
    fresh = not args.db.exists()
    store = ConversationStore.open(args.db)
    if fresh:
        print(f"Building {args.conversations:,} conversations / {args.messages:,} messages in {args.db}")
        seconds = build(store, args.conversations, args.messages, args.seed)
        print(f"  built in {seconds:.1f} s ({args.messages / seconds:,.0f} messages/s)")
    n_conv = store.count_conversations()
    n_msg = store._read(lambda db: db.execute("SELECT count(*) FROM messages").fetchone()[0])
    size = sum(p.stat().st_size for p in args.db.parent.glob(args.db.name + "*"))
    print(f"Database: {n_conv:,} conversations, {n_msg:,} messages, {size / 1e6:.0f} MB on disk (with index)")
    store.close()

    runs = args.runs
    print(f"\nEach figure: median of {runs} runs (min-max), milliseconds. Target: < {TARGET_MS:.0f} ms.\n")
    rows: dict[str, dict] = {}

    def report(label: str, median: float, lo: float, hi: float, extra: str = "", target: bool = True) -> None:
        mark = ("ok" if median < TARGET_MS else "SLOW") if target else ""
        rows[label] = {"median_ms": median, "min_ms": lo, "max_ms": hi, "note": extra.strip(), "target": mark}
        print(f"  {label:<52} {median:8.2f} ms  ({lo:.2f}-{hi:.2f})  {mark:<4} {extra}")

    med, lo, hi, s = timed(lambda: ConversationStore.open(args.db), 1)
    s.close()
    report("open (schema check, no migration)", med, lo, hi)
    store = ConversationStore.open(args.db)
    med, lo, hi, listed = timed(lambda: store.list_conversations(limit=50), runs)
    report("list newest 50", med, lo, hi, f"{len(listed)} rows")
    med, lo, hi, _ = timed(lambda: store.list_conversations(limit=50, offset=5000), runs)
    report("list 50 at offset 5,000 (scrolling far back)", med, lo, hi)
    newest = listed[0].id
    med, lo, hi, conv = timed(lambda: store.conversation(newest), runs)
    report("load one conversation with its messages", med, lo, hi, f"{len(conv.messages)} messages")

    print("\n  full-text search: 20 newest hits with snippets; side by side, a LIKE scan (newest first, stops at 20)")
    for query, what in QUERIES:
        med, lo, hi, hits = timed(lambda: store.search(query, limit=20), runs)  # noqa: B023 - runs now
        like_med, _, _, like_rows = timed(lambda: like_scan(store, query), max(3, runs // 3))  # noqa: B023 - runs now
        total = count_hits(store, query)
        ratio = like_med / med if med else float("inf")
        report(f"{query!r} ({what})", med, lo, hi,
               f"{len(hits):>2} shown / {total:>6,} match | LIKE {like_med:7.2f} ms, {ratio:6.1f}x the FTS time")

    print("\n  writes a chat turn makes (each its own transaction, fsync'd: synchronous=FULL)")
    cid = store.create_conversation(model="bench")
    med, lo, hi, _ = timed(lambda: store.add_message(cid, "user", "一个新的问题 about deployment"), runs)
    report("add a user message", med, lo, hi, target=False)
    reply = store.begin_reply(cid, model="bench", flush_interval=3600)
    chunk = TextGenerator(random.Random(1)).message("assistant")

    def flush_more():
        reply.append(chunk)
        reply.flush()
    med, lo, hi, _ = timed(flush_more, runs)
    report(f"reply write-through (text grows to {len(reply.text):,} chars)", med, lo, hi,
           "happens at most every 0.5 s while streaming", target=False)
    reply.finish("complete")
    store.delete(cid)
    store.close()
    if tmp is not None:
        tmp.cleanup()
    benchlib.emit(args, {"conversations": n_conv, "messages": n_msg, "runs": runs, "target_ms": TARGET_MS,
                         "figures": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
