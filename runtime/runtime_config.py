"""Find and parse the workflow configuration handed to a connector container.

Two ways in, never both at once:

* text in the environment variable ``config`` (JSON or YAML) - what Airflow's
  DockerOperator passes;
* a file, named by ``--config PATH`` or the environment variable ``config_file``
  (``CONFIG_FILE`` works too) - meant for a mounted volume or secret.

Stdlib only (PyYAML when importable): this module runs inside every image and
must not depend on the build tool.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

try:  # Both frameworks depend on PyYAML, but JSON must keep working without it.
    import yaml
except ImportError:  # pragma: no cover - exercised by monkeypatching `yaml` to None
    yaml = None

CONFIG_TEXT_VARIABLE = "config"
CONFIG_FILE_VARIABLES = ("config_file", "CONFIG_FILE")

# Linux refuses to start a process (execve fails with E2BIG, "Argument list too
# long") when one environment string "NAME=value\0" is longer than
# MAX_ARG_STRLEN = 32 pages = 128 KiB. A config that large can never reach
# main.py through `config`; it has to come in as a mounted file.
MAX_ENV_STRING_BYTES = 128 * 1024


class ConfigError(Exception):
    """The configuration is missing or invalid (exit code 2)."""


@dataclass(frozen=True)
class ConfigText:
    """Raw configuration text and where it came from, for error messages."""

    text: str
    origin: str
    path: Optional[Path] = None


def env_entry_fits(name: str, value: str) -> bool:
    """Whether `name=value` can be passed in a process environment at all."""
    entry_bytes = len(name.encode()) + 1 + len(value.encode()) + 1  # "=" and NUL
    return entry_bytes <= MAX_ENV_STRING_BYTES


def find_config_text(env: Mapping[str, str], cli_path: Optional[str]) -> ConfigText:
    """Pick the one configuration source that was given and read it."""
    text = env.get(CONFIG_TEXT_VARIABLE, "")
    file_sources = _file_sources(env, cli_path)
    if text.strip() and file_sources:
        raise ConfigError(
            f"both a config text (env `{CONFIG_TEXT_VARIABLE}`) and a config file "
            f"({', '.join(file_sources)}) were given; pass only one"
        )
    if text.strip():
        return ConfigText(text=text, origin=f"env `{CONFIG_TEXT_VARIABLE}`")
    paths = set(file_sources.values())
    if len(paths) > 1:
        listed = ", ".join(f"{source}={path}" for source, path in file_sources.items())
        raise ConfigError(f"conflicting config files were given: {listed}")
    if paths:
        return _read_config_file(Path(paths.pop()))
    raise ConfigError(
        f"no configuration given: set env `{CONFIG_TEXT_VARIABLE}` to the JSON or YAML "
        "text, or mount a file and name it with --config PATH or env `config_file`"
    )


def _file_sources(env: Mapping[str, str], cli_path: Optional[str]) -> dict:
    candidates = [("--config", cli_path)]
    candidates += [(f"env `{name}`", env.get(name)) for name in CONFIG_FILE_VARIABLES]
    return {source: path for source, path in candidates if path and path.strip()}


def _read_config_file(path: Path) -> ConfigText:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (is the volume mounted?)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    return ConfigText(text=text, origin=f"file {path}", path=path)


def parse_config_text(config: ConfigText) -> dict:
    """Parse JSON or YAML into the configuration mapping."""
    if not config.text.strip():
        raise ConfigError(f"config from {config.origin} is empty")
    document = _parse_json(config) if _looks_like_json(config) else _parse_yaml(config)
    if not isinstance(document, dict) or not document:
        raise ConfigError(f"config from {config.origin} must be a non-empty mapping (got {type(document).__name__})")
    return document


def _looks_like_json(config: ConfigText) -> bool:
    # YAML would accept most broken JSON as a flow mapping and report a vaguer
    # error, so text that starts like JSON is held to JSON's rules.
    if config.path is not None and config.path.suffix.lower() == ".json":
        return True
    return config.text.lstrip().startswith(("{", "["))


def _parse_json(config: ConfigText) -> Any:
    try:
        return json.loads(config.text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"config from {config.origin} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None


def _parse_yaml(config: ConfigText) -> Any:
    if yaml is None:
        raise ConfigError(
            f"config from {config.origin} is not JSON, and YAML needs PyYAML, "
            "which this image lacks; pass the config as JSON"
        )
    try:
        return yaml.safe_load(config.text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config from {config.origin} is not valid YAML: {_yaml_problem(exc)}") from None


def _yaml_problem(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is None:
        return problem
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"


def load_config(env: Mapping[str, str], cli_path: Optional[str]) -> dict:
    """The configuration mapping, from whichever single source was given."""
    return parse_config_text(find_config_text(env, cli_path))
