"""Memory: projects the event log into the store and the vector indexes, serves the query API."""
