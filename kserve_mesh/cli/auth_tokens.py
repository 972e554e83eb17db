"""``kserve-mesh token create``: a new random token with a role, added to an auth file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from kserve_mesh.cli.output import err_console, fail


def token_create(
    role: str = typer.Option(..., "--role", help="admin (everything) or infer (inference and reads)."),
    file: Path = typer.Option(Path("auth.yaml"), "--file", "-f", help="The auth file to add the token to "
                              "(created, readable by you only, when missing)."),
    name: str | None = typer.Option(None, "--name", help="Who the token is for (shown in logs; default "
                                       "the role and a number)."),
    store_plain: bool = typer.Option(False, "--store-plain", help="Keep the token itself in the file "
                                     "instead of its SHA-256 digest (only where the file must hand it out)."),
) -> None:
    """Make a new random token with a role, add it to an auth file, and print it (once)."""
    import hashlib
    import secrets

    import yaml

    if role not in ("admin", "infer"):
        fail(f"--role must be admin or infer, got '{role}'")
    doc: dict[str, Any] = {}
    if file.exists():
        try:
            doc = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            fail(f"cannot read the auth file {file}: {exc}")
        if not isinstance(doc, dict) or not isinstance(doc.get("tokens", []), list):
            fail(f"{file} is not an auth file (a mapping with a 'tokens' list)")
    tokens = doc.setdefault("tokens", []) or []
    doc["tokens"] = tokens
    taken = {t.get("name") for t in tokens if isinstance(t, dict)}
    if name is None:
        n = 1
        while f"{role}-{n}" in taken:
            n += 1
        name = f"{role}-{n}"
    elif name in taken:
        fail(f"{file} already has a token named '{name}'")
    token = secrets.token_urlsafe(32)
    entry: dict[str, str] = {"name": name, "role": role}
    if store_plain:
        entry["token"] = token
    else:
        entry["sha256"] = hashlib.sha256(token.encode()).hexdigest()
    tokens.append(entry)
    text = yaml.safe_dump(doc, sort_keys=False)
    try:
        if not file.exists():
            file.touch(mode=0o600)
        file.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {file}: {exc.strerror or exc}")
    err_console.print(f"added token '{name}' (role {role}) to {file}; it is shown once, keep it safe:")
    print(token)
