"""Build, verify, ship and run one container image per metadata-ingestion connector."""

__version__ = "0.1.0"
