"""The FACS Action Unit grammar of ME annotation sheets, parsed into a structured, canonical form.

Sheets write AU codes many ways (`12`, `L12`, `15A+17`, `ref(7B)+43C`, `(R6 or R12)+R15`, SAMM's
`A2`, `L2/R2`, `4/7`, `?`, Excel numbers like 12.0). Every downstream stage needs the same answer
for the same cell, so this module is the one place that reads them. `parse_au` never raises: a cell
it cannot read comes back with `error` set so the reader can report the row and keep going.

Grammar (case and whitespace insensitive):
    cell        := "" | term ("+" term)*                  ("," and ";" also separate terms)
    term        := "?" | atom | "ref(" cell ")" | "(" cell ")" | alternative | "(" alternative ")"
    alternative := option ("/" option)+
    option      := atom                                    ("or" is written "/" as well)
    atom        := ["AU"] [side] number [intensity] ["?"]
    side        := "L" | "R" | "A"                         (left, right, asymmetric)
    intensity   := "A" .. "E"
Items inside `ref(...)`, alternatives, and atoms ending in "?" are uncertain (`certain=False`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

SIDES: tuple[str, ...] = ("", "L", "R", "A")
INTENSITIES: tuple[str, ...] = ("", "A", "B", "C", "D", "E")

_ATOM = re.compile(r"^(?:AU)?([LRA]?)(\d{1,3})([A-E]?)(\??)$")
_OR_WORD = re.compile(r"\s+OR\s+|\)OR\(|\)OR\s+|\s+OR\(")


@dataclass(frozen=True, order=True)
class AUItem:
    """One coded Action Unit: number, side ("", L, R, A), intensity ("", A–E), and whether it is certain."""

    au: int
    side: str = ""
    intensity: str = ""
    certain: bool = True

    @property
    def code(self) -> str:
        """The item as a sheet writes it, without the certainty marker (e.g. "L12", "15A")."""
        return f"{self.side}{self.au}{self.intensity}"


@dataclass(frozen=True)
class AUParse:
    """The parsed cell. `error` is None when every term was understood; otherwise it says what was not."""

    raw: str
    items: tuple[AUItem, ...] = ()
    alternatives: tuple[tuple[AUItem, ...], ...] = ()
    unknown: bool = False  # the cell (or a term) was "?"
    error: str | None = None
    canonical: str = field(default="", compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def numbers(self) -> frozenset[int]:
        """Every AU number mentioned, certain or not (the store's multi-hot label)."""
        found = {item.au for item in self.items}
        found.update(item.au for group in self.alternatives for item in group)
        return frozenset(found)

    @property
    def certain_numbers(self) -> frozenset[int]:
        """AU numbers coded without any doubt (not in ref(), alternatives or with "?")."""
        return frozenset(item.au for item in self.items if item.certain)


def _cell_text(cell: object) -> str:
    """Excel hands us ints, floats (12.0) and strings; give one text form, "" for empty."""
    if cell is None:
        return ""
    if isinstance(cell, bool):
        return str(cell)
    if isinstance(cell, float):
        if math.isnan(cell):
            return ""
        if cell.is_integer():
            return str(int(cell))
        return repr(cell)
    if isinstance(cell, int):
        return str(cell)
    return str(cell)


def _split_top(text: str, separators: str) -> list[str] | None:
    """Split on separators outside parentheses; None when the parentheses do not balance."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                return None
        if char in separators and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        return None
    parts.append("".join(current))
    return parts


def _unwrap(text: str) -> str:
    """`(R6)` written as an option of `(R6)/(R12)` is just `R6`."""
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    return text


class _Collector:
    """Accumulates items while walking the terms, plus the first error met."""

    def __init__(self) -> None:
        self.items: list[AUItem] = []
        self.alternatives: list[tuple[AUItem, ...]] = []
        self.unknown = False
        self.errors: list[str] = []

    def atom(self, text: str, certain: bool) -> AUItem | None:
        match = _ATOM.match(text)
        if match is None:
            self.errors.append(f"unreadable AU term {text!r}")
            return None
        side, number, intensity, doubt = match.groups()
        return AUItem(int(number), side, intensity, certain and not doubt)

    def cell(self, text: str, certain: bool) -> None:
        terms = _split_top(text, "+,;")
        if terms is None:
            self.errors.append("unbalanced parentheses")
            return
        for term in terms:
            self.term(term, certain)

    def term(self, term: str, certain: bool) -> None:
        if term == "":
            self.errors.append("empty AU term (stray '+')")
        elif term == "?":
            self.unknown = True
        elif term.startswith("REF(") and term.endswith(")"):
            self.cell(term[4:-1], certain=False)
        elif term.startswith("(") and term.endswith(")") and _split_top(term[1:-1], "") is not None:
            inner = term[1:-1]
            if len(_split_top(inner, "/") or []) > 1:
                self.options(inner)
            else:
                self.cell(inner, certain)
        elif len(_split_top(term, "/") or []) > 1:
            self.options(term)
        else:
            item = self.atom(term, certain)
            if item is not None:
                self.items.append(item)

    def options(self, text: str) -> None:
        options = [self.atom(_unwrap(option), certain=False) for option in _split_top(text, "/") or []]
        kept = tuple(sorted({o for o in options if o is not None}))
        if len(kept) == 1:
            self.items.append(kept[0])
        elif kept:
            self.alternatives.append(kept)


def _canonical(items: tuple[AUItem, ...], alternatives: tuple[tuple[AUItem, ...], ...], unknown: bool) -> str:
    """One spelling per meaning, sorted by AU number, so equal cells compare equal as strings."""
    keyed: list[tuple[tuple, str]] = []
    for item in items:
        text = item.code if item.certain else f"ref({item.code})"
        keyed.append(
            ((item.au, SIDES.index(item.side), INTENSITIES.index(item.intensity), not item.certain), text)
        )
    for group in alternatives:
        first = group[0]
        text = "(" + "/".join(option.code for option in group) + ")"
        keyed.append(
            ((first.au, SIDES.index(first.side), INTENSITIES.index(first.intensity), True, text), text)
        )
    terms = [text for _, text in sorted(keyed)]
    if unknown:
        terms.append("?")
    return "+".join(terms)


def parse_au(cell: object) -> AUParse:
    """Parse one AU cell; never raises. Unreadable terms are skipped and named in `error`."""
    try:
        raw = _cell_text(cell)
    except Exception as exc:  # a cell object whose str() fails is still just a bad cell
        return AUParse(raw="", error=f"unreadable AU cell ({type(exc).__name__})")
    text = raw.strip().upper()
    if not text:
        return AUParse(raw=raw)
    text = _OR_WORD.sub(lambda m: m.group(0).replace("OR", "/"), f" {text} ").strip()
    text = re.sub(r"\s+", "", text)
    collector = _Collector()
    collector.cell(text, certain=True)
    items = tuple(sorted(set(collector.items)))
    alternatives = tuple(sorted(set(collector.alternatives)))
    error = None
    if collector.errors:
        error = f"{'; '.join(dict.fromkeys(collector.errors))} in AU cell {raw!r}"
    return AUParse(
        raw=raw,
        items=items,
        alternatives=alternatives,
        unknown=collector.unknown,
        error=error,
        canonical=_canonical(items, alternatives, collector.unknown),
    )
