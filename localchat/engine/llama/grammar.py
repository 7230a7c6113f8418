"""Grammars in the worker: an OutputConstraint becomes GBNF through llama.cpp's own JSON-schema converter
(the Python port that llama-cpp-python ships), is compiled into a native grammar sampler, and constrains
the picks of one request's sampler chain.

Only the worker imports this module (it loads llama_cpp). Sampling checks the chain's pick against the
grammar first, as llama.cpp's common_sampler does: most picks pass. When one is refused, the grammar
judges only the best tokens by logit (512, then 4,096): a pass of the grammar over a 49k-152k vocabulary
takes 10-15 ms, a token's whole decode on a GPU 2-5 ms. The pick among those is exact when at least
`need` of them are allowed (1 for plain greedy; top_k when the chain starts with top_k, which then only
ever sees the top_k best allowed tokens); otherwise the grammar goes over the whole vocabulary.

That whole pass is needed where the grammar allows few tokens the model does not rank high: the literal
start of a schema's JSON (`{"essay": "`, a tool call's `{"name": "`) for a model that would not write it
itself. Every reply under the same grammar starts from the same state, so the tokens such a pass allowed
are remembered (`AllowedMemo`, per model) by the grammar and the tokens accepted before: the next reply at
that point picks among them without the pass. A grammar's state is a function of the tokens it accepted,
so what is remembered stays exact.
"""

from __future__ import annotations

import ctypes
import re
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from llama_cpp.llama_grammar import SchemaConverter

from localchat.structured import OutputConstraint, SchemaError
from localchat.tools import CLOSE, OPEN, ToolSpec

_XML_TEXT = r'( [^<] | "<" [^/] )*'  # a raw parameter value: anything up to the closing tag
_RULE_CHARS = re.compile(r"[^A-Za-z0-9-]+")
CANDIDATES = (512, 4096)  # tokens the grammar judges after a refused pick, before the whole vocabulary
# A JSON string character. llama-cpp-python's converter allows raw control characters (a newline, \x01) in
# strings, which no JSON parser accepts; llama.cpp's own converter excludes them, as does this rule.
_JSON_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'


