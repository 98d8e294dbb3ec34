"""Vehicle data in: validate each record, store the good ones, quarantine the rest.

HTTP (JSON and NDJSON) and MQTT feed the same :class:`~broker.ingest.service.IngestService`,
so every path validates, deduplicates, applies the location safeguard and
encrypts sensitive categories in exactly one way.
"""
