"""Register a model file that is already on disk in a test's LOCALCHAT_HOME (no copy, no download)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from localchat.registry import InstalledFile, InstalledModel
from localchat.services import Services

# The endless test model's window: a reply fills it only after thousands of tokens.
ENDLESS_CONTEXT = 32768


def register_local_model(home: Path, model_path: Path, model_id: str = "tiny", template: str | None = "chatml",
                         context: int | None = None) -> Services:
    svc = Services.open(home)
    lines = [f"- id: {model_id}", f"  name: {model_id}", f"  files: [{model_path.name}]",
             "  sources:", f"    - file: {model_path}"]
    if template:
        lines.append(f"  template: {template}")
    if context:
        lines.append(f"  context: {context}")
    catalog = svc.paths.user_catalog
    catalog.parent.mkdir(parents=True, exist_ok=True)
    with open(catalog, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    svc.registry.record(InstalledModel(model_id, [InstalledFile(model_path.name, digest, model_path.stat().st_size)],
                                       source=f"file:{model_path}", directory=str(model_path.parent)))
    return Services.open(home)  # a fresh one: the catalog is cached per Services


def register_endless(home, path, model_id="chatty"):
    """Register the endless model with a window and a reply limit big enough that it does not stop soon."""
    svc = register_local_model(home, path, model_id=model_id)
    svc.config.load = {"n_ctx": ENDLESS_CONTEXT}
    svc.config.sampling = {"max_tokens": ENDLESS_CONTEXT}
    svc.config.save(svc.paths.config_file)
    return svc
