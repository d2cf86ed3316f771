"""PLACEHOLDER until the runtime lands: only --check."""
import importlib, json, os, sys
mods = {"openmetadata": ["metadata"], "datahub": ["datahub.ingestion.run.pipeline"]}[os.environ.get("INGESTION_FRAMEWORK", "openmetadata")]
mods += [m for m in os.environ.get("INGESTION_CHECK_MODULES", "").split(",") if m]
for m in mods:
    importlib.import_module(m); print("ok", m)
print(json.dumps({"status": "success", "exit_code": 0}))
