r"""PEFT's ``rank_pattern``/``alpha_pattern`` lookup, safe on keys from an untrusted ``adapter_config.json``.

PEFT (``peft.utils.other.get_pattern_key``) takes the first key ``k``, in the config's order, for which
``re.match(rf"(.*\.)?({k})$", module)`` matches. Run by Python's backtracking ``re``, one key such as
``(a+)+`` against a module named ``"a" * 40 + "!"`` holds a worker, and the GIL, for hours. Here:

* keys made only of literal characters and ``.`` (what PEFT configs mostly hold: module names, escaped
  with ``re.escape`` or not) are looked up by the module's dotted suffixes in hash tables, no regex run;
* every other key runs on RE2 (linear time, no backtracking), compiled once per adapter from the very
  string PEFT builds, so a key holding ``|`` or unbalanced parentheses means what it means to PEFT.
  The total matching time per adapter, lookups and RE2 alike, is capped at ``REGEX_SECONDS`` as a
  last guard.

Refused as ``UnsupportedPatternError``, naming the key: keys Python's ``re`` rejects (PEFT could not
load them either), keys RE2 cannot run (backreferences, lookaround, atomic groups, possessive
repeats), keys longer than ``MAX_KEY_CHARS``, more than ``MAX_KEYS`` keys, ``MAX_REGEX_KEYS`` regex
keys or ``MAX_SHAPES`` shapes of wildcard keys in one pattern, and constructs the two engines read differently (``[:alpha:]`` classes, ``{,n}``,
``\1``-style escapes). What still differs: RE2's ``\w``, ``\d``, ``\s`` and ``\b`` are ASCII-only where
Python's are Unicode, which matters only for non-ASCII module names.
"""

from __future__ import annotations

import re
import time
import warnings
from operator import itemgetter

import re2

from merge_core.errors import UnsupportedPatternError, shown

MAX_KEY_CHARS = 512
MAX_KEYS = 10_000  # per pattern: PEFT-written configs list at most one key per module
MAX_REGEX_KEYS = 256  # per pattern, keys with operators other than '.': each holds a compiled RE2
MAX_SHAPES = 256  # per pattern, distinct (length, '.' positions) of the other keys: each is one lookup per module
REGEX_MEMORY = 256 << 10  # RE2 budget per key (program + DFA cache); past it RE2 falls back to its NFA, still linear
REGEX_SECONDS = 10.0  # total matching time allowed per adapter (lookups and RE2), the last guard
_META = frozenset(".^$*+?{}[]()|\\")
_OCTAL_OR_BACKREF = re.compile(r"\\[1-9]")


