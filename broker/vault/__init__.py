"""Encryption at rest: per-owner data keys wrapped by the master key, and crypto-shredding.

:mod:`broker.vault.envelope` is the pure cryptography (AES-256-GCM, NIST SP 800-38D,
https://csrc.nist.gov/pubs/sp/800/38/d/final); :mod:`broker.vault.vault` keeps the
wrapped data keys in the store; :mod:`broker.vault.contacts` keeps customers' contact
data encrypted. Nothing is imported here, so importing the pure envelope module never
pulls in the database layer.
"""
