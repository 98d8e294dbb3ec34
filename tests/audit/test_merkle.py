"""RFC 9162 Merkle trees: hand-computed trees, the RFC 6962 reference vectors, and properties."""

from __future__ import annotations

import hashlib
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.audit import merkle
from broker.audit.merkle import (
    EMPTY_ROOT,
    TreeBuilder,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def reference_mth(leaves: list[bytes]) -> bytes:
    """MTH straight from RFC 9162 section 2.1.1, recursive, over leaf hashes."""
    n = len(leaves)
    if n == 0:
        return sha(b"")
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return sha(b"\x01" + reference_mth(leaves[:k]) + reference_mth(leaves[k:]))


# The reference leaves and tree heads of the RFC 6962 reference implementation's tests
# (certificate-transparency, merkle_tree_test), which every CT log agrees on.
CT_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_HASHES = [leaf_hash(leaf) for leaf in CT_LEAVES]

INCLUSION_VECTORS = [  # (index, tree size, path)
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]

CONSISTENCY_VECTORS = [  # (first size, second size, proof)
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]


# --- hand-computed small trees -------------------------------------------------------------


def test_the_empty_tree_is_the_hash_of_nothing() -> None:
    assert root([]) == EMPTY_ROOT == sha(b"")


def test_leaves_and_nodes_are_domain_separated() -> None:
    assert leaf_hash(b"a") == sha(b"\x00a")
    assert node_hash(b"L" * 32, b"R" * 32) == sha(b"\x01" + b"L" * 32 + b"R" * 32)
    # A leaf that looks like two concatenated hashes is not the node over them.
    assert leaf_hash(b"L" * 32 + b"R" * 32) != node_hash(b"L" * 32, b"R" * 32)


def test_small_trees_by_hand() -> None:
    a, b, c, d, e = (sha(b"\x00" + x) for x in (b"a", b"b", b"c", b"d", b"e"))
    ab = sha(b"\x01" + a + b)
    cd = sha(b"\x01" + c + d)
    assert root([a]) == a
    assert root([a, b]) == ab
    # Three leaves split at 2: ((a b) c)
    assert root([a, b, c]) == sha(b"\x01" + ab + c)
    assert root([a, b, c, d]) == sha(b"\x01" + ab + cd)
    # Five split at 4: ((ab cd) e)
    assert root([a, b, c, d, e]) == sha(b"\x01" + sha(b"\x01" + ab + cd) + e)
    # Inclusion of c in the tree of three: its sibling is (a b).
    assert inclusion_proof(2, [a, b, c]) == [ab]
    assert verify_inclusion(c, 2, 3, [ab], root([a, b, c]))
    # The tree of three extends the tree of two: the proof is just c.
    assert consistency_proof(2, [a, b, c]) == [c]
    assert verify_consistency(2, 3, ab, root([a, b, c]), [c])


def test_the_split_is_the_largest_power_of_two_below_n() -> None:
    assert [merkle.split_point(n) for n in range(2, 10)] == [1, 2, 2, 4, 4, 4, 4, 8]
    with pytest.raises(ValueError, match="two leaves or more"):
        merkle.split_point(1)


# --- reference vectors ---------------------------------------------------------------------


@pytest.mark.parametrize("size", range(9))
def test_reference_tree_heads(size: int) -> None:
    assert root(CT_HASHES[:size]).hex() == CT_ROOTS[size]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION_VECTORS)
def test_reference_inclusion_proofs(index: int, size: int, path: list[str]) -> None:
    proof = inclusion_proof(index, CT_HASHES[:size])
    assert [p.hex() for p in proof] == path
    assert verify_inclusion(CT_HASHES[index], index, size, proof, bytes.fromhex(CT_ROOTS[size]))


