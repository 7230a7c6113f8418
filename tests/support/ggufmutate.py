"""Structure-aware mutations of a valid GGUF, shared by the property tests and `scripts/fuzz`.

`fields(data)` walks a *valid* file (trusted input, so this walker is naive) and lists where each
structural field lies: counts, lengths, types, dimensions, offsets. A mutation is a plain tuple
(op, where, what) so hypothesis can draw it and a seeded random.Random can too; `apply` performs a list of
them. Mutations aim at the header, metadata and tensor table: tensor data is never parsed.
"""

from __future__ import annotations

import contextlib
import functools
import random
import signal
import struct
import tempfile
import threading
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

INTERESTING = [0, 1, 2, 3, 4, 5, 7, 8, 12, 13, 31, 32, 33, 63, 64, 255, 256, 1023, 1024, 1025, 65535, 65536,
               2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**32 + 1, 2**48, 2**62, 2**63 - 1, 2**63, 2**64 - 1]
OPS = ("field", "byte", "u32", "u64", "truncate", "insert", "delete", "duplicate")

_WIDTH = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


@dataclass(frozen=True)
class Field:
    offset: int
    width: int  # 4 or 8 (or 1/2 for small scalar values)
    kind: str  # count | length | type | value | n_dims | dim | ggml_type | offset


@dataclass(frozen=True)
class Layout:
    fields: tuple[Field, ...]
    boundaries: tuple[int, ...]  # end of header, of each metadata entry, of each tensor info; data start
    kv_spans: tuple[tuple[int, int], ...]
    data_start: int


def layout(data: bytes) -> Layout:
    """Where the structural fields of a valid GGUF lie."""
    out: list[Field] = []
    pos = 24
    bounds = [24]
    spans = []
    out += [Field(4, 4, "version"), Field(8, 8, "count"), Field(16, 8, "count")]
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    alignment = 32

    def string(kind: str = "length") -> int:
        nonlocal pos
        (n,) = struct.unpack_from("<Q", data, pos)
        out.append(Field(pos, 8, kind))
        pos += 8 + n
        return n

    def value(vtype: int) -> None:
        nonlocal pos
        if vtype in _WIDTH:
            out.append(Field(pos, _WIDTH[vtype], "value"))
            pos += _WIDTH[vtype]
        elif vtype == 8:
            string()
        elif vtype == 9:
            (etype,) = struct.unpack_from("<I", data, pos)
            out.append(Field(pos, 4, "type"))
            (n,) = struct.unpack_from("<Q", data, pos + 4)
            out.append(Field(pos + 4, 8, "count"))
            pos += 12
            if etype in _WIDTH:  # a numeric array: mark its first element only
                if n:
                    out.append(Field(pos, _WIDTH[etype], "value"))
                pos += n * _WIDTH[etype]
            else:
                for _ in range(n):
                    value(etype)

    for _ in range(n_kv):
        start = pos
        klen = string()
        key = data[pos - klen:pos]
        (vtype,) = struct.unpack_from("<I", data, pos)
        out.append(Field(pos, 4, "type"))
        pos += 4
        if key == b"general.alignment":
            (alignment,) = struct.unpack_from("<I", data, pos)
        value(vtype)
        spans.append((start, pos))
        bounds.append(pos)
    for _ in range(n_tensors):
        string()
        (n_dims,) = struct.unpack_from("<I", data, pos)
        out.append(Field(pos, 4, "n_dims"))
        pos += 4
        out += [Field(pos + 8 * i, 8, "dim") for i in range(n_dims)]
        pos += 8 * n_dims
        out += [Field(pos, 4, "ggml_type"), Field(pos + 4, 8, "offset")]
        pos += 12
        bounds.append(pos)
    data_start = -(-pos // alignment) * alignment
    bounds.append(data_start)
    return Layout(tuple(out), tuple(bounds), tuple(spans), data_start)


Mutation = tuple[str, int, int]  # (op, where: an index into fields/bytes, what: a value index or byte)


def apply(data: bytes, lay: Layout, mutations: list[Mutation]) -> bytes:
    """Apply mutations in order. `where` and `what` are taken modulo what they index, so any ints work."""
    buf = bytearray(data)
    head = max(1, min(lay.data_start, len(buf)))  # mutate where the parser looks
    for op, where, what in mutations:
        if op == "field" and lay.fields:
            f = lay.fields[where % len(lay.fields)]
            value = INTERESTING[what % len(INTERESTING)] % (1 << (8 * f.width))
            buf[f.offset:f.offset + f.width] = value.to_bytes(f.width, "little")
        elif op == "byte" and buf:
            buf[where % min(head, len(buf))] = what & 0xFF
        elif op in ("u32", "u64") and len(buf) > 8:
            width = 4 if op == "u32" else 8
            at = where % max(1, min(head, len(buf) - width))
            buf[at:at + width] = (INTERESTING[what % len(INTERESTING)] % (1 << (8 * width))).to_bytes(width, "little")
        elif op == "truncate":
            cut = lay.boundaries[what % len(lay.boundaries)] if where % 2 else where % (len(buf) + 1)
            del buf[cut:]
        elif op == "insert":
            at = where % (head + 1)
            buf[at:at] = bytes([what & 0xFF]) * (1 + (what >> 8) % 16)
        elif op == "delete" and buf:
            at = where % min(head, len(buf))
            del buf[at:at + 1 + (what % 16)]
        elif op == "duplicate" and lay.kv_spans:  # a metadata entry twice (the count left as it was)
            start, end = lay.kv_spans[where % len(lay.kv_spans)]
            buf[end:end] = data[start:end]
            if what % 2:  # ... or with the count raised to match
                count = struct.unpack_from("<Q", buf, 16)[0] + 1
                buf[16:24] = struct.pack("<Q", count % (1 << 64))
    return bytes(buf)


def random_mutations(rng: random.Random, max_ops: int = 4) -> list[Mutation]:
    return [(rng.choice(OPS), rng.getrandbits(32), rng.getrandbits(32)) for _ in range(rng.randint(1, max_ops))]


# -- valid inputs to start from

@functools.cache
def tiny_gguf_bytes() -> bytes:
    """A small but complete model written by the gguf package (through tests/support/ggufgen.py)."""
    from tests.support.ggufgen import make_tiny_gguf

    with tempfile.TemporaryDirectory() as d:
        return make_tiny_gguf(Path(d) / "tiny.gguf", reply="Hi!", n_embd=8, n_layer=1).read_bytes()


@functools.cache
def crafted_gguf_bytes() -> bytes:
    """A hand-crafted valid file with every value type, a nested array and three tensors."""
    from tests.support.ggufcraft import valid_craft

    return valid_craft().build()[0]


# -- guards for running a parser on hostile input

class Hang(Exception):
    pass


@contextlib.contextmanager
def hang_guard(seconds: float = 30.0) -> Iterator[None]:
    """Turn a hang into a failure (not a timing check: a parse takes milliseconds; this only stops a loop)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def alarm(signum, frame):
        raise Hang(f"no result after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def peak_memory() -> Iterator[list[int]]:
    """Yields a list that holds, once the block ends, the peak bytes tracemalloc saw inside it."""
    result: list[int] = []
    tracemalloc.start()
    try:
        yield result
    finally:
        result.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
