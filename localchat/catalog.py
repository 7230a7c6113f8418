"""The model catalog: the shipped models.yaml merged with the user's own, validated with file:line errors."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from localchat.errors import CatalogError, UnknownModelError
from localchat.templates import TEMPLATE_NAMES as TEMPLATES
from localchat.yamlio import Node, compose as compose_yaml, read_file as read_yaml

SOURCE_KINDS = ("hf", "modelscope", "pip", "url", "file")
ENTRY_FIELDS = {
    "id", "name", "quant", "size", "sha256", "context", "template", "files", "sources", "description",
    "endpoint", "remote_model", "api_key_env",
}
# Extra keys a source may carry besides its kind, per kind.
SOURCE_FIELDS = {
    "hf": {"revision"},
    "modelscope": {"revision"},
    "pip": {"member", "members", "concat", "index_url"},
    "url": set(),
    "file": set(),
}
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_SPLIT_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # hf | modelscope | pip | url | file
    location: str  # repo id, pip requirement, URL or path
    options: dict[str, Any] = field(default_factory=dict)
    where: str = ""  # file:line, for messages

    def label(self) -> str:
        return f"{self.kind}:{self.location}"


@dataclass(frozen=True)
class ModelEntry:
    id: str
    name: str
    files: tuple[str, ...] = ()
    sources: tuple[SourceSpec, ...] = ()
    quant: str | None = None
    size: int | None = None
    sha256: dict[str, str] = field(default_factory=dict)  # file name -> expected sha256
    context: int | None = None
    template: str | None = None  # chatml | qwen | gguf; None: the file's own, else chatml
    description: str | None = None
    endpoint: str | None = None  # remote OpenAI-compatible engine (no local files)
    remote_model: str | None = None
    api_key_env: str | None = None
    origin: str = "shipped"  # shipped | user
    where: str = ""  # file:line of the entry

    @property
    def is_remote(self) -> bool:
        return self.endpoint is not None

    @property
    def is_split(self) -> bool:
        return len(self.files) > 1

    @property
    def main_file(self) -> str:
        """The file llama.cpp is pointed at (the first shard of a split GGUF)."""
        return self.files[0]


class ModelCatalog:
    """All known models, by id, in catalog order (shipped first, then the user's)."""

    def __init__(self, entries: Iterable[ModelEntry]) -> None:
        self._entries: dict[str, ModelEntry] = {}
        for entry in entries:
            self._entries[entry.id] = entry

    @classmethod
    def load(cls, user_file: Path | None = None, shipped_file: Path | None = None) -> "ModelCatalog":
        shipped = load_file(shipped_file or shipped_catalog_path(), origin="shipped")
        user = load_file(user_file, origin="user") if user_file is not None and user_file.exists() else []
        # A user entry with a shipped id replaces it (to pin an internal mirror, say).
        merged = {e.id: e for e in shipped}
        merged.update({e.id: e for e in user})
        return cls(merged.values())

    def __iter__(self):
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._entries

    def ids(self) -> list[str]:
        return list(self._entries)

    def get(self, model_id: str) -> ModelEntry:
        try:
            return self._entries[model_id]
        except KeyError:
            raise UnknownModelError(
                f"unknown model '{model_id}'", hint=suggest(model_id, self.ids())
            ) from None


def suggest(model_id: str, known: list[str]) -> str:
    # Ids that contain what was typed first ("qwen2.5-7b" -> qwen2.5-7b-instruct), then the nearest spellings:
    # with many Qwen generations, qwen3.5-9b is nearer in letters but not what the user meant.
    close = [k for k in known if model_id.lower() in k.lower()][:4]
    close += [k for k in difflib.get_close_matches(model_id, known, n=4, cutoff=0.5) if k not in close][: 4 - len(close)]
    if close:
        return "did you mean " + ", ".join(close) + "? (`localchat list` shows all)"
    return "run `localchat list` to see the catalog"


def shipped_catalog_path() -> Path:
    packaged = resources.files("localchat").joinpath("models.yaml")
    if packaged.is_file():  # installed from a wheel
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "models.yaml"  # a source checkout


# --- parsing -------------------------------------------------------------------------------------


def load_file(path: Path, origin: str) -> list[ModelEntry]:
    return _entries(read_yaml(path, CatalogError, "catalog"), path, origin)


def parse_text(text: str, path: Path, origin: str) -> list[ModelEntry]:
    """The entries of catalog text, validated; messages name `path` (where the text is or will be)."""
    return _entries(compose_yaml(text, path, CatalogError), path, origin)


def _entries(root: Node, path: Path, origin: str) -> list[ModelEntry]:
    if root.value is None:
        return []
    if not isinstance(root.value, list):
        raise CatalogError(f"{path}:{root.line}: the catalog must be a list of entries (`- id: ...`)")
    entries: list[ModelEntry] = []
    seen: dict[str, int] = {}
    for node in root.value:
        entry = _entry(node, path, origin)
        if entry.id in seen:
            raise CatalogError(
                f"{path}:{node.line}: duplicate id '{entry.id}' (first defined at line {seen[entry.id]})",
                hint="give each entry its own id",
            )
        seen[entry.id] = node.line
        entries.append(entry)
    return entries


def _fail(path: Path, line: int, msg: str, hint: str = "") -> CatalogError:
    return CatalogError(f"{path}:{line}: {msg}", hint=hint)


def _get(m: dict[str, Node], key: str, kind: type | tuple[type, ...], path: Path, required: bool = False) -> Any:
    node = m.get(key)
    if node is None or node.value is None:
        if required:
            raise _fail(path, min((n.line for n in m.values()), default=1), f"entry is missing '{key}'")
        return None
    ok = isinstance(node.value, kind) and not (isinstance(node.value, bool) and kind in (int, (int,)))
    if not ok:
        names = "/".join(t.__name__ for t in (kind if isinstance(kind, tuple) else (kind,)))
        raise _fail(path, node.line, f"'{key}' must be {names.replace('str', 'text').replace('int', 'a whole number')}")
    return node.value


def _entry(node: Node, path: Path, origin: str) -> ModelEntry:
    if not isinstance(node.value, dict):
        raise _fail(path, node.line, "each catalog entry must be a mapping (`- id: ...`)")
    m: dict[str, Node] = node.value
    for key, value in m.items():
        if key not in ENTRY_FIELDS:
            close = difflib.get_close_matches(key, sorted(ENTRY_FIELDS), n=1)
            raise _fail(path, value.line, f"unknown field '{key}'", hint=f"did you mean '{close[0]}'?" if close else
                        "known fields: " + ", ".join(sorted(ENTRY_FIELDS)))
    model_id = _get(m, "id", str, path, required=True)
    if check_model_id(model_id):
        raise _fail(path, m["id"].line, f"invalid id '{model_id}'", hint=check_model_id(model_id) or "")
    where = f"{path}:{node.line}"
    endpoint = _get(m, "endpoint", str, path)
    if endpoint is not None:
        _check_remote(m, path)
    else:
        for key in ("remote_model", "api_key_env"):
            if key in m:
                raise _fail(path, m[key].line, f"'{key}' only applies to a remote engine",
                            hint="add `endpoint: https://HOST/v1`, or remove it")
    files = _files(m, path, required=endpoint is None)
    sources = tuple(_source(s, path) for s in (_get(m, "sources", list, path) or []))
    for spec in sources:
        if spec.options.get("concat") and len(files) != 1:
            raise CatalogError(f"{spec.where}: 'concat: true' joins parts into one file; the entry must list exactly one file")
    if endpoint is None and not sources and origin == "shipped":
        raise _fail(path, node.line, f"entry '{model_id}' has no sources")
    template = _get(m, "template", str, path)
    if template is not None and template not in TEMPLATES:
        raise _fail(path, m["template"].line, f"unknown template '{template}'", hint="use one of " + ", ".join(TEMPLATES))
    size = _get(m, "size", int, path)
    context = _get(m, "context", int, path)
    for key, value in (("size", size), ("context", context)):
        if value is not None and value <= 0:
            raise _fail(path, m[key].line, f"'{key}' must be positive")
    return ModelEntry(
        id=model_id,
        name=_get(m, "name", str, path) or model_id,
        files=files,
        sources=sources,
        quant=_get(m, "quant", str, path),
        size=size,
        sha256=_sha256(m, files, path),
        context=context,
        template=template,
        description=_get(m, "description", str, path),
        endpoint=endpoint,
        remote_model=_get(m, "remote_model", str, path),
        api_key_env=_get(m, "api_key_env", str, path),
        origin=origin,
        where=where,
    )


def _check_remote(m: dict[str, Node], path: Path) -> None:
    """A remote engine entry: an OpenAI-compatible base URL, the model name there, the key's variable."""
    from urllib.parse import urlsplit

    node = m["endpoint"]
    url = node.value.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise _fail(path, node.line, f"endpoint '{url}' is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise _fail(path, node.line, "endpoint must be an http:// or https:// URL",
                    hint="the server's OpenAI-compatible base URL, e.g. https://gpu-cluster.internal/v1")
    if parts.username or parts.password:
        raise _fail(path, node.line, "endpoint must not carry credentials",
                    hint="put the key in an environment variable and name it in 'api_key_env'")
    if parts.query or parts.fragment:
        raise _fail(path, node.line, "endpoint must be a base URL without ?query or #fragment")
    for key in ("files", "sources", "sha256", "template"):
        if key in m:
            why = ("the remote server applies its own chat template" if key == "template"
                   else "a remote engine has no local files")
            raise _fail(path, m[key].line, f"'{key}' does not apply to a remote engine ({why})", hint=f"remove '{key}'")
    remote_model = _get(m, "remote_model", str, path)
    if remote_model is not None and (not remote_model.strip() or any(c in remote_model for c in "\x00\r\n")):
        raise _fail(path, m["remote_model"].line, "'remote_model' must be the model's name on the server")
    key_env = _get(m, "api_key_env", str, path)
    if key_env is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key_env):
        raise _fail(path, m["api_key_env"].line, f"'{key_env}' is not an environment variable name",
                    hint="name the variable that holds the key (e.g. VLLM_API_KEY), not the key itself")