@pytest.mark.parametrize(("first", "second", "path"), CONSISTENCY_VECTORS)
def test_reference_consistency_proofs(first: int, second: int, path: list[str]) -> None:
    proof = consistency_proof(first, CT_HASHES[:second])
    assert [p.hex() for p in proof] == path
    assert verify_consistency(
        first, second, bytes.fromhex(CT_ROOTS[first]), bytes.fromhex(CT_ROOTS[second]), proof
    )


# --- properties ----------------------------------------------------------------------------

# Distinct leaves: with repeated ones a proof may rightly verify at a twin's position too.
leaf_lists = st.lists(st.binary(max_size=12), min_size=0, max_size=70, unique=True).map(
    lambda leaves: [leaf_hash(leaf) for leaf in leaves]
)


@given(leaf_lists)
def test_the_streaming_root_is_the_rfc_root(leaves: list[bytes]) -> None:
    assert root(leaves) == reference_mth(leaves)
    builder = TreeBuilder()
    for i, value in enumerate(leaves):
        builder.append(value)
        assert builder.size == i + 1
        assert builder.root() == reference_mth(leaves[: i + 1])


@given(leaf_lists.filter(bool), st.data())
def test_every_inclusion_proof_verifies_and_a_tampered_leaf_fails(
    leaves: list[bytes], data: st.DataObject
) -> None:
    n = len(leaves)
    index = data.draw(st.integers(0, n - 1))
    head = root(leaves)
    proof = inclusion_proof(index, leaves)
    assert verify_inclusion(leaves[index], index, n, proof, head)
    assert not verify_inclusion(leaf_hash(b"forged"), index, n, proof, head)
    if n > 1:
        assert not verify_inclusion(leaves[index], (index + 1) % n, n, proof, head)
    assert not verify_inclusion(leaves[index], n, n, proof, head)
    # (The hash alone does not bind the tree size: a tree of 3 has the same head as a
    # "tree of 4" whose last subtree is the third leaf. The signed checkpoint binds it.)


@settings(max_examples=200)
@given(leaf_lists, st.data())
def test_consistency_between_any_two_sizes(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    m = data.draw(st.integers(0, n))
    first, second = root(leaves[:m]), root(leaves)
    proof = consistency_proof(m, leaves)
    assert verify_consistency(m, n, first, second, proof)
    # Tampering with one leaf of the first tree breaks consistency with the signed first root.
    if m > 0:
        j = data.draw(st.integers(0, m - 1))
        tampered = list(leaves)
        tampered[j] = leaf_hash(b"tampered" + tampered[j])
        assert not verify_consistency(m, n, first, root(tampered), consistency_proof(m, tampered))
        assert not verify_consistency(m, n, first, root(tampered), proof)
    # A tampered proof element fails.
    if 0 < m < n:
        j = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[j] = sha(bad[j])
        assert not verify_consistency(m, n, first, second, bad)


def test_a_tree_of_ten_thousand_leaves_is_quick() -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(10_000)]
    started = time.perf_counter()
    head = root(leaves)
    elapsed = time.perf_counter() - started
    assert head == reference_mth(leaves)
    assert elapsed < 1.0, f"root of 10,000 leaves took {elapsed:.2f}s"
    proof = consistency_proof(6_000, leaves)
    assert verify_consistency(6_000, 10_000, root(leaves[:6_000]), head, proof)
    assert verify_inclusion(leaves[4_321], 4_321, 10_000, inclusion_proof(4_321, leaves), head)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        root([b"short"])
    with pytest.raises(ValueError, match="not in a tree of 3"):
        inclusion_proof(3, CT_HASHES[:3])
    with pytest.raises(ValueError, match="no prefix of 4"):
        consistency_proof(4, CT_HASHES[:3])
    assert not verify_inclusion(b"short", 0, 1, [], CT_HASHES[0])
    assert not verify_consistency(3, 2, EMPTY_ROOT, EMPTY_ROOT, [])
    # An empty proof proves nothing between different sizes.
    assert not verify_consistency(1, 2, CT_HASHES[0], root(CT_HASHES[:2]), [])
