"""Property tests of the catalog loader: any text, and any structure of YAML values, either loads into
entries or is refused with a CatalogError that names file:line. Never another exception. File names that
could escape the models folder and URLs of other schemes are never accepted."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from localchat.catalog import ENTRY_FIELDS, SOURCE_KINDS, load_file, parse_text
from localchat.errors import CatalogError

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PATH = Path("/cfg/models.yaml")
WHERE = re.compile(r"^/cfg/models\.yaml:(\d+): ")


def outcome(text: str):
    """The entries, or the CatalogError, after checking that the error names a line inside the text."""
    try:
        return parse_text(text, PATH, "user")
    except CatalogError as e:
        m = WHERE.match(str(e))
        assert m, f"no file:line in {str(e)!r}"
        # YAML counts \r, \x85, U+2028 and U+2029 as line breaks too (YAML 1.1, 5.4)
        breaks = len(re.findall("\r\n|[\n\r\x85\u2028\u2029]", text))
        assert 1 <= int(m.group(1)) <= breaks + 2, str(e)
        return e


def assert_safe(entries) -> None:
    for entry in entries:
        for name in entry.files:
            assert name == Path(name).name and name not in (".", "..") and not name.startswith(".")
            assert "\x00" not in name and "/" not in name and "\\" not in name
        for spec in entry.sources:
            if spec.kind == "url":
                assert re.match(r"^https?://", spec.location)
        if entry.endpoint is not None:
            assert re.match(r"^https?://", entry.endpoint)


# -- any text

YAMLISH = st.lists(st.sampled_from(list("- :[]{},'\"\n\t#&*!|>%@`?abcdefgh0123456789.\\/\x00") +
                                   ["id", "files", "sources", "url", "hf", "- id: a\n", "  files: [a.gguf]\n",
                                    "\u2028", "\ufeff", "é", "!!python/object:os.system "]), max_size=80).map("".join)


@SETTINGS
@given(st.one_of(st.text(max_size=300), YAMLISH))
@example("- id: a\n  files: [a.gguf]\n  sources: [{url: 'file:///etc/passwd'}]\n")
@example("- id: a\n  files: [a.gguf]\n\x00")
@example("- !!python/object/apply:os.system ['echo hi']\n")
@example("- &a [*a]\n")
@example("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8)))
@example("[" * 5000 + "]" * 5000)
@example("- id: a\n\x1f")
@example("- id: a\n  files: [a.gguf]\n  size: 2001-13-45\n")
@example("'\u2028\u2028")  # YAML line breaks that are not \n
def test_any_text_loads_or_names_file_and_line(text):
    result = outcome(text)
    if not isinstance(result, CatalogError):
        assert_safe(result)


def test_non_utf8_file_names_its_line(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_bytes(b"- id: a\n  files: [a.gguf]\n  name: caf\xe9\n")
    try:
        load_file(path, "user")
    except CatalogError as e:
        assert str(e).startswith(f"{path}:3: "), str(e)
    else:
        raise AssertionError("a catalog that is not UTF-8 was loaded")


def test_control_character_names_its_line():
    err = outcome("- id: a\n  files: [a.gguf]\n  name: x\x1fy\n")
    assert isinstance(err, CatalogError) and str(err).startswith(f"{PATH}:3: ") and "U+001F" in str(err)


def test_self_referencing_alias_is_refused():
    err = outcome("- id: a\n  files: &f [a.gguf, *f]\n")
    assert isinstance(err, CatalogError) and "alias" in str(err)


def test_nul_byte_names_its_line():
    err = outcome("- id: a\n  files: [a.gguf]\n  name: x\x00y\n")
    assert isinstance(err, CatalogError) and str(err).startswith(f"{PATH}:3: ") and "NUL" in str(err)


# -- any structure

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(["a.gguf", "../a.gguf", "/etc/a.gguf", "a\x00.gguf", ".a.gguf",
                                                           "chatml", "gguf", "Qwen/Repo", "https://x.invalid/a.gguf"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
KEYS = st.one_of(st.sampled_from(sorted(ENTRY_FIELDS)), st.text(max_size=10))
ENTRY = st.dictionaries(KEYS, VALUES, max_size=8)
SOURCE = st.dictionaries(st.one_of(st.sampled_from(SOURCE_KINDS + ("revision", "member", "index_url", "concat")),
                                   st.text(max_size=6)), VALUES, min_size=1, max_size=3)
BASE = {"id": "m", "files": ["m.gguf"]}


@SETTINGS
@given(st.lists(st.one_of(ENTRY, st.builds(lambda extra, srcs: {**BASE, **extra, "sources": srcs},
                                           st.dictionaries(KEYS, VALUES, max_size=2), st.lists(SOURCE, max_size=3))),
                max_size=4))
def test_any_structure_loads_or_names_file_and_line(entries):
    text = yaml.safe_dump(entries, allow_unicode=True)
    result = outcome(text)
    if not isinstance(result, CatalogError):
        assert_safe(result)


# -- file names and URL schemes

NAMES = st.one_of(
    st.text(max_size=30).map(lambda s: s + ".gguf"),
    st.builds(lambda a, b: f"{a}/{b}.gguf", st.sampled_from(["..", "/", "", ".", "C:", "~", "a"]), st.text(max_size=8)),
    st.builds(lambda a: f"..\\{a}.gguf", st.text(max_size=8)),
    st.sampled_from(["..", ".", "/", "/etc/passwd", "\x00.gguf", "a\x00b.gguf", "../../.ssh/id_rsa.gguf",
                     "/abs/model.gguf", "C:\\model.gguf", ".hidden.gguf", "ok.gguf"]),
)


@SETTINGS
@given(NAMES)
def test_file_names_that_leave_the_models_folder_are_refused(name):
    text = yaml.safe_dump([{"id": "m", "files": [name], "sources": [{"url": "https://x.invalid/m.gguf"}]}])
    result = outcome(text)
    if isinstance(result, CatalogError):
        return
    assert_safe(result)
    assert result[0].files == (name,)


SCHEMES = st.one_of(st.sampled_from(["file", "javascript", "ftp", "data", "gopher", "ssh", "HTTP", "hxxp", "http ",
                                     "jar:http", "", "//"]),
                    st.from_regex(r"[a-z][a-z0-9+.-]{0,8}", fullmatch=True))


@SETTINGS
@given(SCHEMES, st.sampled_from(["://x.invalid/m.gguf", ":alert(1)", ":///etc/passwd", "://127.0.0.1/m.gguf"]))
def test_url_sources_and_endpoints_take_only_http_and_https(scheme, rest):
    url = scheme + rest
    for entry in ({"id": "m", "files": ["m.gguf"], "sources": [{"url": url}]}, {"id": "m", "endpoint": url}):
        result = outcome(yaml.safe_dump([entry]))
        accepted = not isinstance(result, CatalogError)
        web = rest.startswith("://") and rest != ":///etc/passwd"
        if accepted:  # http and https only (an endpoint's scheme, as URLs go, in any case)
            assert scheme.lower() in ("http", "https") and web, (url, result)
        else:
            assert "http" in str(result) or "URL" in str(result), str(result)
        if scheme in ("http", "https") and web:
            assert accepted, (url, result)
