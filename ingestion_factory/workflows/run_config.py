"""The workflow config `inv run-local` hands to a container, and how it travels there.

Configs in examples/ hold no secrets: where one belongs they say
`${NAME}` (the host's environment variable NAME) or `${file:PATH}` (the
content of a file, PATH relative to the config). They are resolved here, on
the host, and the result always goes to the container as JSON.

A config travels in the environment variable `config` (the DockerOperator
contract) unless it is large or holds secrets: then it goes as a read-only
mounted file named by `config_file`, because the environment shows up in
`docker inspect` and Linux caps one environment string at 128 KiB.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..model.runtime_modules import runtime_config, runtime_redaction

# Well under Linux's 128 KiB limit for one "config=<text>" environment string.
MAX_ENV_CONFIG_BYTES = 100 * 1024
PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
FILE_PREFIX = "file:"

ENV_TRANSPORT = "env"
FILE_TRANSPORT = "file"


@dataclass
class RunConfig:
    """A resolved config: the document, its JSON text, and what makes it sensitive."""

    path: Path
    document: dict
    text: str
    placeholders: list[str] = field(default_factory=list)
    secret_fields: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.text.encode())

    @property
    def transport(self) -> str:
        return FILE_TRANSPORT if self.size > MAX_ENV_CONFIG_BYTES or self.sensitive else ENV_TRANSPORT

    @property
    def sensitive(self) -> bool:
        return bool(self.placeholders or self.secret_fields)

    def why_file(self) -> str:
        """One phrase saying why the config goes as a file (empty when it does not)."""
        reasons = []
        if self.size > MAX_ENV_CONFIG_BYTES:
            reasons.append(f"{self.size // 1024} KiB is too large for the environment")
        if self.secret_fields:
            reasons.append(f"it holds secrets ({', '.join(sorted(set(self.secret_fields)))})")
        elif self.placeholders:
            reasons.append("it has resolved placeholders")
        return "; ".join(reasons)


def load(path: Path, env: dict | None = None) -> RunConfig:
    """Read a JSON or YAML config file and resolve its placeholders."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist",
                          "give an existing JSON or YAML file with --config; examples are in examples/")
    # The runtime's reader: the same bounds (size, depth, no YAML aliases) and the same messages.
    try:
        document = runtime_config.parse_config_text(runtime_config.read_config_file(path))
    except runtime_config.ConfigError as exc:
        raise ConfigError(str(exc)) from None
    used: list[str] = []
    resolved = _resolve(document, path.parent, os.environ if env is None else env, used)
    return RunConfig(path=path, document=resolved, text=json.dumps(resolved), placeholders=used,
                     secret_fields=secret_fields(resolved))


def _resolve(value: Any, base: Path, env, used: list[str]) -> Any:
    if isinstance(value, dict):
        return {key: _resolve(item, base, env, used) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, base, env, used) for item in value]
    if isinstance(value, str) and "${" in value:
        return PLACEHOLDER.sub(lambda match: _placeholder_value(match.group(1).strip(), base, env, used), value)
    return value


def _placeholder_value(name: str, base: Path, env, used: list[str]) -> str:
    used.append(name)
    if name.startswith(FILE_PREFIX):
        path = (base / Path(name[len(FILE_PREFIX):].strip()).expanduser()).resolve()
        try:
            # One trailing newline is what `echo secret > file` adds; it is never part of the secret.
            return path.read_text(encoding="utf-8").removesuffix("\n")
        except FileNotFoundError:
            raise ConfigError(f"the config's placeholder ${{{name}}} names {path}, which does not exist",
                              f"write the secret into it, e.g. `printf %s 'value' > {path}`") from None
        except OSError as exc:
            raise ConfigError(f"the config's placeholder ${{{name}}} cannot be read: {exc}") from None
    if not name:
        raise ConfigError("the config has an empty placeholder ${}")
    if name not in env:
        raise ConfigError(f"the config's placeholder ${{{name}}} needs the environment variable {name}",
                          f"export {name}=... before running, or use ${{file:PATH}} to read it from a file")
    return env[name]


def secret_fields(document: Any) -> list[str]:
    """Names of the fields holding a secret, by the runtime's rule (the one its output masking uses)."""
    return sorted({secret.field for secret in runtime_redaction.find_secrets(document)})
