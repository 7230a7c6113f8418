"""What a reply must look like: a JSON object, JSON that validates against a schema, or tool calls whose
arguments follow each function's schema. Parsed and checked here (no llama_cpp); the worker turns an
OutputConstraint into a GBNF grammar and compiles it (localchat.engine.grammar), so a small model cannot
emit JSON that does not parse.

The schema check here catches what the grammar converter would refuse, with the JSON path to fix, before
a request reaches the worker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from localchat.errors import LocalchatError
from localchat.tools import ToolFormat, ToolRequest, ToolSpec

TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}
# Keywords the grammar enforces or may safely ignore (annotations, numeric bounds it does not enforce).
KNOWN = {"type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems",
         "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions", "pattern", "format",
         "minLength", "maxLength", "title", "description", "default", "examples", "$schema", "$id", "$comment",
         "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "nullable", "strict",
         "deprecated", "readOnly", "writeOnly"}
MAX_SCHEMA_CHARS = 64 * 1024
_UNSUPPORTED_PATTERN = re.compile(r"\(\?|\\[1-9bB]|\[:|[*+?}]\?")


class SchemaError(LocalchatError):
    """A JSON schema (response_format, or a tool's parameters) that cannot become a grammar."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class OutputConstraint:
    """Sent with a generation; the worker compiles it into the sampler chain of that request only."""

    kind: Literal["json", "schema", "tools"]
    schema: Mapping[str, Any] | None = None  # kind "schema"
    tools: tuple[ToolSpec, ...] = ()  # kind "tools": the functions that may be called
    form: ToolFormat = "json"  # how this model writes a call
    lazy: bool = False  # tool_choice auto: free text until the model opens `<tool_call>`
    parallel: bool = True  # more than one call in a reply
    # The reply starts inside a thought (the prompt opened it): the constraint holds from this text on (the
    # thought's close tag), so the model thinks freely first. None: from the first token.
    after: str | None = None

    def to_dict(self) -> dict:
        return {"kind": self.kind, "schema": self.schema, "form": self.form, "lazy": self.lazy,
                "parallel": self.parallel, "after": self.after,
                "tools": [{"name": t.name, "parameters": dict(t.parameters)} for t in self.tools]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OutputConstraint:
        tools = tuple(ToolSpec(t["name"], parameters=t["parameters"]) for t in d.get("tools") or ())
        return cls(d["kind"], d.get("schema"), tools, d.get("form", "json"), bool(d.get("lazy")),
                   bool(d.get("parallel", True)), d.get("after"))


def parse_response_format(raw: Any) -> OutputConstraint | None:
    """OpenAI's `response_format`: text (None), json_object, or json_schema {name, schema, strict}."""
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind in (None, "text") and isinstance(raw, dict):
        return None
    if kind == "json_object":
        return OutputConstraint("json")
    if kind != "json_schema":
        raise SchemaError("'response_format' must be {\"type\": \"text\"}, {\"type\": \"json_object\"} or "
                          "{\"type\": \"json_schema\", \"json_schema\": {\"name\": ..., \"schema\": {...}}}",
                          "response_format")
    spec = raw.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
        raise SchemaError("'response_format.json_schema' must be an object with a 'schema' object",
                          "response_format.json_schema")
    if "name" in spec and not (isinstance(spec["name"], str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", spec["name"])):
        raise SchemaError("'response_format.json_schema.name' must be 1-64 letters, digits, '_' or '-'",
                          "response_format.json_schema.name")
    schema = spec.get("schema") or {"type": "object"}
    return schema_constraint(schema, "response_format.json_schema.schema")


def schema_constraint(schema: Any, where: str = "schema") -> OutputConstraint:
    """A constraint from a JSON schema given on its own (`localchat run --json-schema FILE`, Ollama's
    `format`), checked first."""
    check_schema(schema, where)
    return OutputConstraint("schema", schema)


def tools_constraint(request: ToolRequest | None, form: ToolFormat) -> OutputConstraint | None:
    """auto: free text, constrained from the moment a call opens; required / a named function: a call
    at once; none: nothing."""
    if request is None or not request.active:
        return None
    for i, tool in enumerate(request.tools):
        check_schema(tool.parameters, f"tools[{i}].function.parameters")
    return OutputConstraint("tools", tools=request.offered(), form=form, lazy=request.choice == "auto",
                            parallel=request.parallel)


def check_schema(schema: Any, where: str = "schema") -> None:
    """Raise SchemaError naming the path of the first part the grammar cannot express."""
    try:
        size = len(json.dumps(schema))
    except (TypeError, ValueError):
        raise SchemaError(f"{where} is not JSON", where) from None
    if size > MAX_SCHEMA_CHARS:
        raise SchemaError(f"{where} is {size:,} characters long; at most {MAX_SCHEMA_CHARS:,} are accepted", where)
    _check(schema, where, schema, depth=0)


def _check(node: Any, path: str, root: Any, depth: int) -> None:
    if depth > 32:
        raise SchemaError(f"{path}: the schema nests deeper than 32 levels", path)
    if isinstance(node, bool):
        return
    if not isinstance(node, dict):
        raise SchemaError(f"{path} must be a schema object (got {type(node).__name__})", path)
    unknown = sorted(set(node) - KNOWN)
    if unknown:
        raise SchemaError(f"{path}: '{unknown[0]}' is not supported in a grammar-constrained schema; remove it or "
                          f"use {', '.join(sorted({'type', 'properties', 'enum', 'anyOf', 'pattern'}))} instead",
                          f"{path}.{unknown[0]}")
    kinds = node.get("type")
    for kind in kinds if isinstance(kinds, list) else [kinds] if kinds is not None else []:
        if kind not in TYPES:
            raise SchemaError(f"{path}.type: '{kind}' is not a JSON schema type (use one of {', '.join(sorted(TYPES))})",
                              f"{path}.type")
    if "pattern" in node:
        pattern = node["pattern"]
        if not isinstance(pattern, str) or not (pattern.startswith("^") and pattern.endswith("$")):
            raise SchemaError(f"{path}.pattern must match the whole string: start it with ^ and end it with $",
                              f"{path}.pattern")
        unsupported = _UNSUPPORTED_PATTERN.search(pattern)
        if unsupported:  # llama.cpp's converter mistranslates these, and loops forever on [[:alpha:]]
            raise SchemaError(f"{path}.pattern uses '{unsupported.group(0)}', which a grammar cannot express (no "
                              "lookarounds, backreferences, word boundaries, lazy quantifiers or [:classes:])",
                              f"{path}.pattern")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise SchemaError(f"{path}.pattern is not a valid regular expression ({exc})", f"{path}.pattern") from None
    if "enum" in node and (not isinstance(node["enum"], list) or not node["enum"]):
        raise SchemaError(f"{path}.enum must be a non-empty list", f"{path}.enum")
    if "$ref" in node:
        _check_ref(node["$ref"], path, root)
    if "required" in node:
        required, props = node["required"], node.get("properties") or {}
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise SchemaError(f"{path}.required must be a list of property names", f"{path}.required")
        missing = [r for r in required if r not in props and node.get("additionalProperties") is False]
        if missing:
            raise SchemaError(f"{path}.required names '{missing[0]}', which is not among its properties",
                              f"{path}.required")
    for key in ("properties", "$defs", "definitions"):
        children = node.get(key)
        if children is None:
            continue
        if not isinstance(children, dict):
            raise SchemaError(f"{path}.{key} must be an object", f"{path}.{key}")
        for name, child in children.items():
            _check(child, f"{path}.{key}.{name}", root, depth + 1)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        children = node.get(key)
        if children is None:
            continue
        if not isinstance(children, list) or not children:
            raise SchemaError(f"{path}.{key} must be a non-empty list of schemas", f"{path}.{key}")
        for i, child in enumerate(children):
            _check(child, f"{path}.{key}[{i}]", root, depth + 1)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), (dict, bool)):
            _check(node[key], f"{path}.{key}", root, depth + 1)
        elif key in node:
            raise SchemaError(f"{path}.{key} must be a schema or true/false", f"{path}.{key}")


def _check_ref(ref: Any, path: str, root: Any) -> None:
    if not isinstance(ref, str) or not ref.startswith("#/"):
        raise SchemaError(f"{path}.$ref '{ref}': only references inside the schema ('#/$defs/NAME') are supported "
                          "(nothing is fetched)", f"{path}.$ref")
    target = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, dict) or part not in target:
            raise SchemaError(f"{path}.$ref '{ref}' points at nothing in the schema", f"{path}.$ref")
        target = target[part]
