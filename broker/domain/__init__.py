"""The broker's domain: parties, contracts and grants, and the rules between them.

Pure Python: this package imports neither aiohttp nor SQLModel (checked by
import-linter in CI). The store maps its tables to these values.
"""
