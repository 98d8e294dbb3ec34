"""Contracts as data: the JSON documents under ``contracts/`` and their validation.

JSON Schema 2020-12 first (``schemas``), then the rules that need the category
catalogue or span several fields (``contracts``, ``seed``). Errors come back as
:class:`DocumentError` values with a JSON path; the ``load_*`` functions raise
:class:`broker.errors.InvalidDocument` carrying all of them.
"""

from broker.documents.catalogue import Catalogue, Category, DataSubject, FieldSpec
from broker.documents.contracts import (
    contract_from_document,
    load_contract,
    validate_contract,
    validate_contract_file,
)
from broker.documents.library import DocumentLibrary, default_library, library_for
from broker.documents.schemas import DocumentError, SchemaSet, json_path
from broker.documents.seed import Seed, load_seed, validate_seed, validate_seed_file

__all__ = [
    "Catalogue",
    "Category",
    "DataSubject",
    "DocumentError",
    "DocumentLibrary",
    "FieldSpec",
    "SchemaSet",
    "Seed",
    "contract_from_document",
    "default_library",
    "json_path",
    "library_for",
    "load_contract",
    "load_seed",
    "validate_contract",
    "validate_contract_file",
    "validate_seed",
    "validate_seed_file",
]