def to_gbnf(constraint: OutputConstraint) -> str:
    """The grammar text (root rule `root`); raises SchemaError when the converter refuses the schema."""
    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    try:
        if constraint.kind == "json":
            converter.visit({"type": "object"}, "")
        elif constraint.kind == "schema":
            converter.visit(converter.resolve_refs(dict(constraint.schema or {}), "schema"), "")
        else:
            calls = [_tool_rule(converter, tool, i, constraint.form) for i, tool in enumerate(constraint.tools)]
            call = converter._add_rule("call", " | ".join(calls))
            converter._rules["root"] = f'{call} ( "\\n" {call} )*' if constraint.parallel else call
        if constraint.after is not None:  # the thought's close tag, the blank lines after it, then the reply
            answer = converter._add_rule("answer", converter._rules.pop("root"))
            converter._rules["root"] = f'{converter._format_literal(constraint.after)} [ \\t\\n]* {answer}'
    except (AssertionError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise SchemaError(f"the JSON schema cannot be turned into a grammar: {exc or type(exc).__name__}") from None
    if "char" in converter._rules:
        converter._rules["char"] = _JSON_CHAR
    return converter.format_grammar()


def trigger(constraint: OutputConstraint) -> str | None:
    """The pattern a lazy grammar waits for (llama.cpp searches the reply so far for it and constrains from
    its first group, else from the match), or None: constrained from the first token."""
    call = re.escape(OPEN)
    if constraint.after is None:
        return call if constraint.kind == "tools" and constraint.lazy else None
    after = re.escape(constraint.after)
    if constraint.kind == "tools" and constraint.lazy:
        return f"{after}[\\s\\S]*?({call})"  # a call after the thought (one inside it is only thought)
    return after


def _tool_rule(converter: SchemaConverter, tool: ToolSpec, i: int, form: str) -> str:
    name = f"t{i}-" + _RULE_CHARS.sub("-", tool.name)
    parameters = converter.resolve_refs(dict(tool.parameters), f"tool{i}")
    lit = converter._format_literal
    if form == "json":
        arguments = converter.visit(parameters, f"{name}-args")
        head = f'{OPEN}\n{{"name": "{tool.name}", "arguments": '
        return converter._add_rule(name, f'{lit(head)} {arguments} {lit("}" + chr(10) + CLOSE)}')
    required = set(parameters.get("required") or ())
    parts = []
    for prop, schema in (parameters.get("properties") or {}).items():
        value = _xml_value(converter, schema if isinstance(schema, dict) else {}, f"{name}-{_RULE_CHARS.sub('-', prop)}")
        param = f'{lit(f"<parameter={prop}>" + chr(10))} {value} {lit(chr(10) + "</parameter>" + chr(10))}'
        parts.append(f"( {param} )" if prop in required else f"( {param} )?")
    body = " ".join(parts)
    return converter._add_rule(
        name, f'{lit(f"{OPEN}{chr(10)}<function={tool.name}>{chr(10)}")} {body} {lit("</function>" + chr(10) + CLOSE)}')


def _xml_value(converter: SchemaConverter, schema: dict, name: str) -> str:
    """XML parameters carry strings raw and everything else as JSON (what the Qwen3 templates render)."""
    if schema.get("type") == "string":
        if "enum" in schema:
            return converter._add_rule(name, " | ".join(converter._format_literal(str(v)) for v in schema["enum"]))
        return converter._add_rule(name, _XML_TEXT)
    return converter.visit(schema, name)


MEMO_TOKENS = 64  # remember allowed sets only this early in a reply (the schema's literal start)
MEMO_ALLOWED = 4096  # and only small ones (a large one is found among the best candidates anyway)


class AllowedMemo:
    """The tokens a grammar allowed after a given run of accepted tokens, found by a whole-vocabulary pass;
    least recently used entries go first. Used by one model's decode thread."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._entries: OrderedDict[tuple, Any] = OrderedDict()
        self.hits = 0

    def get(self, key: tuple) -> Any:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            self.hits += 1
        return found

    def put(self, key: tuple, allowed: Any) -> None:
        self._entries[key] = allowed
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


class GrammarSampler:
    """A compiled grammar for one request, and the sampling that respects it.

    `sample(chain, ctx, i)` has the signature of llama_sampler_sample, so the decode loop takes it in
    place of that function; it also feeds the chosen token to the grammar.
    """

    def __init__(self, lib: Any, vocab: Any, n_vocab: int, constraint: OutputConstraint,
                 need: int | None = None, memo: AllowedMemo | None = None) -> None:
        """need: allowed candidates that make the pick among the best CANDIDATES exact (see the module's
        docstring); None: the chain may look at every token, so a refused pick takes the whole vocabulary.
        memo: the model's AllowedMemo (None: none kept)."""
        import numpy as np  # llama-cpp-python depends on it

        self.lib = lib
        self.n_vocab = n_vocab
        lazy = trigger(constraint)
        if constraint.after is not None and lazy is not None and constraint.lazy:
            constraint = replace(constraint, after=None)  # the trigger's group hands over from `<tool_call>`
        self.need = need if need is not None and 0 < need <= CANDIDATES[0] // 2 else None
        text = to_gbnf(constraint).encode("utf-8")
        self.memo = memo
        self._memo_key: tuple | None = (text, lazy) if memo is not None else None  # then the tokens accepted
        if lazy is not None:
            triggers = (ctypes.c_char_p * 1)(lazy.encode("utf-8"))
            self.grammar = lib.llama_sampler_init_grammar_lazy_patterns(vocab, text, b"root", triggers, 1, None, 0)
        else:
            self.grammar = lib.llama_sampler_init_grammar(vocab, text, b"root")
        if not self.grammar:
            raise SchemaError("the grammar built from the JSON schema did not compile in llama.cpp; simplify the "
                              "schema (patterns and deeply nested unions are the usual cause)")
        self._np = np
        self._data = (lib.llama_token_data * n_vocab)()
        self._view = np.frombuffer(self._data, dtype=np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")]))
        self._view["id"] = np.arange(n_vocab, dtype=np.int32)
        self._one = (lib.llama_token_data * 1)()
        self._array = lib.llama_token_data_array(self._data, n_vocab, -1, False)
        self._tiers = []  # (size, token data, its numpy view, the array struct) per candidate count
        for size in (n for n in CANDIDATES if n < n_vocab):
            data = (lib.llama_token_data * size)()
            self._tiers.append((size, data, np.frombuffer(data, dtype=self._view.dtype),
                                lib.llama_token_data_array(data, size, -1, False)))
        self._single = lib.llama_token_data_array(self._one, 1, -1, False)
        self.resampled = 0  # picks the grammar refused (for the benchmark's cost per token)

    def sample(self, chain: Any, ctx: Any, i: int) -> int:
        lib = self.lib
        logits = self._np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, i), shape=(self.n_vocab,))
        token = int(logits.argmax()) if self.need == 1 else self._pick(chain, logits, with_grammar=False)
        if not self._allows(token):
            self.resampled += 1
            key, memo = self._memo_key, self.memo
            allowed = memo.get(key) if key is not None and memo is not None else None
            if allowed is not None:
                token = self._pick_among(chain, logits, allowed)
            else:
                best = self._pick_among_best(chain, logits) if self.need is not None else None
                token = best if best is not None else self._pick(chain, logits, with_grammar=True)
        self.accept(chain, token)
        return token

    def accept(self, chain: Any, token: int) -> None:
        """A token the reply takes without sampling (a thought's forced closing tags): the grammar and the
        chain hear of it as of a sampled one, so a grammar waiting for `</think>` starts after it."""
        self.lib.llama_sampler_accept(self.grammar, token)
        self.lib.llama_sampler_accept(chain, token)
        key = self._memo_key
        if key is not None:
            self._memo_key = key + (token,) if len(key) < MEMO_TOKENS + 2 else None

    def _pick_among(self, chain: Any, logits: Any, allowed: Any) -> int:
        """The chain's pick among `allowed` (remembered from a whole pass at this point of the grammar): what
        that pass gives, since the tokens it refuses can never be picked."""
        if self.need == 1:  # plain greedy
            return int(allowed[int(logits[allowed].argmax())])
        n = len(allowed)
        view, array = self._view[:n], self._array
        view["id"] = allowed
        view["logit"] = logits[allowed]
        view["p"] = 0.0
        array.data, array.size, array.selected, array.sorted = self._data, n, -1, False
        self.lib.llama_sampler_apply(chain, ctypes.byref(array))
        return int(array.data[array.selected].id)

    def _pick(self, chain: Any, logits: Any, with_grammar: bool) -> int:
        view, array, ref = self._view, self._array, ctypes.byref(self._array)
        view["logit"] = logits
        view["p"] = 0.0
        view["id"] = self._np.arange(self.n_vocab, dtype=self._np.int32)  # samplers sort the array in place
        array.data, array.size, array.selected, array.sorted = self._data, self.n_vocab, -1, False
        if with_grammar:
            self.lib.llama_sampler_apply(self.grammar, ref)
            if self._memo_key is not None and self.memo is not None:
                allowed = self._np.flatnonzero(view["logit"] > -self._np.inf)
                if 0 < len(allowed) <= MEMO_ALLOWED:
                    self.memo.put(self._memo_key, allowed.astype(self._np.int32))
        self.lib.llama_sampler_apply(chain, ref)
        return int(array.data[array.selected].id)

    def _pick_among_best(self, chain: Any, logits: Any) -> int | None:
        """The chain's pick among the allowed of the best tokens; None when too few are allowed in every tier."""
        np, lib = self._np, self.lib
        for size, data, view, array in self._tiers:
            best = np.argpartition(logits, -size)[-size:]
            view["id"] = best
            view["logit"] = logits[best]
            view["p"] = 0.0
            array.data, array.size, array.selected, array.sorted = data, size, -1, False
            lib.llama_sampler_apply(self.grammar, ctypes.byref(array))
            if int(np.count_nonzero(view["logit"] > -np.inf)) >= (self.need or 1):
                lib.llama_sampler_apply(chain, ctypes.byref(array))
                return int(array.data[array.selected].id)
        return None

    def _allows(self, token: int) -> bool:
        one, single = self._one, self._single
        one[0].id, one[0].logit, one[0].p = token, 1.0, 0.0
        single.data, single.size, single.selected, single.sorted = self._one, 1, -1, False
        self.lib.llama_sampler_apply(self.grammar, ctypes.byref(single))
        return bool(one[0].logit > float("-inf"))

    def free(self) -> None:
        if self.grammar:
            self.lib.llama_sampler_free(self.grammar)
            self.grammar = None
