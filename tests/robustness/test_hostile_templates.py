"""Hostile chat templates: nothing executes, nothing dangerous is rendered, time and size stay bounded, and
the model falls back to ChatML with a warning. render() never raises anything but TemplateError."""

from __future__ import annotations

import os
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localchat.errors import TemplateError
from localchat.template_sandbox import RenderLimits, SandboxedTemplate
from localchat.templates import NATIVE, choose_template, from_gguf
from tests.support.ggufmutate import hang_guard, peak_memory

MESSAGES = [{"role": "user", "content": "Hello, who are you? 你好"}, {"role": "assistant", "content": "A bot."},
            {"role": "user", "content": "Tell me a joke."}]
BIG = 1_000_000

# Code execution and escapes from the sandbox: the shapes of CVE-2024-34359 and classic Jinja SSTI payloads.
ESCAPES = {
    "subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "subclasses via attr": "{{ ''|attr('__class__')|attr('__mro__') }}",
    "popen via cycler": "{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}",
    "popen via joiner": "{{ joiner.__init__.__globals__['os'].popen('touch {marker}') }}",
    "popen via namespace": "{{ namespace.__init__.__globals__.os.system('touch {marker}') }}",
    "lipsum globals": "{{ lipsum.__globals__['os'].popen('touch {marker}').read() }}",
    "lipsum builtins": "{{ lipsum.__globals__.__builtins__.__import__('os').system('touch {marker}') }}",
    "range globals": "{{ range.__globals__ }}",
    "self reference": "{{ self.__init__.__globals__.__builtins__ }}",
    "request-style": "{% for c in [].__class__.__base__.__subclasses__() %}{{ c.__name__ }}{% endfor %}",
    "format escape": "{{ '{0.__class__.__mro__}'.format('') }}",
    "format_map escape": "{{ '{x.__class__}'.format_map({'x': 1}) }}",
    "getitem dunder": "{{ messages['__class__'] }}",
    "map attribute dunder": "{{ messages|map(attribute='__class__')|list }}",
    "selectattr dunder": "{{ messages|selectattr('__class__')|list }}",
    "mro": "{{ cycler.mro() }}",
    "func globals": "{{ raise_exception.__globals__ }}",
    "func code": "{{ strftime_now.__code__ }}",
    "gi_frame": "{{ (messages|map('upper')).gi_frame }}",
    "mutate messages": "{{ messages.append({'role': 'system', 'content': 'pwned'}) }}{{ messages|length }}",
    "mutate dict": "{{ messages[0].update({'content': 'pwned'}) }}",
    "pop": "{{ messages.pop() }}",
    "include": "{% include '/etc/passwd' %}",
    "import": "{% import 'os' as os %}{{ os }}",
    "extends": "{% extends '/etc/passwd' %}",
    "hidden behind a message": "{% if messages[-1].content == 'Tell me a joke.' %}{{ cycler.__init__ }}{% endif %}"
                               "{% for m in messages %}{{ m.content }}{% endfor %}",
}

# Denial of service: time, memory and output size.
EXHAUSTION = {
    "range 10**9": "{% for i in range(10**9) %}x{% endfor %}",
    "nested ranges": "{% for i in range(60000) %}{% for j in range(60000) %}{% endfor %}{% endfor %}",
    "string times 10**9": "{{ 'x' * 10**9 }}",
    "list times 10**9": "{{ ([1] * 10**9)|length }}",
    "doubling with ~": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
                       "{% endfor %}{{ ns.s|length }}",
    "doubling with +": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
                       "{% endfor %}{{ ns.s|length }}",
    "doubling in a set block": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s %}{{ ns.s }}"
                               "{{ ns.s }}{% endset %}{% endfor %}{{ ns.s|length }}",
    "doubling macro": "{% macro f(n) %}{% if n %}{% set x = f(n-1) %}{{ x }}{{ x }}{% else %}x{% endif %}"
                      "{% endmacro %}{{ f(60)|length }}",
    "exponential calls": "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}",
    "output flood": "{% for i in range(50000) %}{{ 'y' * 1000 }}{% endfor %}",
    "big power": "{{ 2 ** (10**9) }}",
    "repeated squaring": "{% set ns = namespace(x=3) %}{% for i in range(100) %}{% set ns.x = ns.x * ns.x %}"
                         "{% endfor %}{{ ns.x }}",
    "center 10**9": "{{ 'x'|center(10**9) }}",
    "ljust 10**9": "{{ 'x'.ljust(10**9) }}",
    "shared nested lists": "{% set a=[1,1,1,1,1,1,1,1,1,1] %}{% set b=[a,a,a,a,a,a,a,a,a,a] %}"
                           "{% set c=[b,b,b,b,b,b,b,b,b,b] %}{% set d=[c,c,c,c,c,c,c,c,c,c] %}"
                           "{% set e=[d,d,d,d,d,d,d,d,d,d] %}{% set f=[e,e,e,e,e,e,e,e,e,e] %}"
                           "{% set g=[f,f,f,f,f,f,f,f,f,f] %}{{ g }}",
    "%-format reuse": "{{ '%(a)s%(a)s%(a)s%(a)s' % {'a': 'x' * 500000} }}",
    "%-format width": "{{ '%1000000000s' % 'x' }}",
    "format width": "{{ '{:>1000000000}'.format('x') }}",
    "format reuse": "{{ '{0}{0}{0}{0}{0}'.format('x' * 500000) }}",
    "replace empty": "{% set s = 'a' * 100000 %}{{ s.replace('', s) }}",
    "bytes replace": "{% set s = ('a' * 100000).encode() %}{{ s.replace(''.encode(), s) }}",
    "replace filter on a list": "{% set s = 'a' * 100000 %}{{ [s]|replace('', s) }}",
    "replace filter": "{% set s = 'a' * 100000 %}{{ s|replace('a', s) }}",
    "join amplification": "{% set s = 'a' * 100000 %}{{ s.join([s, s, s, s, s, s, s, s, s, s, s, s]) }}",
    "join filter": "{% set s = 'a' * 100000 %}{{ [s, s, s, s, s, s, s, s, s, s, s]|join(s) }}",
    "indent": "{% set s = '\n' * 500000 %}{{ s|indent(60000) }}",
    "wordwrap": "{% set s = 'a ' * 400000 %}{{ s|wordwrap(1, wrapstring='x' * 1000) }}",
    "expandtabs": "{{ ('\t' * 1000).expandtabs(60000) }}",
    "to_bytes": "{{ (1).to_bytes(10**9, 'big') }}",
    "lipsum flood": "{{ lipsum(100000) }}",
    "slice flood": "{{ [1]|slice(10**9)|list }}",
    "batch flood": "{{ [1]|batch(10**9, 'x')|list }}",
    "recursion": "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "recursive loop": "{% for x in [[1]] recursive %}{{ loop([x]) }}{% endfor %}",
    "tojson indent": "{{ messages|tojson(indent=10**6) }}",
}


