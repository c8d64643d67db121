"""The cognition base: design knowledge the researcher retrieves by experimental symptoms."""

from services.memory.cognition.ingest import (
    COGNITION,
    CognitionEntry,
    IngestReport,
    SourceUpdate,
    as_document,
    cognition_events,
    load_starter,
    read_sources,
    source_digest,
    starter_update,
)

__all__ = ["COGNITION", "CognitionEntry", "IngestReport", "SourceUpdate", "as_document", "cognition_events",
           "load_starter", "read_sources", "source_digest", "starter_update"]
