"""The cognition base: design knowledge the researcher retrieves by experimental symptoms."""

from services.memory.cognition.ingest import (
    COGNITION,
    CognitionEntry,
    IngestReport,
    ingest,
    ingest_starter,
    load_starter,
)

__all__ = ["COGNITION", "CognitionEntry", "IngestReport", "ingest", "ingest_starter", "load_starter"]
