"""Vehicle-data-sharing broker.

The flow, one package per step: ``ingest`` -> ``store`` -> grant and contract
policy (``domain``) -> protection -> transfer-country check -> audit -> channel.
"""

__version__ = "0.1.0"
