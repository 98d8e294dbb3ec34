"""Release policy: pure checks of recipient, contract and grant, each a decision with reasons.

No I/O and no framework: the gate loads the facts and asks these functions.
A denial is a value (a :class:`Reason`), never an exception.
"""
