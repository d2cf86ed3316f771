"""Find and parse the workflow configuration handed to a connector container.

Two ways in, never both at once:

* text in the environment variable ``config`` (JSON or YAML) - what Airflow's
  DockerOperator passes;
* a file, named by ``--config PATH`` or the environment variable ``config_file``
  (``CONFIG_FILE`` works too) - meant for a mounted volume or secret.

Parsing is bounded, so no config can hang or crash the container (exit 2 and
one line saying why instead): at most MAX_CONFIG_BYTES of UTF-8 text, nested at
most MAX_CONFIG_DEPTH levels, and no YAML aliases, because a handful of them can
expand a 20-line document into billions of values ("billion laughs").

Stdlib only (PyYAML when importable): this module runs inside every image and
must not depend on the build tool. The build tool reads configs with it too.
"""

from __future__ import annotations

import codecs
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
# A config file is at most this large: 32 times what the environment can carry,
# and parsed (as YAML, the slow case) in a few seconds at worst. Beyond it is a
# wrong file rather than a config; refusing it costs no time and no memory.
MAX_CONFIG_BYTES = 4 * 1024 * 1024
# Workflow configs are about ten levels deep; the bound keeps every recursive
# walk of the document (parsers, validation, redaction) far from Python's limit.
MAX_CONFIG_DEPTH = 100


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
        origin = f"env `{CONFIG_TEXT_VARIABLE}`"
        _require_utf8(text, origin)
        return ConfigText(text=text, origin=origin)
    paths = set(file_sources.values())
    if len(paths) > 1:
        listed = ", ".join(f"{source}={path}" for source, path in file_sources.items())
        raise ConfigError(f"conflicting config files were given: {listed}")
    if paths:
        return read_config_file(Path(paths.pop()))
    raise ConfigError(
        f"no configuration given: set env `{CONFIG_TEXT_VARIABLE}` to the JSON or YAML "
        "text, or mount a file and name it with --config PATH or env `config_file`"
    )


def _file_sources(env: Mapping[str, str], cli_path: Optional[str]) -> dict:
    candidates = [("--config", cli_path)]
    candidates += [(f"env `{name}`", env.get(name)) for name in CONFIG_FILE_VARIABLES]
    return {source: path for source, path in candidates if path and path.strip()}


def read_config_file(path: Path) -> ConfigText:
    """A config file's text: UTF-8 (a byte order mark is fine), at most MAX_CONFIG_BYTES."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)  # never more, whatever the file is (/dev/zero, a pipe)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (is the volume mounted?)") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        limit = f"{MAX_CONFIG_BYTES // 2**20} MiB"
        raise ConfigError(f"config file {path} is larger than {limit}, the most a config may be")
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = bom + exc.start
        raise ConfigError(f"config file {path} is not UTF-8 text: {_bad_byte(data[offset], offset)}") from None
    return ConfigText(text=text, origin=f"file {path}", path=path)


def _require_utf8(text: str, origin: str) -> None:
    # Python hands environment bytes that are not UTF-8 over as lone surrogates (U+DC80..U+DCFF).
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        byte = ord(text[exc.start]) - 0xDC00
        offset = len(text[: exc.start].encode("utf-8"))
        raise ConfigError(f"{origin} is not UTF-8 text: {_bad_byte(byte, offset)}") from None


def _bad_byte(byte: int, offset: int) -> str:
    return f"byte 0x{byte:02x} at offset {offset}"


def parse_config_text(config: ConfigText) -> dict:
    """Parse JSON or YAML into the configuration mapping."""
    if not config.text.strip():
        raise ConfigError(f"config from {config.origin} is empty")
    try:
        document = _parse_json(config) if _looks_like_json(config) else _parse_yaml(config)
    except RecursionError:  # the parsers recurse per level: thousands of `[` end here
        raise _too_deep(config) from None
    if not isinstance(document, dict) or not document:
        raise ConfigError(f"config from {config.origin} must be a non-empty mapping (got {type(document).__name__})")
    _check_depth(document, config)
    return document


def _check_depth(document: Any, config: ConfigText) -> None:
    """Refuse a document nested deeper than MAX_CONFIG_DEPTH (walked without recursion)."""
    pending = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_CONFIG_DEPTH:
            raise _too_deep(config)
        children = value.values() if isinstance(value, dict) else value
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def _too_deep(config: ConfigText) -> ConfigError:
    return ConfigError(f"config from {config.origin} is nested more than {MAX_CONFIG_DEPTH} levels deep")


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
        return yaml.load(config.text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader
    except _AliasFound as found:
        raise ConfigError(
            f"config from {config.origin} uses the YAML alias *{found.anchor} ({_position(found.mark)}); aliases are "
            "refused because a few of them can expand a short config without bound: write the repeated part out"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config from {config.origin} is not valid YAML: {_yaml_problem(exc)}") from None


def _yaml_problem(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is None:
        return problem
    return f"{problem} ({_position(mark)})"


def _position(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


class _AliasFound(Exception):
    def __init__(self, event: Any) -> None:
        super().__init__(event.anchor)
        self.anchor = event.anchor
        self.mark = event.start_mark


if yaml is not None:

    class _NoAliasLoader(yaml.SafeLoader):
        """PyYAML's safe loader, stopping at the first alias before anything expands."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                raise _AliasFound(self.peek_event())
            return super().compose_node(parent, index)


def load_config(env: Mapping[str, str], cli_path: Optional[str]) -> dict:
    """The configuration mapping, from whichever single source was given."""
    return parse_config_text(find_config_text(env, cli_path))
