"""What an answer may say: the table's state plus the read's own evidence (DESIGN.md rule 3)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from api.shapes import layer_block, with_evidence
from tables.freshness import Freshness, IndexStatus, ReadEvidence, answered_status

statuses = st.sampled_from([s.value for s in IndexStatus])
evidences = st.builds(
    ReadEvidence,
    upstream_up_to_date=st.one_of(st.none(), st.booleans()),
    write_pending=st.booleans(),
    write_unconfirmed=st.booleans(),
)
states = st.builds(
    Freshness,
    namespace=st.just("products"),
    status=statuses,
    stable_as_of=st.one_of(st.none(), st.integers(0, 2**50)),
    last_write_ms=st.one_of(st.none(), st.integers(0, 2**50)),
)


@given(status=statuses, evidence=evidences)
def test_an_answer_is_stable_only_if_the_table_is_and_no_evidence_contradicts(
    status: str, evidence: ReadEvidence
) -> None:
    answered = answered_status(status, evidence)
    contradicted = (
        evidence.write_pending
        or evidence.write_unconfirmed
        or evidence.upstream_up_to_date is False
    )
    assert (answered == IndexStatus.STABLE.value) == (
        status == IndexStatus.STABLE.value and not contradicted
    )


@given(status=statuses)
def test_without_evidence_the_answer_is_the_tables(status: str) -> None:
    assert answered_status(status, ReadEvidence()) == status
    assert answered_status(status, ReadEvidence(upstream_up_to_date=True)) == status


@given(state=states, evidence=evidences)
def test_evidence_never_moves_or_hides_the_watermark(
    state: Freshness, evidence: ReadEvidence
) -> None:
    block = layer_block(state, "unknown", evidence)
    assert block.stable_as_of == state.stable_as_of
    assert block.last_write_ms == state.last_write_ms
    assert block.is_stable == (block.status == IndexStatus.STABLE.value)
    assert not block.is_stable or state.is_stable


@given(state=states, evidence=evidences)
def test_a_forwarded_answer_gets_the_same_verdict_as_a_local_one(
    state: Freshness, evidence: ReadEvidence
) -> None:
    """The owner answers with no evidence of ours; applying it here gives the local verdict."""
    owners = layer_block(state, "unknown")
    local = layer_block(state, "unknown", evidence)
    assert with_evidence(owners, evidence) == local


def test_an_upstream_answer_saying_updating_makes_this_answer_unstable() -> None:
    stable = Freshness(namespace="n", status=IndexStatus.STABLE.value, stable_as_of=5)
    block = layer_block(stable, "warm", ReadEvidence(upstream_up_to_date=False))
    assert (block.is_stable, block.status, block.stable_as_of) == (False, "updating", 5)
