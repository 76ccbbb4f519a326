"""The FACS Action Unit grammar of ME annotation sheets, parsed into a structured, canonical form.

Sheets write AU codes many ways (`12`, `L12`, `12L`, `T23`, `15A+17`, `10A/B`, `4(B/C)`, `ref(7B)+43C`,
`(R6 or R12)+R15`, `10or11`, `A/L12`, `R4,5`, `M57`, `AD19`, `soft focus`, `NULL`, `?`, Excel numbers like
12.0). Every downstream stage needs the same answer for the same cell, so this module is the one place that
reads them. `parse_au` never raises, and it loses no token: each one is classified (`TOKEN_KINDS`), and a
token it cannot read comes back in `unknown_tokens` with `error` set, so the reader reports the row.

Grammar (case insensitive; full-width characters are folded first):
    cell        := "" | term (sep term)*        sep: "+", ",", ";", "、" or white space
    term        := "?" | descriptor | atom | "ref(" cell ")" | "(" cell ")" | ["("] alternative [")"]
    alternative := option ("/" option)+         the word "or" is the same as "/"
    option      := atom | intensity | side      `10A/B` = 10A or 10B; `A/L12` = A12 or L12
    atom        := ["AU"] [side] number [intensity] [side] ["?"]  |  ("M" | "AD") number [intensity] ["?"]
                   | number "(" intensity ("/" intensity)+ ")"     `4(B/C)` = 4B or 4C
    side        := L | R | T | B | U | A        left, right, top, bottom, unilateral, asymmetric (prefix);
                                                 a suffix side is L, R, T or U (a suffix B is an intensity)
    intensity   := A .. E
    descriptor  := "soft focus" | "glare" | "null"
Items inside `ref(...)`, alternatives, and atoms ending in "?" are uncertain (`certain=False`). Numbers
1–64 are Action Units (the 50- and 60-series head and eye codes included); `M` (movement) and `AD` (action
descriptor) codes and numbers above 64 are kept as FACS codes in the canonical string but are not AUs.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field

INTENSITIES: tuple[str, ...] = ("", "A", "B", "C", "D", "E")
SIDE_LETTERS: str = "LRTBUA"  # canonical order of side letters ("A" last: "AU1" would read as AU1)
CODE_PREFIXES: tuple[str, ...] = ("", "M", "AD")  # "" = a numbered code; M = movement, AD = action descriptor
MAX_AU = 64  # AU1..AU64 are Action Units (the store's multi-hot label); higher numbers are other FACS codes
DESCRIPTORS: tuple[str, ...] = ("soft focus", "glare", "null")
# How each token of a cell is classified.
TOKEN_KINDS: tuple[str, ...] = ("au", "code", "unspecified", "descriptor", "unknown")

_ATOM = re.compile(
    r"^(?:AU)?(?P<pre>[LRATBU]{0,3})(?P<num>\d{1,3})"
    r"(?:(?P<int1>[A-E])(?P<suf1>[LRTU])?|(?P<suf2>[LRTU])(?P<int2>[A-E])?)?(?P<doubt>\??)$"
)
_CODE = re.compile(r"^(?P<kind>AD|M)(?P<num>\d{1,3})(?P<int>[A-E]?)(?P<doubt>\??)$")
_INTENSITY_CHOICE = re.compile(
    r"^(?:AU)?(?P<pre>[LRATBU]{0,3})(?P<num>\d{1,3})\((?P<ints>[A-E](?:/[A-E])+)\)$"
)
_DESCRIPTOR = re.compile(r"(?<![A-Z])(SOFT\s*FOCUS|GLARE|NULL)(?![A-Z])")
# "or" between two options: "R6 or R12", "(R6)or(R12)", "10or11", "L12 OR R12".
_OR_WORD = re.compile(r"(?<=[0-9A-ELRTU)?])\s*OR\s*(?=[0-9LRATBU(])|\s+OR\s+")
_SEPARATORS = "+,;、"


@dataclass(frozen=True, order=True)
class AUItem:
    """One coded action: number, side (e.g. "", "L", "T"), intensity ("", A–E), certainty, and code prefix.

    `prefix` is "" for a numbered code, "M" for a FACS movement code and "AD" for an action descriptor.
    """

    au: int
    side: str = ""
    intensity: str = ""
    certain: bool = True
    prefix: str = ""

    @property
    def code(self) -> str:
        """The item as a sheet writes it, without the certainty marker (e.g. "L12", "15A", "M57")."""
        return f"{self.prefix}{self.side}{self.au}{self.intensity}"

    @property
    def is_au(self) -> bool:
        """True for an Action Unit (AU1–AU64); False for M/AD codes and other FACS codes."""
        return self.prefix == "" and 1 <= self.au <= MAX_AU


@dataclass(frozen=True)
class AUParse:
    """The parsed cell. `error` is None when every token was understood; otherwise it says what was not."""

    raw: str
    items: tuple[AUItem, ...] = ()
    alternatives: tuple[tuple[AUItem, ...], ...] = ()
    unknown: bool = False  # the cell (or a term) was "?"
    error: str | None = None
    canonical: str = field(default="", compare=False)
    descriptors: tuple[str, ...] = ()  # non-AU descriptors ("soft focus", "glare", "null"), lower case
    unknown_tokens: tuple[str, ...] = ()  # tokens that are not in the grammar, as written (upper case)
    tokens: tuple[tuple[str, str], ...] = ()  # every token of the cell with its kind from TOKEN_KINDS

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def numbers(self) -> frozenset[int]:
        """Every AU number mentioned, certain or not (the store's multi-hot label); codes that are not AUs
        (M, AD, numbers above 64) are left out."""
        found = {item.au for item in self.items if item.is_au}
        found.update(item.au for group in self.alternatives for item in group if item.is_au)
        return frozenset(found)

    @property
    def certain_numbers(self) -> frozenset[int]:
        """AU numbers coded without doubt: certain items, and alternatives that only differ in side or
        intensity (`L2/R2`, `10A/B` still code AU2, AU10)."""
        found = {item.au for item in self.items if item.certain and item.is_au}
        for group in self.alternatives:
            if len({item.au for item in group}) == 1 and group[0].is_au:
                found.add(group[0].au)
        return frozenset(found)

    @property
    def notes(self) -> str:
        """What the cell says besides FACS codes: descriptors (not "null", which only says "no AU") and
        unreadable tokens as written, ";"-joined; the manifest keeps it as `au_notes`."""
        kept = [d for d in self.descriptors if d != "null"] + list(self.unknown_tokens)
        return ";".join(dict.fromkeys(kept))


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
    while text.startswith("(") and text.endswith(")") and _split_top(text[1:-1], "") is not None:
        text = text[1:-1]
    return text


def _side(letters: str) -> str:
    """Side letters in one canonical order, so `L12` and `12L` are the same item."""
    return "".join(sorted(set(letters), key=SIDE_LETTERS.index))


class _Collector:
    """Accumulates items, alternatives and classified tokens while walking the terms."""

    def __init__(self) -> None:
        self.items: list[AUItem] = []
        self.alternatives: list[tuple[AUItem, ...]] = []
        self.unknown = False
        self.errors: list[str] = []
        self.unknown_tokens: list[str] = []
        self.tokens: list[tuple[str, str]] = []

    def reject(self, text: str, why: str) -> None:
        self.errors.append(why)
        self.unknown_tokens.append(text)
        self.tokens.append((text, "unknown"))

    def atom(self, text: str, certain: bool) -> AUItem | None:
        """One code (`L12`, `12L`, `15A`, `M57`, `AD19`), or None after reporting it as unknown."""
        match = _CODE.match(text)
        if match is not None:
            kind, number, intensity, doubt = match.group("kind", "num", "int", "doubt")
            item = AUItem(int(number), "", intensity, certain and not doubt, kind)
        else:
            match = _ATOM.match(text)
            if match is None:
                self.reject(text, f"unreadable AU term {text!r}")
                return None
            side = _side((match["pre"] or "") + (match["suf1"] or match["suf2"] or ""))
            intensity = match["int1"] or match["int2"] or ""
            item = AUItem(int(match["num"]), side, intensity, certain and not match["doubt"])
        self.tokens.append((text, "au" if item.is_au else "code"))
        return item

    def cell(self, text: str, certain: bool) -> None:
        terms = _split_top(text, _SEPARATORS)
        if terms is None:
            self.reject(text, "unbalanced parentheses")
            return
        for term in terms:
            pieces = _split_top(term, " ") or [term]
            if not any(pieces):
                self.errors.append("empty AU term (stray separator)")
                continue
            for piece in pieces:
                if piece:
                    self.term(piece, certain)

    def term(self, term: str, certain: bool) -> None:
        choice = _INTENSITY_CHOICE.match(term)
        if term == "?":
            self.unknown = True
            self.tokens.append((term, "unspecified"))
        elif term.startswith("REF(") and term.endswith(")") and _split_top(term[4:-1], "") is not None:
            self.cell(term[4:-1], certain=False)
        elif choice is not None:
            side, number = choice["pre"] or "", choice["num"]
            options = [f"{side}{number}{letter}" for letter in choice["ints"].split("/")]
            self.group([self.atom(option, certain=False) for option in options])
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
        """`a/b/c` alternatives; a bare intensity borrows the previous option's code (`10A/B`), a bare side
        the next option's (`A/L12`)."""
        parts = [_unwrap(option) for option in _split_top(text, "/") or []]
        resolved: list[str] = []
        for index, part in enumerate(parts):
            previous = _ATOM.match(resolved[-1]) if resolved else None
            following = _ATOM.match(parts[index + 1]) if index + 1 < len(parts) else None
            if re.fullmatch(r"[A-E]", part) and previous is not None:
                resolved.append(f"{previous['pre'] or ''}{previous['num']}{part}")
            elif re.fullmatch(r"[LRATBU]{1,2}", part) and following is not None:
                resolved.append(f"{part}{following['num']}")
            else:
                resolved.append(part)
        self.group([self.atom(option, certain=False) for option in resolved])

    def group(self, options: list[AUItem | None]) -> None:
        kept = tuple(sorted({o for o in options if o is not None}))
        if len(kept) == 1:
            self.items.append(kept[0])
        elif kept:
            self.alternatives.append(kept)


def _sort_key(item: AUItem) -> tuple:
    side = tuple(SIDE_LETTERS.index(letter) for letter in item.side)
    return (CODE_PREFIXES.index(item.prefix), item.au, side, INTENSITIES.index(item.intensity))


def _canonical(items: tuple[AUItem, ...], alternatives: tuple[tuple[AUItem, ...], ...], unknown: bool) -> str:
    """One spelling per meaning, sorted by code and number, so equal cells compare equal as strings."""
    keyed: list[tuple[tuple, str]] = []
    for item in items:
        text = item.code if item.certain else f"ref({item.code})"
        keyed.append(((*_sort_key(item), not item.certain, ""), text))
    for group in alternatives:
        ordered = sorted(group, key=_sort_key)
        text = "(" + "/".join(option.code for option in ordered) + ")"
        keyed.append(((*_sort_key(ordered[0]), True, text), text))
    terms = [text for _, text in sorted(keyed)]
    if unknown:
        terms.append("?")
    return "+".join(terms)


def _normalise(raw: str) -> tuple[str, list[str]]:
    """Upper-cased text with "or" as "/", spacing inside codes removed, and the descriptors taken out."""
    text = unicodedata.normalize("NFKC", raw).upper().strip()
    descriptors = [re.sub(r"\s+", " ", found).lower() for found in _DESCRIPTOR.findall(text)]
    text = _DESCRIPTOR.sub("+", text)
    text = _OR_WORD.sub("/", f" {text} ").strip()
    text = re.sub(r"\s*/\s*", "/", text)
    text = re.sub(r"\(\s+", "(", text)
    text = re.sub(r"\s+\)", ")", text)
    text = re.sub(r"\b(AU|REF|M|AD)\s+(?=[\d(])", r"\1", text)
    text = re.sub(r"(\d)\s+\(([A-E](?:/[A-E])+)\)", r"\1(\2)", text)
    text = re.sub(r"\s*([+,;、])\s*", r"\1", text)
    text = re.sub(r"\s+", " ", text)
    if descriptors:  # the separators around a descriptor are not stray
        text = re.sub(r"[+,;、](?:\s*[+,;、])+", "+", text).strip("+,;、 ")
    return text, descriptors


def parse_au(cell: object) -> AUParse:
    """Parse one AU cell; never raises. Unreadable tokens are kept in `unknown_tokens`, named in `error`."""
    try:
        raw = _cell_text(cell)
    except Exception as exc:  # a cell object whose str() fails is still just a bad cell
        return AUParse(raw="", error=f"unreadable AU cell ({type(exc).__name__})")
    text, descriptors = _normalise(raw)
    collector = _Collector()
    if text:
        collector.cell(text, certain=True)
    items = tuple(sorted(set(collector.items)))
    alternatives = tuple(sorted(set(collector.alternatives)))
    error = None
    if collector.errors:
        error = f"{'; '.join(dict.fromkeys(collector.errors))} in AU cell {raw!r}"
    tokens = tuple((d, "descriptor") for d in descriptors) + tuple(collector.tokens)
    return AUParse(
        raw=raw,
        items=items,
        alternatives=alternatives,
        unknown=collector.unknown,
        error=error,
        canonical=_canonical(items, alternatives, collector.unknown),
        descriptors=tuple(descriptors),
        unknown_tokens=tuple(dict.fromkeys(collector.unknown_tokens)),
        tokens=tokens,
    )
