"""Answer extraction and equivalence for GSM8K / MATH-style solutions.

Extraction order (:func:`extract_math_answer`): the last ``\\boxed{...}`` (or
``\\fbox{...}``), else the number after the GSM8K marker ``####``, else the last
number in the text. Equivalence (:func:`answers_equal`) tries a cheap canonical
comparison first and falls back to ``math_verify`` (sympy-based; ``\\frac{1}{2}``
equals ``0.5``, ``\\sqrt{8}`` equals ``2\\sqrt{2}``). :func:`canonical_answer`
gives the hashable form used for majority voting: numbers are normalized exactly
(``1,000`` -> ``1000``, ``0.50`` -> ``0.5``, ``\\frac{1}{2}`` -> ``0.5``,
``\\frac{1}{3}`` -> ``1/3``); anything else is whitespace- and macro-normalized
LaTeX text.
"""
from __future__ import annotations

import re
import threading
from fractions import Fraction

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_NUMBER_RE = re.compile(
    r"(?:(?<![\w)\]}])-)?"                      # a sign, unless it is a binary minus
    r"(?<![\d.])(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"  # 1,234.5 / 42 / 3.14
    r"|(?:(?<![\w)\]}])-)?(?<![\d.])\.\d+"      # .5
)
_GSM8K_MARKER = "####"
_LIST_MARKER_RE = re.compile(r"(?m)^[ \t]*(?:[Ss]tep[ \t]+\d+[ \t]*[:.)]|\d+[.)](?=[ \t]+\S))")
_PLAIN_NUMBER_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|-?\.\d+")
_FRAC_RE = re.compile(r"(-?)\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}")
_FRAC_SHORT_RE = re.compile(r"(-?)\\[dt]?frac(\d)(\d)")
_SLASH_RE = re.compile(r"(-?\d+)/(-?\d+)")
_TEXT_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{[^{}]*\}")


def extract_boxed(text: str) -> str | None:
  """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces kept).

  ``\\boxed 5`` (no braces) gives ``5``. None when there is no box or the last one
  is cut off before its closing brace.
  """
  matches = list(_BOXED_RE.finditer(text))
  if not matches:
    return None
  i = matches[-1].end()
  while i < len(text) and text[i] == " ":
    i += 1
  if i < len(text) and text[i] != "{":
    token = re.match(r"[^\s$]+", text[i:])
    return token.group(0) if token else None
  depth, start = 0, i + 1
  for j in range(i, len(text)):
    if text[j] == "{" and text[j - 1] != "\\":
      depth += 1
    elif text[j] == "}" and text[j - 1] != "\\":
      depth -= 1
      if depth == 0:
        return text[start:j].strip()
  return None


def _clean_number(number: str) -> str:
  return number.replace(",", "")


def extract_last_number(text: str) -> str | None:
  """The number after the last ``####`` if present, else the last number in ``text``.

  Handles thousands separators (``1,234`` -> ``1234``), signs (``-3``, but the
  ``3`` of ``5-3``), decimals and the unicode minus. List markers that start a line
  and are followed by text (``5. Add the ...``, ``2) ...``, ``Step 3: ...``) are not
  answers and are skipped, so a solution cut off after ``5. To find`` has no answer
  ``5``. Returns the number as text without separators, or None.
  """
  text = text.replace("\u2212", "-")
  marker = text.rfind(_GSM8K_MARKER)
  if marker >= 0:
    match = _NUMBER_RE.search(text, marker + len(_GSM8K_MARKER))
    if match is not None:
      return _clean_number(match.group(0))
  numbers = _NUMBER_RE.findall(_LIST_MARKER_RE.sub(" ", text))
  return _clean_number(numbers[-1]) if numbers else None


_AFTER_EQUALS_RE = re.compile(r"=\s*(?:\\?\$\s*)?")


def equation_results(text: str) -> list[str]:
  """The numbers written right after each ``=`` of ``text`` (``$`` signs and separators
  allowed), in order, without thousands separators: ``"37 + 45 = 82 * 3 = $246"`` ->
  ``["82", "246"]``. An ``=`` followed by something else (a word, a formula) gives none.
  """
  text = text.replace("\u2212", "-")
  out = []
  for eq in _AFTER_EQUALS_RE.finditer(text):
    match = _NUMBER_RE.match(text, eq.end())
    if match is not None:
      out.append(_clean_number(match.group(0)))
  return out


def numbers(text: str) -> list[str]:
  """Every number of ``text`` in order, without thousands separators."""
  return [_clean_number(n) for n in _NUMBER_RE.findall(text.replace("\u2212", "-"))]


def extract_math_answer(text: str) -> str | None:
  """Boxed answer first, else the GSM8K ``####`` number, else the last number."""
  boxed = extract_boxed(text)
  return boxed if boxed is not None else extract_last_number(text)


