"""The AU grammar: every form seen in real sheets parses, nothing raises, canonical strings are stable."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from augmenter.au import AUItem, parse_au


@pytest.mark.parametrize(
    ("cell", "canonical", "numbers"),
    [
        ("12", "12", {12}),
        ("4+7", "4+7", {4, 7}),
        ("L12", "L12", {12}),
        ("R4+R10", "R4+R10", {4, 10}),
        ("1+R2+25", "1+R2+25", {1, 2, 25}),
        ("15A+17", "15A+17", {15, 17}),
        ("5B+24", "5B+24", {5, 24}),
        ("7D", "7D", {7}),
        ("ref(7B)+43C", "ref(7B)+43C", {7, 43}),
        ("(R6 or R12)+R15", "(R6/R12)+R15", {6, 12, 15}),
        ("4+7+43", "4+7+43", {4, 7, 43}),
        ("?", "?", set()),
        (12, "12", {12}),
        (12.0, "12", {12}),
        ("A2", "A2", {2}),
        ("L2/R2", "(L2/R2)", {2}),
        ("4/7", "(4/7)", {4, 7}),
        ("  l12 +  r4 ", "R4+L12", {4, 12}),
        ("", "", set()),
        (None, "", set()),
        (float("nan"), "", set()),
        ("AU12", "12", {12}),
        ("12?", "ref(12)", {12}),
        ("4, 7", "4+7", {4, 7}),
        ("(R6)or(R12)", "(R6/R12)", {6, 12}),
        ("7+4", "4+7", {4, 7}),
    ],
)
def test_every_real_sheet_form_parses(cell: object, canonical: str, numbers: set[int]) -> None:
    parsed = parse_au(cell)
    assert parsed.ok, parsed.error
    assert parsed.canonical == canonical
    assert parsed.numbers == frozenset(numbers)


def test_items_carry_side_intensity_and_certainty() -> None:
    parsed = parse_au("ref(7B)+L43C+(R6 or R12)+A2")
    assert AUItem(7, "", "B", certain=False) in parsed.items
    assert AUItem(43, "L", "C", certain=True) in parsed.items
    assert AUItem(2, "A", "", certain=True) in parsed.items
    assert parsed.alternatives == ((AUItem(6, "R", "", False), AUItem(12, "R", "", False)),)
    assert parsed.certain_numbers == frozenset({2, 43})
    assert parse_au("?").unknown and not parse_au("12").unknown


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("xyz+4", "unreadable AU term 'XYZ'"),
        ("4++7", "empty AU term"),
        ("(4+7", "unbalanced parentheses"),
        ("4)+7", "unbalanced parentheses"),
        ("1.5", "unreadable AU term '1.5'"),
        ("12F", "unreadable AU term '12F'"),
    ],
)
def test_unreadable_cells_are_flagged_with_a_reason(cell: str, message: str) -> None:
    parsed = parse_au(cell)
    assert not parsed.ok
    assert message in parsed.error
    assert repr(cell) in parsed.error  # the reason names the cell as written


def test_readable_part_of_a_bad_cell_is_kept() -> None:
    parsed = parse_au("4+xyz+L7")
    assert not parsed.ok
    assert parsed.canonical == "4+L7"


_AU_ALPHABET = st.sampled_from(list("0123456789LRABCDEFlr+/()?, ") + ["or", "ref(", "AU", "\t", "é", "\x00"])


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=40), st.lists(_AU_ALPHABET, max_size=25).map("".join)))
def test_parsing_never_raises_and_canonical_round_trips(text: str) -> None:
    parsed = parse_au(text)
    assert isinstance(parsed.canonical, str)
    again = parse_au(parsed.canonical)
    assert again.ok, (text, parsed.canonical, again.error)
    assert again.canonical == parsed.canonical
    assert again.numbers == parsed.numbers


@given(st.one_of(st.integers(), st.floats(), st.none(), st.booleans()))
def test_non_text_cells_never_raise(cell: object) -> None:
    parsed = parse_au(cell)
    assert isinstance(parsed.canonical, str) and isinstance(parsed.ok, bool)