def check_model_id(model_id: str) -> str | None:
    """What to do about an id that is not valid, or None when it is."""
    if not _ID_RE.match(model_id):
        return "use letters, digits, '.', '_' and '-' (up to 128 characters), starting with a letter or digit"
    return None


def check_file_name(name: str) -> str | None:
    """Why `name` is not a safe plain file name, or None when it is."""
    if not name or "\x00" in name:
        return "is empty or contains a NUL byte"
    if "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        return "must be a plain file name (no folders, no '..', not hidden)"
    if not name.lower().endswith(".gguf"):
        return "must end in .gguf"
    return None


def _files(m: dict[str, Node], path: Path, required: bool) -> tuple[str, ...]:
    node = m.get("files")
    if node is None or node.value is None:
        if required:
            raise _fail(path, min(n.line for n in m.values()), "entry is missing 'files'")
        return ()
    if not isinstance(node.value, list) or not node.value:
        raise _fail(path, node.line, "'files' must be a non-empty list of .gguf file names")
    names = []
    for item in node.value:
        if not isinstance(item.value, str):
            raise _fail(path, item.line, "each file must be a file name")
        problem = check_file_name(item.value)
        if problem:
            raise _fail(path, item.line, f"file name '{item.value!r}' {problem}")
        names.append(item.value)
    if len(set(names)) != len(names):
        raise _fail(path, node.line, "'files' lists the same file twice")
    if len(names) > 1:
        parts = [_SPLIT_RE.search(n) for n in names]
        if not all(parts) or sorted(int(p.group(1)) for p in parts) != list(range(1, len(names) + 1)) or any(
            int(p.group(2)) != len(names) for p in parts
        ):
            raise _fail(path, node.line, "several files must be the parts of one split GGUF",
                        hint="name them NAME-00001-of-0000N.gguf ... NAME-0000N-of-0000N.gguf, first part first")
    return tuple(names)