# ----------------------------------------------------------------------------- canonical form


def _strip_wrappers(text: str) -> str:
  """Remove math delimiters, a box, spacing macros, ``\\left``/``\\right`` and ``x =``."""
  s = text.strip().replace("\u2212", "-")
  boxed = extract_boxed(s)
  if boxed is not None and s.startswith(("\\boxed", "\\fbox", "$\\boxed", "$\\fbox")):
    s = boxed
  for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
    if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
      s = s[len(left):len(s) - len(right)]
  for macro in ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\ ", "\\displaystyle"):
    s = s.replace(macro, "")
  s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
  s = re.sub(r"\s+", "", s)
  s = re.sub(r"^[A-Za-z]=(?=.)", "", s)  # "x=5" -> "5"
  return s.rstrip(".")


def parse_number(text: str | None) -> Fraction | None:
  """Exact value of a plain numeric answer, or None.

  Accepts ``-1,234.50``, ``\\$5``, ``50\\%`` (value 50), ``\\text{...}`` units,
  ``\\frac{a}{b}``, ``\\frac12``, ``a/b``.
  """
  if text is None:
    return None
  s = _strip_wrappers(text)
  s = _TEXT_RE.sub("", s)
  s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
  if not s:
    return None
  if _PLAIN_NUMBER_RE.fullmatch(s):
    return Fraction(s.replace(",", "").rstrip(".") or "0")
  for pattern in (_FRAC_RE, _FRAC_SHORT_RE):
    match = pattern.fullmatch(s)
    if match and int(match[3]) != 0:
      value = Fraction(int(match[2]), int(match[3]))
      return -value if match[1] else value
  match = _SLASH_RE.fullmatch(s)
  if match and int(match[2]) != 0:
    return Fraction(int(match[1]), int(match[2]))
  return None


def _format_number(value: Fraction) -> str:
  """``1000``, ``0.5``, ``-2.25`` for terminating decimals; ``p/q`` otherwise."""
  if value.denominator == 1:
    return str(value.numerator)
  q = value.denominator
  twos = fives = 0
  while q % 2 == 0:
    q, twos = q // 2, twos + 1
  while q % 5 == 0:
    q, fives = q // 5, fives + 1
  if q != 1:
    return f"{value.numerator}/{value.denominator}"
  places = max(twos, fives)
  scaled = abs(value.numerator) * 10**places // value.denominator
  digits = str(scaled).rjust(places + 1, "0")
  sign = "-" if value < 0 else ""
  return f"{sign}{digits[:-places]}.{digits[-places:]}"


def canonical_answer(text: str | None) -> str | None:
  """Hashable canonical form for voting; None for a missing or empty answer.

  Numbers are normalized exactly (so ``\\frac{1}{2}``, ``0.50`` and ``1/2`` all give
  ``0.5``); other answers keep their LaTeX with whitespace, delimiters and
  spacing macros removed. Two answers with equal canonical forms are equal; the
  converse needs :func:`answers_equal`.
  """
  if text is None:
    return None
  value = parse_number(text)
  if value is not None:
    return _format_number(value)
  s = _strip_wrappers(text)
  return s or None


# ----------------------------------------------------------------------------- equivalence


def _timeout() -> int | None:
  """math_verify's timeouts use SIGALRM, which only works in the main thread."""
  return 5 if threading.current_thread() is threading.main_thread() else None


def _verify_parse(answer: str):
  import math_verify  # sympy import is slow; only pay for it when needed

  parsed = math_verify.parse("\\boxed{" + answer + "}", parsing_timeout=_timeout())
  return parsed if parsed else math_verify.parse(answer, parsing_timeout=_timeout())


def answers_equal(pred: str | None, gold: str | None) -> bool:
  """Whether a predicted answer equals the gold one (both already extracted).

  Fast path: equal canonical forms -> True; two plain numbers that differ ->
  False. Otherwise ``math_verify.verify(parse(gold), parse(pred))`` decides
  (symbolic equality, 6-digit float rounding, intervals, sets, ...).
  """
  if pred is None or gold is None:
    return False
  canon_pred, canon_gold = canonical_answer(pred), canonical_answer(gold)
  if canon_pred is None or canon_gold is None:
    return False
  if canon_pred == canon_gold:
    return True
  num_pred, num_gold = parse_number(pred), parse_number(gold)
  if num_pred is not None and num_gold is not None:
    if num_pred.denominator == 1 or num_gold.denominator == 1 or (
        "/" not in _format_number(num_pred) and "/" not in _format_number(num_gold)):
      return False  # exact values, no rounding question: they differ
  import math_verify

  gold_parsed, pred_parsed = _verify_parse(gold), _verify_parse(pred)
  if not gold_parsed or not pred_parsed:
    return False
  return bool(math_verify.verify(gold_parsed, pred_parsed, timeout_seconds=_timeout()))
