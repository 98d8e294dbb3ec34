"""The RFC 9162 Merkle Tree Hash over leaf hashes, with inclusion and consistency proofs.

Every function here takes *leaf hashes* (``SHA-256(0x00 || leaf)``, see
:func:`leaf_hash`), never the leaves themselves. Interior nodes are
``SHA-256(0x01 || left || right)``; a tree of ``n > 1`` leaves splits at ``k``,
the largest power of two smaller than ``n``; the empty tree's hash is
``SHA-256("")``. The tree is the same as RFC 6962's.

https://www.rfc-editor.org/rfc/rfc9162#section-2.1
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32

#: MTH({}) = SHA-256() (RFC 9162 section 2.1.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    """``SHA-256(0x00 || leaf)``."""
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two smaller than ``n`` (for ``n >= 2``)."""
    if n < 2:
        raise ValueError("only a tree of two leaves or more splits")
    return 1 << ((n - 1).bit_length() - 1)


class TreeBuilder:
    """Builds the tree hash leaf by leaf in O(n) hashing and O(log n) memory.

    It keeps the roots of the perfect subtrees that make up the tree so far
    (one per bit set in its size, largest first); :meth:`root` folds them from
    the right, which is exactly RFC 9162's split at the largest power of two.
    """

    def __init__(self) -> None:
        self._size = 0
        self._stack: list[bytes] = []

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf_hash: bytes) -> None:
        _check_hash(leaf_hash)
        node = leaf_hash
        size = self._size
        # Each trailing 1 bit of the old size is a perfect subtree of the new one's sibling.
        while size & 1:
            node = node_hash(self._stack.pop(), node)
            size >>= 1
        self._stack.append(node)
        self._size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        for value in leaf_hashes:
            self.append(value)

    def root(self) -> bytes:
        """MTH of the leaves appended so far."""
        if not self._stack:
            return EMPTY_ROOT
        node = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            node = node_hash(left, node)
        return node


def root(leaf_hashes: Iterable[bytes]) -> bytes:
    """MTH(D[n]) of the given leaf hashes, in O(n)."""
    builder = TreeBuilder()
    builder.extend(leaf_hashes)
    return builder.root()


def _subtree(leaves: Sequence[bytes], start: int, end: int) -> bytes:
    return root(leaves[start:end])


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]): the audit path of leaf ``index`` (RFC 9162 section 2.1.3.1)."""
    n = len(leaf_hashes)
    if not 0 <= index < n:
        raise ValueError(f"leaf {index} is not in a tree of {n}")
    for value in leaf_hashes:
        _check_hash(value)
    path: list[bytes] = []
    start, end, m = 0, n, index
    # Walk down from the root; the sibling of each step goes on the path, deepest first.
    while end - start > 1:
        k = split_point(end - start)
        if m < k:
            path.append(_subtree(leaf_hashes, start + k, end))
            end = start + k
        else:
            path.append(_subtree(leaf_hashes, start, start + k))
            start, m = start + k, m - k
    path.reverse()
    return path


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root_hash: bytes
) -> bool:
    """Whether ``proof`` shows ``leaf_hash`` at ``index`` in the tree ``root_hash`` of
    ``tree_size`` leaves (RFC 9162 section 2.1.3.2)."""
    if not 0 <= index < tree_size or not _all_hashes([leaf_hash, root_hash, *proof]):
        return False
    fn, sn, r = index, tree_size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root_hash


def consistency_proof(first_size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]): proof that the first ``first_size`` leaves are a prefix of the tree
    (RFC 9162 section 2.1.4.1). Empty when ``first_size`` is 0 or ``n``."""
    n = len(leaf_hashes)
    if not 0 <= first_size <= n:
        raise ValueError(f"a tree of {n} has no prefix of {first_size}")
    for value in leaf_hashes:
        _check_hash(value)
    if first_size in {0, n}:
        return []
    proof: list[bytes] = []
    start, end, m, complete = 0, n, first_size, True
    # SUBPROOF(m, D[start:end], complete), unrolled; hashes are collected deepest last,
    # then reversed, so the result is in the RFC's order.
    while m != end - start:
        k = split_point(end - start)
        if m <= k:
            proof.append(_subtree(leaf_hashes, start + k, end))
            end = start + k
        else:
            proof.append(_subtree(leaf_hashes, start, start + k))
            start, m, complete = start + k, m - k, False
    if not complete:
        proof.append(_subtree(leaf_hashes, start, end))
    proof.reverse()
    return proof


def verify_consistency(
    first_size: int,
    second_size: int,
    first_root: bytes,
    second_root: bytes,
    proof: Sequence[bytes],
) -> bool:
    """Whether ``proof`` shows the tree ``first_root`` of ``first_size`` leaves is a prefix
    of the tree ``second_root`` of ``second_size`` (RFC 9162 section 2.1.4.2)."""
    if not 0 <= first_size <= second_size:
        return False
    if not _all_hashes([first_root, second_root, *proof]):
        return False
    if first_size == 0:
        # Every tree extends the empty one; there is nothing to prove.
        return not proof and first_root == EMPTY_ROOT
    if first_size == second_size:
        return not proof and first_root == second_root
    if not proof:
        return False
    path = list(proof)
    if first_size & (first_size - 1) == 0:  # an exact power of two
        path.insert(0, first_root)
    fn, sn = first_size - 1, second_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0


def _check_hash(value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ValueError(f"a tree hash is {HASH_SIZE} bytes")


def _all_hashes(values: Iterable[bytes]) -> bool:
    return all(isinstance(v, bytes) and len(v) == HASH_SIZE for v in values)
