"""One small adapter per ingestion framework, behind a common interface.

main.py drives every framework the same way:
``prepare -> validate -> create -> run -> raise_on_failure -> print_status``
and ``stop`` always, also after a failure or a stop signal.

Framework modules are imported lazily, inside the methods, so this file loads
(and its unit tests run) in an environment without any framework installed.
Which framework an image carries is baked into the image as the environment
variable INGESTION_FRAMEWORK; `ADAPTERS` maps that name to its adapter.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runtime_config import ConfigError

logger = logging.getLogger("ingestion.runtime")


class PluginMissing(Exception):
    """The framework or a connector plugin is not importable (exit code 3)."""


class WorkflowFailed(Exception):
    """The workflow ran and failed, or could not start (exit code 1)."""


@dataclass
class RunCounts:
    records: int = 0
    warnings: int = 0
    failures: int = 0


def import_required(module_name: str) -> Any:
    """Import a module the image must contain; name what is missing if it is not."""
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or module_name
        detail = f"module {missing!r} is missing" if missing != module_name else "not installed"
        raise PluginMissing(f"cannot import {module_name}: {detail} ({exc})") from exc


def import_attribute(module_name: str, attribute: str) -> Any:
    module = import_required(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise PluginMissing(f"{module_name} has no {attribute} in this framework version") from None


def _module_exists(module_name: str) -> bool:
    try:
        return importlib.util.find_spec(module_name) is not None
    except ImportError:  # a parent package is missing
        return False


def format_validation_errors(error: Any, prefix: Sequence[Any] = (), limit: int = 3) -> str:
    """Pydantic errors as `dotted.field.path: message`, the first few of them."""
    errors = error.errors()
    # Union types make pydantic report one error per alternative; the shortest
    # locations are the ones a person can act on.
    errors = sorted(errors, key=lambda item: len(item.get("loc", ())))
    shown = [
        f"{_dotted_path(tuple(prefix) + tuple(item.get('loc', ())))}: {item.get('msg')}" for item in errors[:limit]
    ]
    more = len(errors) - len(shown)
    return "; ".join(shown) + (f" (and {more} more)" if more > 0 else "")


def _dotted_path(location: Sequence[Any]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(config)"


def validation_error_type() -> type:
    return import_attribute("pydantic", "ValidationError")


class FrameworkAdapter:
    """The interface main.py relies on. Subclasses wrap one framework."""

    name = ""
    server_label = ""
    core_modules: Sequence[str] = ()

    def prepare(self, config: dict, env: Mapping[str, str]) -> dict:
        """Apply orchestrator inputs (pipeline type, run id) to the config."""
        return config

    def describe(self) -> dict[str, Any]:
        """Extra fields for the JSON summary."""
        return {}

    def log_level(self, config: dict) -> str | None:
        return None

    def check_connector(self, connector: str) -> str:
        """Prove the connector plugin loads; return what was checked."""
        return f"connector {connector}: no plugin registry to consult"

    def validate(self, config: dict) -> None:
        """Validate offline against the framework's own config model."""
        raise NotImplementedError

    def server_url(self, config: dict) -> str | None:
        """The server the workflow will contact first, probed before creating it."""
        return None

    def create(self, config: dict) -> None:
        raise NotImplementedError

    def run(self) -> None:
        raise NotImplementedError

    def raise_on_failure(self) -> None:
        raise NotImplementedError

    def print_status(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def counts(self) -> RunCounts:
        return RunCounts()


# ------------------------------------------------------------------ OpenMetadata

# pipelineType -> (module, class). Lineage and dbt run through the metadata
# workflow with their own source config, as in OpenMetadata's own operator image.
OPENMETADATA_WORKFLOWS: dict[str, tuple] = {
    "metadata": ("metadata.workflow.metadata", "MetadataWorkflow"),
    "lineage": ("metadata.workflow.metadata", "MetadataWorkflow"),
    "dbt": ("metadata.workflow.metadata", "MetadataWorkflow"),
    "elasticSearchReindex": ("metadata.workflow.metadata", "MetadataWorkflow"),
    "usage": ("metadata.workflow.usage", "UsageWorkflow"),
    "profiler": ("metadata.workflow.profiler", "ProfilerWorkflow"),
    "autoClassification": ("metadata.workflow.classification", "AutoClassificationWorkflow"),
    "TestSuite": ("metadata.workflow.data_quality", "TestSuiteWorkflow"),
    # Data insights became an OpenMetadata application; 1.12 ships no such
    # module, so asking for it ends with exit 3 and a clear message.
    "dataInsight": ("metadata.workflow.data_insight", "DataInsightWorkflow"),
    "application": ("metadata.workflow.application", "ApplicationWorkflow"),
}
DEFAULT_PIPELINE_TYPE = "metadata"

_WORKFLOW_CONFIG_MODEL = ("metadata.generated.schema.metadataIngestion.workflow", "OpenMetadataWorkflowConfig")
_APPLICATION_CONFIG_MODEL = ("metadata.generated.schema.metadataIngestion.application", "OpenMetadataApplicationConfig")
# What an OpenMetadata service spec names, in the order the workflow types use them.
_SOURCE_CLASS_FIELDS = ("metadata_source_class", "lineage_source_class", "usage_source_class")
# Where OpenMetadata keeps source modules: metadata.ingestion.source.<service>.<connector>
_OPENMETADATA_SERVICES = (
    "database",
    "dashboard",
    "pipeline",
    "messaging",
    "mlmodel",
    "storage",
    "search",
    "api",
    "drive",
    "metadata",
    "security",
)


def resolve_pipeline_type(requested: str | None) -> str:
    """The canonical pipelineType name, case-insensitively; default metadata."""
    if not requested:
        return DEFAULT_PIPELINE_TYPE
    for known in OPENMETADATA_WORKFLOWS:
        if known.lower() == requested.strip().lower():
            return known
    raise ConfigError(f"pipelineType: unknown value {requested!r}; expected one of {', '.join(OPENMETADATA_WORKFLOWS)}")


def workflow_class_path(pipeline_type: str) -> str:
    module_name, class_name = OPENMETADATA_WORKFLOWS[resolve_pipeline_type(pipeline_type)]
    return f"{module_name}.{class_name}"


def take_orchestrator_field(config: dict, env: Mapping[str, str], field: str) -> str | None:
    """Remove `field` from the config top level and return it, env taking precedence.

    OpenMetadata's own operator image reads pipelineType and pipelineRunId from
    the environment; accepting them in the config too lets one JSON carry all.
    """
    from_config = config.pop(field, None)
    from_env = env.get(field) or None
    if from_env and from_config and str(from_config) != from_env:
        logger.warning("%s from the environment (%s) overrides the config's (%s)", field, from_env, from_config)
    value = from_env or from_config
    return str(value) if value is not None else None


class OpenMetadataAdapter(FrameworkAdapter):
    name = "openmetadata"
    server_label = "OpenMetadata"
    core_modules = ("metadata", "metadata.workflow.metadata")

    def __init__(self) -> None:
        self.pipeline_type = DEFAULT_PIPELINE_TYPE
        self._workflow: Any = None
        self._raise_on_error = True

    def prepare(self, config: dict, env: Mapping[str, str]) -> dict:
        self.pipeline_type = resolve_pipeline_type(take_orchestrator_field(config, env, "pipelineType"))
        run_id = take_orchestrator_field(config, env, "pipelineRunId")
        if run_id:
            config["pipelineRunId"] = run_id
        # OpenMetadata's own CLI honours raiseOnError: false as "never fail the run".
        self._raise_on_error = _workflow_config(config).get("raiseOnError", True) is not False
        return config

    def describe(self) -> dict[str, Any]:
        return {"pipeline_type": self.pipeline_type}

    def log_level(self, config: dict) -> str | None:
        return _workflow_config(config).get("loggerLevel")

    def check_connector(self, connector: str) -> str:
        package = self._connector_package(connector)
        if package is None:
            return f"connector {connector}: no OpenMetadata source module of that name; see INGESTION_CHECK_MODULES"
        if _module_exists(f"{package}.service_spec"):
            # What the workflow itself loads: the service spec, then the source class it names.
            spec = import_attribute(f"{package}.service_spec", "ServiceSpec")
            # Every source class the spec names (metadata, lineage, usage); a source that only
            # reads query logs says "not.implemented" for metadata.
            class_paths = [str(path) for path in (getattr(spec, field, None) for field in _SOURCE_CLASS_FIELDS)
                           if path and str(path).startswith("metadata.")]
            if not class_paths:
                raise PluginMissing(f"{package}.service_spec.ServiceSpec names no source class")
            for class_path in class_paths:
                module_name, _, class_name = class_path.rpartition(".")
                import_attribute(module_name, class_name)
            return f"connector {connector}: source classes {', '.join(p.rpartition('.')[2] for p in class_paths)}"
        # Older layouts: the source lives in <package>.metadata, or the package is the module.
        module_name = f"{package}.metadata" if _module_exists(f"{package}.metadata") else package
        import_required(module_name)
        return f"connector {connector}: imported {module_name}"

    @staticmethod
    def _connector_package(connector: str) -> str | None:
        package_name = connector.replace("-", "_").lower()
        for service in _OPENMETADATA_SERVICES:
            candidate = f"metadata.ingestion.source.{service}.{package_name}"
            if _module_exists(candidate):
                return candidate
        return None

    def _workflow_class(self) -> Any:
        module_name, class_name = OPENMETADATA_WORKFLOWS[self.pipeline_type]
        try:
            return import_attribute(module_name, class_name)
        except PluginMissing as exc:
            raise PluginMissing(
                f"pipelineType {self.pipeline_type} needs {module_name}.{class_name}, which this image's "
                f"OpenMetadata ingestion lacks: {exc}"
            ) from exc

    def validate(self, config: dict) -> None:
        model_path = _APPLICATION_CONFIG_MODEL if self.pipeline_type == "application" else _WORKFLOW_CONFIG_MODEL
        model = import_attribute(*model_path)
        self._workflow_class()  # a missing workflow module is an image problem: exit 3
        try:
            model.model_validate(config)
        except validation_error_type() as whole_error:
            raise ConfigError(self._scoped_problem(config) or format_validation_errors(whole_error)) from None

    def _scoped_problem(self, config: dict) -> str | None:
        """Re-validate the parts with their own models, for a precise field path.

        The workflow model holds the connection as a union of every connector's
        model, so its own error lists hundreds of alternatives. Like
        OpenMetadata's parse_workflow_config_gracefully, look the right model up
        by its `type` instead; unlike it, keep the full path to the field.
        """
        if self.pipeline_type == "application":
            return None
        ValidationError = validation_error_type()
        parser = import_required("metadata.ingestion.api.parser")
        sections = (
            (("source", "serviceConnection", "config"), self._connection_model),
            (("source", "sourceConfig", "config"), self._source_config_model),
            (("workflowConfig",), self._workflow_config_model),
        )
        for path, model_for in sections:
            document = _dig(config, *path)
            if not isinstance(document, dict):
                continue
            try:
                model = model_for(parser, document)
                if model is not None:
                    model.model_validate(document)
            except ConfigError as exc:
                return f"{_dotted_path(path)}.{exc}"
            except ValidationError as exc:
                return format_validation_errors(exc, prefix=path)
        return None

    @staticmethod
    def _connection_model(parser: Any, connection: dict) -> Any:
        connection_type = connection.get("type")
        if not connection_type:
            raise ConfigError("type: Field required")
        try:
            service_type = parser.get_service_type(connection_type)
        except ValueError:
            raise ConfigError(f"type: {connection_type!r} is not an OpenMetadata connection type") from None
        return parser.get_connection_class(connection_type, service_type)

    @staticmethod
    def _source_config_model(parser: Any, source_config: dict) -> Any:
        config_type = source_config.get("type")
        if not config_type:
            return None  # optional: the workflow model picks its default
        try:
            return parser.get_source_config_class(config_type)
        except ValueError:
            raise ConfigError(f"type: {config_type!r} is not an OpenMetadata sourceConfig type") from None

    @staticmethod
    def _workflow_config_model(_parser: Any, _workflow_config: dict) -> Any:
        return import_attribute(_WORKFLOW_CONFIG_MODEL[0], "WorkflowConfig")

    def server_url(self, config: dict) -> str | None:
        return _dig(config, "workflowConfig", "openMetadataServerConfig", "hostPort")

    def create(self, config: dict) -> None:
        workflow_class = self._workflow_class()
        try:
            self._workflow = workflow_class.create(config)
        except Exception as exc:
            raise _classify_openmetadata_error(exc) from exc

    def run(self) -> None:
        try:
            # execute() also stops the workflow and prints its status (1.12: in a finally).
            self._workflow.execute()
        except Exception as exc:
            raise WorkflowFailed(f"workflow raised {type(exc).__name__}: {exc}") from exc

    def raise_on_failure(self) -> None:
        if not self._raise_on_error:
            return
        try:
            self._workflow.raise_from_status()
        except Exception as exc:
            raise WorkflowFailed(str(exc)) from exc

    def print_status(self) -> None:
        # BaseWorkflow.execute() printed the status already; printing it twice
        # would only repeat the same table.
        pass

    def stop(self) -> None:
        if self._workflow is not None:
            self._workflow.stop()

    def counts(self) -> RunCounts:
        if self._workflow is None:
            return RunCounts()
        statuses = [step.get_status() for step in self._workflow.workflow_steps()]
        if not statuses:
            return RunCounts()
        last = statuses[-1]  # the sink: what was actually written
        records = max(len(last.records) + len(last.updated_records), getattr(last, "record_count", 0))
        return RunCounts(
            records=records,
            warnings=sum(len(status.warnings) for status in statuses),
            failures=sum(len(status.failures) for status in statuses),
        )


def _classify_openmetadata_error(exc: Exception) -> Exception:
    """Map a workflow-creation error to config (2), plugin (3) or run (1) failure."""
    kind = type(exc).__name__
    if kind in ("ParsingConfigurationError", "InvalidWorkflowException", "ValidationError"):
        return ConfigError(str(exc))
    if kind == "DynamicImportException" or isinstance(exc, ImportError):
        cause = getattr(exc, "cause", None) or exc.__cause__ or exc
        return PluginMissing(f"connector plugin cannot be imported: {cause}")
    return WorkflowFailed(f"workflow could not start: {kind}: {exc}")


def _workflow_config(config: dict) -> dict:
    section = config.get("workflowConfig")
    return section if isinstance(section, dict) else {}


def _dig(document: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


# ----------------------------------------------------------------------- DataHub


class DataHubAdapter(FrameworkAdapter):
    name = "datahub"
    server_label = "DataHub"
    core_modules = ("datahub", "datahub.ingestion.run.pipeline")

    def __init__(self) -> None:
        self._pipeline: Any = None

    def prepare(self, config: dict, env: Mapping[str, str]) -> dict:
        # pipelineType is OpenMetadata's; a DataHub recipe picks what it ingests
        # in source.config. "metadata" is tolerated so one DAG can drive both.
        pipeline_type = take_orchestrator_field(config, env, "pipelineType")
        if pipeline_type and pipeline_type.lower() != DEFAULT_PIPELINE_TYPE:
            raise ConfigError(
                f"pipelineType: {pipeline_type!r} is an OpenMetadata workflow type; DataHub "
                "recipes select what to ingest in source.config"
            )
        # DataHub's own name for the run id is run_id.
        run_id = take_orchestrator_field(config, env, "pipelineRunId")
        if run_id and not config.get("run_id"):
            config["run_id"] = run_id
        return config

    def check_connector(self, connector: str) -> str:
        source_class = self._registered_class("source", connector)
        return f"connector {connector}: source plugin {source_class.__module__}.{source_class.__name__}"

    def _registered_class(self, kind: str, plugin_type: str) -> Any:
        """A plugin class from DataHub's registry: unknown is a config error, unloadable a plugin one."""
        registry = import_attribute(f"datahub.ingestion.{kind}.{kind}_registry", f"{kind}_registry")
        try:
            return registry.get(plugin_type)
        except KeyError:
            raise ConfigError(f"{kind}.type: unknown DataHub {kind} {plugin_type!r}") from None
        except Exception as exc:
            cause = exc.__cause__ or exc
            raise PluginMissing(f"DataHub {kind} plugin {plugin_type!r} cannot be loaded: {exc} ({cause})") from exc

    def validate(self, config: dict) -> None:
        pipeline_config_class = import_attribute("datahub.ingestion.run.pipeline_config", "PipelineConfig")
        ValidationError = validation_error_type()
        try:
            recipe = _model_validate(pipeline_config_class, config)
        except ValidationError as exc:
            raise ConfigError(format_validation_errors(exc)) from None
        self._validate_plugin_config("source", recipe.source.type, _dig(config, "source", "config") or {})
        if recipe.sink is not None:
            self._validate_plugin_config("sink", recipe.sink.type, _dig(config, "sink", "config") or {})

    def _validate_plugin_config(self, kind: str, plugin_type: str, plugin_config: dict) -> None:
        plugin_class = self._registered_class(kind, plugin_type)
        get_config_class: Callable[[], Any] | None = getattr(plugin_class, "get_config_class", None)
        if get_config_class is None:
            return  # a plugin without a declared config model validates itself on create
        try:
            _model_validate(get_config_class(), plugin_config)
        except validation_error_type() as exc:
            raise ConfigError(format_validation_errors(exc, prefix=(kind, "config"))) from None

    def server_url(self, config: dict) -> str | None:
        if _dig(config, "sink", "type") == "datahub-rest":
            return _dig(config, "sink", "config", "server")
        return _dig(config, "datahub_api", "server")

    def create(self, config: dict) -> None:
        pipeline_class = import_attribute("datahub.ingestion.run.pipeline", "Pipeline")
        try:
            self._pipeline = pipeline_class.create(config)
        except Exception as exc:
            raise _classify_datahub_error(exc) from exc

    def run(self) -> None:
        try:
            self._pipeline.run()
        except Exception as exc:
            raise WorkflowFailed(f"pipeline raised {type(exc).__name__}: {exc}") from exc

    def raise_on_failure(self) -> None:
        try:
            self._pipeline.raise_from_status()
        except Exception as exc:
            raise WorkflowFailed(_datahub_failure_reason(exc)) from exc

    def print_status(self) -> None:
        self._pipeline.pretty_print_summary()

    def stop(self) -> None:
        # Pipeline has no stop(): run() closes source and sink on its way out.
        # A pipeline created but never run still holds them open in these
        # exit stacks; closing an already closed ExitStack does nothing.
        for stack_name in ("inner_exit_stack", "exit_stack"):
            stack = getattr(self._pipeline, stack_name, None)
            if stack is not None:
                stack.close()

    def counts(self) -> RunCounts:
        if self._pipeline is None or getattr(self._pipeline, "sink", None) is None:
            return RunCounts()
        sink_report = self._pipeline.sink.get_report()
        source = getattr(self._pipeline, "source", None)
        source_report = source.get_report() if source is not None else None
        reports = [report for report in (source_report, sink_report) if report is not None]
        return RunCounts(
            records=sink_report.total_records_written,
            # len() of DataHub's LossyList is the total, not just the kept sample.
            warnings=sum(len(report.warnings) for report in reports),
            failures=sum(len(report.failures) for report in reports),
        )


def _model_validate(model: Any, document: dict) -> Any:
    # DataHub 1.x models are pydantic v2; parse_obj is the v1 spelling.
    validate = getattr(model, "model_validate", None) or model.parse_obj
    return validate(document)


def _classify_datahub_error(exc: Exception) -> Exception:
    root = exc.__cause__ or exc
    if type(root).__name__ == "ConfigurationError" and isinstance(root.__cause__, ImportError):
        return PluginMissing(str(root))
    if type(root).__name__ == "ValidationError":
        return ConfigError(format_validation_errors(root))
    return WorkflowFailed(f"pipeline could not start: {exc}")


def _datahub_failure_reason(exc: Exception) -> str:
    """ "Source reported errors: <title> - <message> (<context>)" for the first failure."""
    message = exc.args[0] if exc.args else str(exc)
    entries = exc.args[1] if len(exc.args) > 1 else None
    try:
        first = next(iter(entries)) if entries else None
    except TypeError:
        first = None
    if first is None:
        return str(message)
    title, text = getattr(first, "title", None), getattr(first, "message", None)
    if not (title or text):
        return f"{message}: {first}"
    context = getattr(first, "context", None) or []
    detail = f" ({context[0]})" if context else ""
    return f"{message}: {' - '.join(part for part in (title, text) if part)}{detail}"


ADAPTERS: dict[str, Callable[[], FrameworkAdapter]] = {
    OpenMetadataAdapter.name: OpenMetadataAdapter,
    DataHubAdapter.name: DataHubAdapter,
}
DEFAULT_FRAMEWORK = OpenMetadataAdapter.name


def create_adapter(framework: str | None) -> FrameworkAdapter:
    name = (framework or DEFAULT_FRAMEWORK).strip().lower()
    if name not in ADAPTERS:
        raise PluginMissing(
            f"INGESTION_FRAMEWORK={name!r} is not supported by this runtime; expected one of {', '.join(ADAPTERS)}"
        )
    return ADAPTERS[name]()