def _sha256(m: dict[str, Node], files: tuple[str, ...], path: Path) -> dict[str, str]:
    node = m.get("sha256")
    if node is None or node.value is None:
        return {}
    if node.raw is not None:  # a scalar: one digest
        if len(files) != 1:
            raise _fail(path, node.line, "with several files, 'sha256' must map each file name to its hash")
        pairs = {files[0]: node}
    elif isinstance(node.value, dict):
        pairs = node.value
    else:
        raise _fail(path, node.line, "'sha256' must be a hex digest or a mapping of file name to digest")
    out = {}
    for name, value in pairs.items():
        if name not in files:
            raise _fail(path, value.line, f"sha256 given for '{name}', which is not in 'files'")
        digest = value.raw
        if not isinstance(digest, str) or not _SHA_RE.match(digest.lower()):
            raise _fail(path, value.line, f"sha256 of '{name}' must be 64 hex digits")
        out[name] = digest.lower()
    return out


def _source(node: Node, path: Path) -> SourceSpec:
    if not isinstance(node.value, dict):
        raise _fail(path, node.line, "each source must be a mapping like `- hf: OWNER/REPO`")
    m: dict[str, Node] = node.value
    kinds = [k for k in m if k in SOURCE_KINDS]
    if len(kinds) != 1:
        raise _fail(path, node.line, "each source names exactly one of: " + ", ".join(SOURCE_KINDS))
    kind = kinds[0]
    line = m[kind].line
    if kind == "pip" and isinstance(m[kind].value, list):
        location = _pip_requirements(m[kind], path)
    else:
        location = m[kind].value
        if not isinstance(location, str) or not location.strip() or "\x00" in location:
            raise _fail(path, line, f"'{kind}' must be non-empty text")
    options: dict[str, Any] = {}
    for key, value in m.items():
        if key == kind:
            continue
        if key not in SOURCE_FIELDS[kind]:
            raise _fail(path, value.line, f"unknown field '{key}' for a {kind} source",
                        hint="allowed: " + (", ".join(sorted(SOURCE_FIELDS[kind])) or "nothing else"))
        if key == "concat":
            if not isinstance(value.value, bool):
                raise _fail(path, value.line, "'concat' must be true or false")
        elif not isinstance(value.value, str):
            raise _fail(path, value.line, f"'{key}' must be text")
        options[key] = value.value
    if kind == "pip":
        location = _check_pip(location, options, m, path, line)
    if kind in ("hf", "modelscope") and not re.match(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", location):
        raise _fail(path, line, f"'{location}' is not a repository id", hint="write it as OWNER/REPO")
    if kind == "file" and not re.match(r"^(/|~|[A-Za-z]:[\\/])", location):
        raise _fail(path, line, f"file source '{location}' must be an absolute path",
                    hint="write the full path, e.g. /media/usb/models/model.gguf")
    if kind == "url" and not re.match(r"^https?://[^\s]+$", location):
        raise _fail(path, line, f"unsupported URL '{location}'", hint="url sources must be http:// or https://")
    return SourceSpec(kind, location.strip(), options, where=f"{path}:{line}")


_PIP_REQ_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\s*(==|>=|<=|~=|!=|<|>)\s*[\w.*+!-]+)?$")


