"""The tamper-evident audit log: one entry per release, denial, grant event and notice.

Entries are the leaves of an RFC 9162 Merkle tree (:mod:`broker.audit.merkle`);
signed checkpoints of that tree, whose Ed25519 key lives outside the database,
make any later change to the log detectable (:mod:`broker.audit.checkpoint`);
:mod:`broker.audit.log` verifies a stored log against them. Storage itself is in
:mod:`broker.store.audit`: this package imports neither aiohttp nor SQLModel.

An entry holds no personal data in clear (no VIN, no name, no position): only
opaque references, so erasing a customer never breaks verification.

https://www.rfc-editor.org/rfc/rfc9162 (Certificate Transparency 2.0, section 2.1)
"""

from broker.audit.checkpoint import Checkpoint, CheckpointSigner, CheckpointVerifier
from broker.audit.entry import AuditEntry
from broker.audit.log import VerifyResult

__all__ = ["AuditEntry", "Checkpoint", "CheckpointSigner", "CheckpointVerifier", "VerifyResult"]
