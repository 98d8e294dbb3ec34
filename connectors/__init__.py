"""Connectors between the broker and the outside world's transports.

MQTT streaming ingest and the Dataspace Protocol endpoint live here; each
connector hands what it receives to the broker's own ingest and gate paths.
"""
