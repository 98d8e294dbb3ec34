"""Protection: what a recipient receives, minimised and protected at the contract's level.

The fourth step of the flow (ingest -> store -> grant and contract policy ->
**protection** -> transfer-country check -> audit -> channel). The release gate
hands every payload to :func:`protect` before anything leaves the broker, and
channels use :func:`vehicle_reference` and :func:`scrub_text` for whatever else
a recipient sees (links, headers, error messages). Pure: no I/O, no web
framework, no database.
"""

from broker.protection.keys import (
    Pseudonymiser,
    derive_pseudonym_key,
    generate_master_key,
    load_master_key,
    parse_master_key,
)
from broker.protection.protect import (
    ProtectedPayload,
    ProtectionContext,
    SourceRecord,
    Subject,
    protect,
    scrub_text,
    vehicle_reference,
)

__all__ = [
    "ProtectedPayload",
    "ProtectionContext",
    "Pseudonymiser",
    "SourceRecord",
    "Subject",
    "derive_pseudonym_key",
    "generate_master_key",
    "load_master_key",
    "parse_master_key",
    "protect",
    "scrub_text",
    "vehicle_reference",
]