class PatternTable:
    """One ``rank_pattern`` or ``alpha_pattern``: ``index(module)`` is the position of the key PEFT picks."""

    def __init__(self, pattern: dict[str, object], *, field: str, where: str, budget: MatchBudget | None = None) -> None:
        self.values = list(pattern.values())
        self._field, self._where = field, where
        self._budget = budget or MatchBudget()
        if len(pattern) > MAX_KEYS:
            raise UnsupportedPatternError(
                f"{where}: {field} has {len(pattern)} keys, over the limit of {MAX_KEYS}; give the common value in "
                f"{'r' if field == 'rank_pattern' else 'lora_alpha'} and list only the exceptions",
                field=field,
            )
        for key in pattern:
            self._check(key)
        parsed = [(index, key, _fixed_width(key)) for index, key in enumerate(pattern)]
        n_regex = sum(fixed is None for _, _, fixed in parsed)
        if n_regex > MAX_REGEX_KEYS:
            raise UnsupportedPatternError(
                f"{where}: {field} has {n_regex} keys with regex operators, over the limit of {MAX_REGEX_KEYS}; name the "
                "modules instead (keys that are plain or re.escape'd module names do not count toward this limit)",
                field=field,
            )
        # Fixed-width keys, by length: [(getter of the literal positions, {characters there: first index})];
        # getter None: every position is literal, the key is the plain string.
        self._fixed: dict[int, list[tuple[itemgetter | None, dict]]] = {}
        self._regexes: list[tuple[int, object]] = []
        groups: dict[tuple[int, tuple[int, ...] | None], dict] = {}
        for index, key, fixed in parsed:
            if fixed is None:
                self._regexes.append((index, self._compile(key)))
                continue
            text, wild = fixed
            literal = None if not wild else tuple(i for i in range(len(text)) if i not in wild)
            groups.setdefault((len(text), literal), {}).setdefault(_pick(text, literal), index)
        if len(groups) > MAX_SHAPES:
            raise UnsupportedPatternError(
                f"{where}: {field} has keys of {len(groups)} different shapes (length and '.' positions), over the limit of "
                f"{MAX_SHAPES}; escape the dots of module names (re.escape) or list fewer keys",
                field=field,
            )
        for (length, literal), table in groups.items():
            getter = None if literal is None else (itemgetter(*literal) if literal else _nothing)
            self._fixed.setdefault(length, []).append((getter, table))

    def index(self, module: str) -> int | None:
        """The index of the first key that matches a dotted suffix of ``module`` (PEFT's rule), or None.
        ``module`` holds no newline (the loader's tensor-name pattern cannot capture one)."""
        started = time.monotonic()
        try:
            return self._index(module, started)
        finally:
            self._budget.spent += time.monotonic() - started

    def _index(self, module: str, started: float) -> int | None:
        best = None
        for start in (0, *(i + 1 for i, c in enumerate(module) if c == ".")):
            suffix = module[start:]
            for getter, table in self._fixed.get(len(suffix), ()):
                found = table.get(suffix if getter is None else getter(suffix))
                if found is not None and (best is None or found < best):
                    best = found
        self._within_budget(started)
        if not self._regexes or (best is not None and best < self._regexes[0][0]):
            return best
        encoded = module.encode()
        for index, regex in self._regexes:
            if best is not None and index > best:
                break
            if regex.match(encoded) is not None:
                return index
            self._within_budget(started)
        return best

    def _within_budget(self, started: float) -> None:
        if time.monotonic() - started + self._budget.spent > REGEX_SECONDS:
            raise UnsupportedPatternError(
                f"{self._where}: matching the {self._field} keys against the modules took over "
                f"{REGEX_SECONDS:.0f} s; name the modules with fewer keys (or escaped module names) instead",
                field=self._field,
            )

    def value(self, module: str, default: object) -> object:
        index = self.index(module)
        return default if index is None else self.values[index]

    def _check(self, key: str) -> None:
        def refuse(why: str) -> UnsupportedPatternError:
            return UnsupportedPatternError(f"{self._where}: {self._field} key {shown(key, 80)} {why}", field=self._field)

        if len(key) > MAX_KEY_CHARS:
            raise refuse(f"is {len(key)} characters, over the limit of {MAX_KEY_CHARS}; use a shorter regex or the module name")
        if not _encodable(key):
            raise refuse("is not valid Unicode (it holds an unpaired surrogate); write the module name in plain text")
        if "[:" in key:
            raise refuse("holds '[:', which Python's re and RE2 read differently (POSIX class); write the characters, e.g. [a-z]")
        if "{," in key:
            raise refuse("holds '{,', which Python's re reads as a repeat and RE2 as text; write {0,n} or escape the brace")
        if _OCTAL_OR_BACKREF.search(key.replace("\\\\", "")):
            raise refuse("holds a backreference or octal escape (\\1 ... \\9), which is not supported; remove it")

    def _compile(self, key: str):
        full = rf"(.*\.)?({key})$"  # exactly what PEFT matches
        where = f"{self._where}: {self._field} key {shown(key, 80)}"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                re.compile(full)
        except (re.error, RecursionError, OverflowError) as exc:
            message = exc.msg if isinstance(exc, re.error) else type(exc).__name__
            raise UnsupportedPatternError(
                f"{where} is not a valid Python regular expression ({message}), so PEFT could not load it either; fix the key",
                field=self._field,
            ) from None
        options = re2.Options()
        options.never_capture = True
        options.log_errors = False
        options.max_mem = REGEX_MEMORY
        try:
            return re2.compile(full, options)
        except re2.error:
            raise UnsupportedPatternError(
                f"{where} uses a regex feature that cannot run in linear time (backreferences, lookahead/lookbehind, "
                "atomic groups, possessive repeats) or is too large; rewrite it without them or name the modules",
                field=self._field,
            ) from None


class MatchBudget:
    """RE2 matching time spent so far for one adapter, shared by its rank and alpha patterns."""

    def __init__(self) -> None:
        self.spent = 0.0


def _nothing(_: str) -> tuple:
    return ()


def _pick(text: str, literal: tuple[int, ...] | None):
    if literal is None:
        return text
    return itemgetter(*literal)(text) if literal else ()


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _fixed_width(key: str) -> tuple[str, set[int]] | None:
    """``(text, wildcard positions)`` when ``key`` holds only literal characters, escaped ASCII punctuation
    and ``.`` (any character but a newline; module names hold none); otherwise None (a regex)."""
    chars: list[str] = []
    wild: set[int] = set()
    i = 0
    while i < len(key):
        c = key[i]
        if c == "\\":
            nxt = key[i + 1 : i + 2]
            if not nxt or not nxt.isascii() or nxt.isalnum():
                return None
            chars.append(nxt)
            i += 2
            continue
        if c == ".":
            wild.add(len(chars))
        elif c in _META:
            return None
        chars.append(c)
        i += 1
    return "".join(chars), wild
