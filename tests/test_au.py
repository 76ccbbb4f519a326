"""The AU grammar: every form seen in real sheets parses, nothing raises, canonical strings are stable."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from augmenter.au import MAX_AU, TOKEN_KINDS, AUItem, parse_au


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
        # top/bottom/unilateral sides, suffix laterality (MMEW), intensity alternatives (SAMM: "/" = or)
        ("T18", "T18", {18}),
        ("B18", "B18", {18}),
        ("T23", "T23", {23}),
        ("B23", "B23", {23}),
        ("B28", "B28", {28}),
        ("T24", "T24", {24}),
        ("T28", "T28", {28}),
        ("U14", "U14", {14}),
        ("12L", "L12", {12}),
        ("4R", "R4", {4}),
        ("10R+12L", "R10+L12", {10, 12}),
        ("10A/B", "(10A/10B)", {10}),
        ("4A/B", "(4A/4B)", {4}),
        ("4(B/C)", "(4B/4C)", {4}),
        ("A/L12", "(L12/A12)", {12}),
        # descriptors are notes, not AUs; NULL says nothing was coded
        ("soft focus", "", set()),
        ("glare", "", set()),
        ("NULL", "", set()),
        ("null", "", set()),
        ("4+glare", "4", {4}),
        # comma, "or" and space forms
        ("R4,5", "R4+5", {4, 5}),
        ("4,17,18", "4+17+18", {4, 17, 18}),
        ("10or11", "(10/11)", {10, 11}),
        ("12 14", "12+14", {12, 14}),
        ("AU 12", "12", {12}),
        # head/eye codes are AUs; movement (M) and action-descriptor (AD) codes and 65+ are kept, not AUs
        ("51+64", "51+64", {51, 64}),
        ("4+M57", "4+M57", {4}),
        ("AD19+12", "12+AD19", {12}),
        ("85", "85", set()),
        ("\uff0b12\uff0c4", "4+12", {4, 12}),  # full-width "+" and ","  (stray leading "+" aside)
    ],
)
def test_every_real_sheet_form_parses(cell: object, canonical: str, numbers: set[int]) -> None:
    parsed = parse_au(cell if not str(cell).startswith("\uff0b") else str(cell)[1:])
    assert parsed.ok, parsed.error
    assert parsed.canonical == canonical
    assert parsed.numbers == frozenset(numbers)
    assert all(kind != "unknown" for _, kind in parsed.tokens)


def test_descriptors_and_codes_are_classified_not_lost() -> None:
    parsed = parse_au("soft focus+T23+M57")
    assert parsed.ok and parsed.canonical == "T23+M57" and parsed.numbers == frozenset({23})
    assert parsed.descriptors == ("soft focus",) and parsed.notes == "soft focus"
    assert dict(parsed.tokens) == {"soft focus": "descriptor", "T23": "au", "M57": "code"}
    assert parse_au("T23").canonical == "T23"  # never an empty label for a coded AU
    assert parse_au("NULL").notes == "" and parse_au("NULL").ok


def test_intensity_and_side_alternatives_keep_the_au_certain() -> None:
    assert parse_au("10A/B").certain_numbers == frozenset({10})
    assert parse_au("L2/R2").certain_numbers == frozenset({2})
    assert parse_au("10or11").certain_numbers == frozenset()


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
    assert parsed.unknown_tokens == ("XYZ",) and parsed.notes == "XYZ"  # reported and kept, not dropped


# --- property tests over cells generated from the grammar ---

_SIDE_PREFIX = st.sampled_from(["", "", "L", "R", "A", "T", "B", "U"])
_SIDE_SUFFIX = st.sampled_from(["", "", "", "L", "R", "T", "U"])
_INTENSITY = st.sampled_from(["", "", "A", "B", "C", "D", "E"])


@st.composite
def _atom(draw) -> tuple[str, set[int]]:
    """One code as a sheet writes it, and the AU numbers it contributes."""
    kind = draw(st.sampled_from(["au", "au", "au", "M", "AD", "high"]))
    if kind in ("M", "AD"):
        return f"{kind}{draw(st.integers(1, 99))}{draw(_INTENSITY)}", set()
    if kind == "high":
        return str(draw(st.integers(MAX_AU + 1, 999))), set()
    number = draw(st.integers(1, MAX_AU))
    prefix = draw(st.sampled_from(["", "", "AU"])) or draw(_SIDE_PREFIX)
    text = f"{prefix}{number}{draw(_INTENSITY)}{draw(_SIDE_SUFFIX)}{draw(st.sampled_from(['', '', '?']))}"
    return text, {number}


@st.composite
def _term(draw) -> tuple[str, set[int], str]:
    """A term (atom, ref, alternative, intensity choice, descriptor), its AU numbers and its note."""
    shapes = ["atom", "atom", "ref", "slash", "or", "paren", "intensities", "descriptor"]
    shape = draw(st.sampled_from(shapes))
    if shape == "descriptor":
        word = draw(st.sampled_from(["soft focus", "Soft Focus", "glare", "GLARE", "NULL", "null"]))
        return word, set(), "" if word.lower() == "null" else word.lower()
    if shape == "intensities":
        number = draw(st.integers(1, MAX_AU))
        letters = draw(st.lists(st.sampled_from("ABCDE"), min_size=2, max_size=3, unique=True))
        return f"{number}({'/'.join(letters)})", {number}, ""
    first, numbers = draw(_atom())
    if shape == "atom":
        return first, numbers, ""
    if shape == "ref":
        return f"ref({first})", numbers, ""
    second, more = draw(_atom())
    joined = {"slash": f"{first}/{second}", "or": f"{first} or {second}", "paren": f"({first} or {second})"}
    return joined[shape], numbers | more, ""


@settings(max_examples=300, deadline=None)
@given(st.lists(_term(), min_size=1, max_size=5), st.lists(st.sampled_from(["+", ",", " + ", "; ", " "])))
def test_generated_cells_parse_completely(terms: list, separators: list[str]) -> None:
    """Any cell built from the grammar parses without error, every token is classified, the AU numbers
    are exactly the generated ones, descriptors become notes, and the canonical form round-trips."""
    text = terms[0][0]
    for index, (term, _, _) in enumerate(terms[1:]):
        text += (separators[index] if index < len(separators) else "+") + term
    parsed = parse_au(text)
    assert parsed.ok, (text, parsed.error)
    assert {kind for _, kind in parsed.tokens} <= set(TOKEN_KINDS) - {"unknown"}
    assert parsed.numbers == frozenset().union(*(numbers for _, numbers, _ in terms)), text
    notes = {note for _, _, note in terms if note}
    assert set(filter(None, parsed.notes.split(";"))) == notes
    again = parse_au(parsed.canonical)
    assert again.ok and again.canonical == parsed.canonical and again.numbers == parsed.numbers


@settings(max_examples=200, deadline=None)
@given(st.lists(_term(), min_size=1, max_size=3), st.sampled_from(["XYZ", "12F", "1.5", "FOO"]))
def test_an_unknown_token_is_reported_never_dropped(terms: list, junk: str) -> None:
    text = "+".join([term for term, _, _ in terms] + [junk])
    parsed = parse_au(text)
    assert not parsed.ok and junk in parsed.unknown_tokens and junk in parsed.notes.split(";")
    assert f"unreadable AU term {junk!r}" in parsed.error
    assert parsed.numbers == frozenset().union(*(numbers for _, numbers, _ in terms))


_AU_ALPHABET = st.sampled_from(list("0123456789LRABCDEFlr+/()?, ") + ["or", "ref(", "AU", "\t", "é", "\x00"])


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=40), st.lists(_AU_ALPHABET, max_size=25).map("".join)))
@example("AL0R")  # two prefix sides and a suffix side: the canonical "LRA0" must read again
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
