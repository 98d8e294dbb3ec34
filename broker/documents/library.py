"""The document library: a contracts folder's schemas and catalogues, loaded once.

The composition root builds one :class:`DocumentLibrary` from
``Settings.contracts_dir`` and hands it to whatever validates contracts, seeds
or records. :func:`default_library` serves tools and tests that have no root.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from broker.documents import contracts, seed
from broker.documents.catalogue import Catalogue
from broker.documents.schemas import DocumentError, SchemaSet
from broker.documents.vehicle_models import load_vehicle_models
from broker.domain.contracts import Contract
from broker.settings import Settings


class DocumentLibrary:
    """Owns the schema registry, the compiled validators, the category catalogue and
    the vehicle-model catalogue (which categories each model can provide).

    The methods are the functions of :mod:`broker.documents.contracts` and
    :mod:`broker.documents.seed`, bound to this library.
    """

    def __init__(self, contracts_dir: Path) -> None:
        self.contracts_dir = contracts_dir
        self.schemas = SchemaSet(contracts_dir)
        self.catalogue = Catalogue.load(self.schemas)
        self.vehicle_models = load_vehicle_models(self.schemas, self.catalogue)

    @property
    def samples_dir(self) -> Path:
        """The folder of sample contracts shipped with the catalogue."""
        return self.contracts_dir / "samples"

    def validate_contract(self, doc: Any) -> list[DocumentError]:
        return contracts.validate_contract(doc, self)

    def contract_from_document(self, doc: Any) -> Contract:
        return contracts.contract_from_document(doc, self)

    def validate_contract_file(self, path: Path) -> list[DocumentError]:
        return contracts.validate_contract_file(path, self)

    def load_contract(self, path: Path) -> Contract:
        return contracts.load_contract(path, self)

    def validate_seed(self, doc: Any, base_dir: Path) -> list[DocumentError]:
        return seed.validate_seed(doc, base_dir, self)

    def validate_seed_file(self, path: Path) -> list[DocumentError]:
        return seed.validate_seed_file(path, self)

    def load_seed(self, path: Path) -> seed.Seed:
        return seed.load_seed(path, self)

    def validate_record_data(self, category_id: str, data: Any) -> list[DocumentError]:
        return self.catalogue.validate_record_data(category_id, data)


@lru_cache(maxsize=4)
def library_for(contracts_dir: Path) -> DocumentLibrary:
    """One library per contracts folder, built on first use."""
    return DocumentLibrary(contracts_dir.resolve())


def default_library() -> DocumentLibrary:
    """The library of the packaged ``contracts/`` folder (no environment is read)."""
    return library_for(Settings().contracts_dir)