def _pip_requirements(node: Node, path: Path) -> str:
    """`pip: [a==1, b==1]`: a model published over several wheels; kept as one space-separated location."""
    if not node.value:
        raise _fail(path, node.line, "'pip' lists no requirements")
    reqs = []
    for item in node.value:
        if not isinstance(item.value, str) or not _PIP_REQ_RE.match(item.value.strip()):
            raise _fail(path, item.line, f"'{item.value}' is not a pip requirement", hint="write NAME or NAME==VERSION")
        reqs.append(re.sub(r"\s+", "", item.value))
    return " ".join(reqs)


def _check_pip(location: str, options: dict[str, Any], m: dict[str, Node], path: Path, line: int) -> str:
    if not isinstance(m["pip"].value, list) and not _PIP_REQ_RE.match(location.strip()):
        raise _fail(path, line, f"'{location}' is not a pip requirement", hint="write NAME or NAME==VERSION")
    for key in ("member", "members"):
        value = options.get(key)
        if value is not None and (not value or value.startswith("/") or ".." in value.split("/") or "\\" in value):
            raise _fail(path, m[key].line, f"{key} '{value}' must be a relative path inside the wheel")
    if "member" in options and "members" in options:
        raise _fail(path, m["members"].line, "give either 'member' (one file) or 'members' (parts to join), not both")
    if options.get("concat") and "members" not in options:
        raise _fail(path, m["concat"].line, "'concat: true' needs 'members', a pattern naming the parts inside the wheels",
                    hint="e.g. members: 'pkg_part*/data/part*.bin'")
    if "members" in options and not options.get("concat"):
        raise _fail(path, m["members"].line, "'members' names parts to join: add 'concat: true'")
    index_url = options.get("index_url")
    if index_url is not None and not re.match(r"^(https?|file)://", index_url):
        raise _fail(path, m["index_url"].line, "index_url must be an http(s):// or file:// URL")
    # Whitespace inside a requirement ("name == 1.0") is dropped: several requirements are space-separated.
    return location if isinstance(m["pip"].value, list) else re.sub(r"\s+", "", location)


# --- writing -------------------------------------------------------------------------------------


def entry_to_dict(entry: ModelEntry) -> dict[str, Any]:
    """The entry as catalog data (what a models.yaml entry says); `usercatalog.render_entry` writes it as YAML."""
    out: dict[str, Any] = {"id": entry.id, "name": entry.name}
    for key in ("quant", "size"):
        if getattr(entry, key) is not None:
            out[key] = getattr(entry, key)
    if entry.sha256:
        out["sha256"] = dict(entry.sha256)
    for key in ("context", "template", "description"):
        if getattr(entry, key) is not None:
            out[key] = getattr(entry, key)
    if entry.files:
        out["files"] = list(entry.files)
    if entry.sources:
        out["sources"] = [_source_to_dict(s) for s in entry.sources]
    for key in ("endpoint", "remote_model", "api_key_env"):
        if getattr(entry, key) is not None:
            out[key] = getattr(entry, key)
    return out


def _source_to_dict(spec: SourceSpec) -> dict[str, Any]:
    several = spec.kind == "pip" and " " in spec.location
    return {spec.kind: spec.location.split(" ") if several else spec.location, **spec.options}
