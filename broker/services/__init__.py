"""Use cases: the steps a request or command takes, joining the domain rules to the store.

Each function here runs inside one database transaction (a ``Session`` handed in
by the caller), so a use case commits whole or not at all.
"""
