"""Find and parse the workflow configuration handed to a connector container.

Two ways in, never both at once:

* text in the environment variable ``config`` (JSON or YAML) - what Airflow's
  DockerOperator passes;
* a file, named by ``--config PATH`` or the environment variable ``config_file``
  (``CONFIG_FILE`` works too) - meant for a mounted volume or secret.

Parsing is bounded, so no config can hang or crash the container (exit 2 and
one line saying why instead): at most MAX_CONFIG_BYTES of UTF-8 text, at most
MAX_YAML_NODES YAML values, nested at most MAX_CONFIG_DEPTH levels, and no YAML
aliases, because a handful of them can expand a 20-line document into billions
of values ("billion laughs"). A config is JSON data, YAML only another spelling
of it: YAML-only types (dates, !!binary, !!set) and integers Python refuses to
convert (more than 4300 digits) are refused with their position.

Stdlib only (PyYAML when importable): this module runs inside every image and
must not depend on the build tool. The build tool reads configs with it too.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
# Each YAML value costs about 9 microseconds and 0.4 KiB to compose and construct even
# with libyaml (measured: 200,000 values in 1.9 s and 86 MiB on a busy 2-core host),
# so a 4 MiB file of one-character list items (over a million values) would take
# 20 s and 400 MiB. This bound keeps any YAML config, accepted or refused, under
# 1.5 s and 150 MiB (measured in the base image), half the 3 s / 300 MiB budget;
# real configs have a few hundred values, a 20,000-table filter list 20,000.
MAX_YAML_NODES = 100_000
# Without libyaml (an image whose PyYAML came without its C extension) the
# pure-Python parser is about ten times slower, so it gets a tenth of the size.
MAX_PURE_PYTHON_YAML_BYTES = MAX_CONFIG_BYTES // 10


class ConfigError(Exception):
    """The configuration is missing or invalid (exit code 2)."""


@dataclass(frozen=True)
class ConfigText:
    """Raw configuration text and where it came from, for error messages."""

    text: str
    origin: str
    path: Path | None = None


def env_entry_fits(name: str, value: str) -> bool:
    """Whether `name=value` can be passed in a process environment at all."""
    entry_bytes = len(name.encode()) + 1 + len(value.encode()) + 1  # "=" and NUL
    return entry_bytes <= MAX_ENV_STRING_BYTES


def find_config_text(env: Mapping[str, str], cli_path: str | None) -> ConfigText:
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


def _file_sources(env: Mapping[str, str], cli_path: str | None) -> dict:
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
    except ValueError as exc:  # an integer of more than 4300 digits (sys.get_int_max_str_digits)
        raise ConfigError(f"config from {config.origin} is not valid JSON: {exc}") from None


def _parse_yaml(config: ConfigText) -> Any:
    if yaml is None:
        raise ConfigError(
            f"config from {config.origin} is not JSON, and YAML needs PyYAML, "
            "which this image lacks; pass the config as JSON"
        )
    if not _HAS_LIBYAML and len(config.text) > MAX_PURE_PYTHON_YAML_BYTES:
        raise ConfigError(
            f"config from {config.origin} is YAML larger than {MAX_PURE_PYTHON_YAML_BYTES // 1024} KiB, and this "
            "image's PyYAML lacks libyaml to parse that in bounded time; pass the config as JSON"
        )
    # Every explicitly tagged value skips the resolver, where values are counted; each needs a `!`.
    budget = MAX_YAML_NODES - config.text.count("!")
    if budget < 0:
        raise _too_many_values(config)
    loader = _BoundedLoader(config.text)
    loader.budget = budget
    try:
        root = loader.get_single_node()  # composed in C: aliases are not expanded yet, only shared
        if root is None:
            return None
        _refuse_shared_nodes(root, config)
        return loader.construct_document(root)
    except _TooManyValues:
        raise _too_many_values(config) from None
    except _NotJsonData as refused:
        raise ConfigError(f"config from {config.origin} {refused.what} ({_position(refused.mark)}): {refused.hint}") from None
    except yaml.YAMLError as exc:
        if "maximum nesting depth" in str(exc):  # libyaml's own bound (1000 levels)
            raise _too_deep(config) from None
        raise ConfigError(f"config from {config.origin} is not valid YAML: {_yaml_problem(exc)}") from None
    finally:
        loader.dispose()


def _refuse_shared_nodes(root: Any, config: ConfigText) -> None:
    """Refuse the first alias, and a nesting deeper than MAX_CONFIG_DEPTH, before anything is constructed.

    An alias composes to the very node its anchor named, so a node reached twice
    is one. Walked in document order, without recursion: the first repeat is
    the first alias.
    """
    seen = set()
    pending = [(root, 1)]
    while pending:
        node, depth = pending.pop()
        if id(node) in seen:
            raise _alias_error(node, config)
        seen.add(id(node))
        if depth > MAX_CONFIG_DEPTH:
            raise _too_deep(config)
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            continue
        pending.extend((child, depth + 1) for child in reversed(children))


def _alias_error(node: Any, config: ConfigText) -> ConfigError:
    # Composed nodes keep no anchor name: read it at the anchored node's start, then find its first use.
    lines = config.text.split("\n")
    mark = node.start_mark
    anchored = lines[mark.line][mark.column:] if mark.line < len(lines) else ""
    name = re.match(r"&([^\s,\[\]{}]+)", anchored)
    where = ""
    if name:
        offset = sum(len(line) + 1 for line in lines[: mark.line]) + mark.column + len(name.group(0))
        use = re.compile(r"\*" + re.escape(name.group(1)) + r"(?![^\s,\[\]{}])").search(config.text, offset)
        if use:
            line = config.text.count("\n", 0, use.start())
            column = use.start() - (config.text.rfind("\n", 0, use.start()) + 1)
            where = f" ({_position_of(line, column)})"
    alias = f"*{name.group(1)}" if name else f"alias of the value at {_position(mark)}"
    return ConfigError(
        f"config from {config.origin} uses the YAML alias {alias}{where}; aliases are refused because a few of "
        "them can expand a short config without bound: write the repeated part out"
    )


def _too_many_values(config: ConfigText) -> ConfigError:
    return ConfigError(
        f"config from {config.origin} has more than {MAX_YAML_NODES:,} YAML values, more than a config "
        "can need and more than parse in bounded time; pass long lists as JSON or shorten them"
    )


def _yaml_problem(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is None:
        return problem
    return f"{problem} ({_position(mark)})"


def _position(mark: Any) -> str:
    return _position_of(mark.line, mark.column)


def _position_of(line: int, column: int) -> str:
    return f"line {line + 1}, column {column + 1}"


class _TooManyValues(Exception):
    pass


class _NotJsonData(Exception):
    """A YAML value with no JSON equivalent (raised while constructing, with its position)."""

    def __init__(self, what: str, mark: Any, hint: str) -> None:
        super().__init__(what)
        self.what, self.mark, self.hint = what, mark, hint


if yaml is not None:
    _HAS_LIBYAML = bool(getattr(yaml, "__with_libyaml__", False))
    _BaseLoader = yaml.CSafeLoader if _HAS_LIBYAML else yaml.SafeLoader

    class _BoundedLoader(_BaseLoader):  # type: ignore[misc, valid-type]
        """PyYAML's safe loader (libyaml's when present) that counts values and builds JSON data only."""

        budget = MAX_YAML_NODES

        def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
            # Called for every value without an explicit tag, while composing: stop early, not after.
            self.budget -= 1
            if self.budget < 0:
                raise _TooManyValues()
            return super().resolve(kind, value, implicit)

        def construct_yaml_int(self, node: Any) -> Any:
            try:
                return super().construct_yaml_int(node)
            except ValueError:
                raise _NotJsonData(
                    f"has an integer of {len(node.value)} characters", node.start_mark,
                    "Python converts at most 4300 digits; quote it to pass it as text"
                ) from None

        def _refuse(self, node: Any) -> Any:
            kind = node.tag.rsplit(":", 1)[-1]
            what = {"timestamp": "a YAML date", "binary": "a YAML !!binary value", "set": "a YAML !!set"}.get(
                kind, f"a YAML !!{kind} value"
            )
            raise _NotJsonData(f"has {what}, which JSON has no equivalent for", node.start_mark,
                               "a config is JSON data; quote a date to pass it as text, write sets as lists")

    _BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)
    for _tag in ("timestamp", "binary", "set", "omap", "pairs"):
        _BoundedLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _BoundedLoader._refuse)
else:  # pragma: no cover
    _HAS_LIBYAML = False


def load_config(env: Mapping[str, str], cli_path: str | None) -> dict:
    """The configuration mapping, from whichever single source was given."""
    return parse_config_text(find_config_text(env, cli_path))
