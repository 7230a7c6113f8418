"""Register a model file that is already on disk in a test's LOCALCHAT_HOME (no copy, no download)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from localchat.registry import InstalledFile, InstalledModel
from localchat.services import Services


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