@pytest.fixture
def no_processes(monkeypatch):
    """Fail loudly if anything tries to start a process or run a shell."""
    calls = []

    def forbidden(name):
        def record(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called")
        return record

    for module, name in ((os, "system"), (os, "popen"), (subprocess, "Popen"), (os, "execv"), (os, "fork")):
        monkeypatch.setattr(module, name, forbidden(f"{module.__name__}.{name}"))
    return calls


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_escape_attempts_execute_nothing_and_fall_back_to_chatml(name, tmp_path, no_processes):
    marker = tmp_path / "pwned"
    source = ESCAPES[name].replace("{marker}", str(marker))
    with pytest.raises(TemplateError):
        from_gguf(source).render(MESSAGES)
    template, warnings = choose_template(None, source)
    assert template is NATIVE["chatml"] and len(warnings) == 1 and "using ChatML" in warnings[0]
    assert not marker.exists() and no_processes == []
    assert MESSAGES[0]["content"] == "Hello, who are you? 你好" and len(MESSAGES) == 3  # our data untouched


@pytest.mark.parametrize("name", sorted(EXHAUSTION))
def test_exhaustion_attempts_are_stopped_within_budget(name):
    with hang_guard(60), peak_memory() as peak, pytest.raises(TemplateError) as e:
        SandboxedTemplate(EXHAUSTION[name], limits=RenderLimits(max_seconds=1)).render(MESSAGES)
    # Far below what the template asked for (gigabytes); the size budget is ~1 MB per value.
    assert peak[0] < 64 << 20, f"{name}: {peak[0]:,} bytes"
    assert "chat template" in e.value.message


def test_step_budget_is_deterministic():
    limits = RenderLimits(max_steps=1000, max_seconds=60)
    with pytest.raises(TemplateError, match="more than 1,000 steps"):
        SandboxedTemplate("{% for i in range(2000) %}{% endfor %}", limits=limits).render(MESSAGES)
    assert SandboxedTemplate("{% for i in range(100) %}{% endfor %}ok", limits=limits).render(MESSAGES) == "ok"


def test_time_budget_stops_a_slow_template():
    limits = RenderLimits(max_steps=10**12, max_seconds=0.2)
    with hang_guard(60), pytest.raises(TemplateError, match=r"ran for more than 0.2 s"):
        SandboxedTemplate("{% for i in range(60000) %}{% for j in range(60000) %}{% endfor %}{% endfor %}",
                          limits=limits).render(MESSAGES)


def test_output_budget_grows_with_the_conversation():
    """Legitimate long conversations are not cut: the budget is 1 MB on top of twice their own text."""
    long = [{"role": "user", "content": "x" * 3_000_000}]
    source = "{% for m in messages %}{{ m.content }}{% endfor %}"
    assert len(from_gguf(source).render(long)) == 3_000_000
    with pytest.raises(TemplateError, match="would be over"):
        from_gguf(source + source + source + "{{ messages[0].content * 2 }}").render(long)


def test_huge_template_source_is_refused():
    with pytest.raises(TemplateError, match="characters long, more than"):
        from_gguf("x" * (300 * 1024))


# -- any template whatsoever: render() raises TemplateError or returns text

SNIPPETS = st.sampled_from([
    "{{ ", " }}", "{% ", " %}", "{# ", " #}", "for ", "if ", "endfor", "endif", "set ", "macro ", "endmacro",
    "in ", "messages", "message", "m", "x", "loop", ".index", ".content", "['role']", "[0]", "[-1]", "(", ")",
    "|", "upper", "join", "length", "replace", "tojson", "~", "+", "*", "**", "%", "'a'", "'%s'", "1", "10",
    "99999", "range", "namespace", "cycler", "lipsum", "raise_exception", "__class__", "__globals__", ".", ",",
    "=", "==", "not ", "and ", "is defined", "none", "true", "\n", "add_generation_prompt", "bos_token",
])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(SNIPPETS, min_size=1, max_size=25).map("".join))
def test_any_template_renders_or_raises_template_error(source):
    with hang_guard(60):
        try:
            out = SandboxedTemplate(source, limits=RenderLimits(max_seconds=5)).render(MESSAGES)
        except TemplateError:
            return
    assert isinstance(out, str)
