"""The gate: the one way data leaves the broker.

Every release is checked (recipient, contract, grant, record time, location
safeguard), minimised and protected, country-checked and audited, in that
order and in one transaction, or refused with its reasons. Channels accept only
what the gate produced (:func:`broker.gate.release.verify_release`).
"""
