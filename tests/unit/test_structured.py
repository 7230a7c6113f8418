"""response_format and JSON schemas: what becomes a constraint, and what is refused with the path to fix."""

from __future__ import annotations

import pytest

from localchat.structured import OutputConstraint, SchemaError, parse_response_format, tools_constraint
from localchat.tools import parse_tools

PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                           "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}}},
          "required": ["name", "age"], "additionalProperties": False, "$defs": {"tag": {"type": "string"}}}


def test_response_formats():
    assert parse_response_format(None) is None
    assert parse_response_format({"type": "text"}) is None
    assert parse_response_format({"type": "json_object"}) == OutputConstraint("json")
    c = parse_response_format({"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON,
                                                                      "strict": True}})
    assert c.kind == "schema" and c.schema == PERSON
    assert OutputConstraint.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("schema,param,words", [
    ({"type": "object", "properties": {"a": {"type": "str"}}}, "response_format.json_schema.schema.properties.a.type",
     "'str' is not a JSON schema type"),
    ({"type": "object", "properties": {"a": {"type": "string", "pattern": "[a-z]+"}}},
     "response_format.json_schema.schema.properties.a.pattern", "start it with ^"),
    ({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}},
     "response_format.json_schema.schema.properties.a.$ref", "nothing is fetched"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}},
     "response_format.json_schema.schema.properties.a.$ref", "points at nothing"),
    ({"type": "string", "pattern": "^[[:alpha:]]+$"}, "response_format.json_schema.schema.pattern", "'[:'"),
    ({"type": "string", "pattern": "^a(?=b)$"}, "response_format.json_schema.schema.pattern", "lookarounds"),
    ({"type": "string", "pattern": "^(a)\\1$"}, "response_format.json_schema.schema.pattern", "'\\1'"),
    ({"type": "string", "pattern": "^a*?$"}, "response_format.json_schema.schema.pattern", "'*?'"),
    ({"type": "object", "if": {"type": "string"}}, "response_format.json_schema.schema.if", "'if' is not supported"),
    ({"type": "object", "properties": {"a": {"enum": []}}}, "response_format.json_schema.schema.properties.a.enum",
     "non-empty"),
])
def test_schemas_the_grammar_cannot_express_are_refused_with_their_path(schema, param, words):
    with pytest.raises(SchemaError) as info:
        parse_response_format({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert info.value.param == param and words in info.value.message


def test_bad_response_format_shapes():
    with pytest.raises(SchemaError, match="must be"):
        parse_response_format({"type": "xml"})
    with pytest.raises(SchemaError, match="'schema' object"):
        parse_response_format({"type": "json_schema", "json_schema": {"name": "x", "schema": "{}"}})


def test_tools_constraint_follows_tool_choice():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}},
             {"type": "function", "function": {"name": "g"}}]
    assert tools_constraint(parse_tools(tools, "none"), "json") is None
    auto = tools_constraint(parse_tools(tools), "json")
    assert auto.lazy and [t.name for t in auto.tools] == ["f", "g"]
    named = tools_constraint(parse_tools(tools, {"type": "function", "function": {"name": "g"}}, False), "xml")
    assert not named.lazy and not named.parallel and named.form == "xml" and [t.name for t in named.tools] == ["g"]
    assert OutputConstraint.from_dict(named.to_dict()).tools[0].name == "g"


def test_a_tools_bad_schema_names_the_tool():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"when": {"type": "date"}}}}}]
    with pytest.raises(SchemaError) as info:
        tools_constraint(parse_tools(tools, "required"), "json")
    assert info.value.param == "tools[0].function.parameters.properties.when.type"
