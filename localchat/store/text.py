"""Text rules of the store: conversation titles, terminal display width, and what the full-text index reads.

Choosing the FTS5 tokenizer (checked on SQLite 3.40, see tests/store/test_search.py):
- `unicode61` splits on spaces and punctuation only. Chinese has no spaces, so a whole run of Han characters
  is one token: "关键词" is NOT found in "这是关键词测试" (only the complete run "这是关键词测试" is).
- `trigram` finds any substring of 3 or more characters, CJK included, with snippets. But a query shorter
  than 3 characters matches nothing, and most Chinese words have two characters ("你好", "模型", "中文");
  the only way round that is a LIKE scan of every message (see `scripts/bench store`, several times slower).
- Chosen: `unicode61` over a form of each message in which every CJK character stands alone between
  U+001F separators (a control character: a separator for unicode61, one byte, never in real text). A CJK
  query becomes a phrase of single characters, so any run of CJK characters of any length matches where
  it occurs; English words match whole, or as a prefix when 3+ letters long; case and accents are folded
  (remove_diacritics 2). snippet() reads that form; the separators are taken out of the snippet.
- The split form is stored (messages.search_text) only for messages that contain CJK; the index reads the
  content itself for the rest (view messages_indexed). It is stored rather than recomputed so that
  deleting a row from the index always uses exactly the tokens that were indexed, whatever this code
  becomes; the triggers that keep the index in step are plain SQL that any SQLite client can run.
"""

from __future__ import annotations

import re
import unicodedata

SEP = "\x1f"  # between CJK characters in the indexed form

# Scripts written without spaces between words, indexed one character per token. (Thai, Lao, Khmer and
# Myanmar also lack spaces but build syllables from combining marks, which must not be split off.)
_CJK_RANGES = (
    "\u1100-\u11ff"  # Hangul Jamo
    "\u2e80-\u2fdf"  # CJK radicals, Kangxi radicals
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3100-\u312f"  # Bopomofo
    "\u3130-\u318f"  # Hangul compatibility Jamo
    "\u31a0-\u31ff"  # Bopomofo extended, Katakana phonetic extensions
    "\u3400-\u4dbf"  # CJK extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\ua960-\ua97f"  # Hangul Jamo extended A
    "\uac00-\ud7ff"  # Hangul syllables, Jamo extended B
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\uff66-\uff9f"  # half-width Katakana
    "\U00020000-\U0003134f"  # CJK extensions B-G, compatibility supplement
)
_CJK_CHAR = re.compile(f"([{_CJK_RANGES}])")
_CJK_ONLY = re.compile(f"[{_CJK_RANGES}]")
# What unicode61 keeps as token characters (letters and digits); everything else separates tokens.
_TOKEN = re.compile(r"[^\W_]+")
_TERM = re.compile(r'"([^"]*)"?|(\S+)')

HIT_OPEN, HIT_CLOSE = "\ue000", "\ue001"  # private-use marks asked of snippet(), turned into offsets
_HIT_MARKS = re.compile(f"([{HIT_OPEN}{HIT_CLOSE}])")
_SPACES = re.compile(r"\s+")

# Latin-script terms this long or longer also match longer words ("deploy" finds "deployment").
PREFIX_MIN_CHARS = 3
TITLE_WIDTH = 60  # terminal columns; a CJK character takes two


def split_cjk(text: str) -> str:
    """`text` with every CJK character made its own token (the form the full-text index reads)."""
    if not _CJK_ONLY.search(text):
        return text
    return _CJK_CHAR.sub(SEP + r"\1" + SEP, text).replace(SEP + SEP, SEP)


def search_text(content: str) -> str:
    """What to store in messages.search_text: the split form, or '' when the index can read `content` as is."""
    split = split_cjk(content)
    return "" if split == content else split


def match_expression(query: str) -> str | None:
    """An FTS5 MATCH expression for what a user typed, or None when it holds nothing searchable.

    Words are ANDed; "double quotes" keep a phrase together. Each term is passed as an FTS5 string, so
    operators (AND, OR, NEAR, *, ^, parentheses) are searched as text, never parsed.
    """
    parts = []
    for quoted, bare in _TERM.findall(query):
        term = quoted if quoted else bare
        indexed = split_cjk(term)
        tokens = _TOKEN.findall(indexed)
        if not tokens:
            continue
        phrase = '"' + indexed.replace('"', '""') + '"'
        last = tokens[-1]
        if not quoted and len(last) >= PREFIX_MIN_CHARS and not _CJK_ONLY.search(last):
            phrase += "*"
        parts.append(phrase)
    return " ".join(parts) if parts else None


def strip_index_marks(text: str) -> str:
    return text.replace(SEP, "")


def parse_snippet(raw: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    """snippet() output (with our private marks) -> one line of plain text and the hit offsets in it."""
    text, spans, length, start = [], [], 0, 0
    for piece in _HIT_MARKS.split(strip_index_marks(raw)):
        if piece == HIT_OPEN:
            start = length
        elif piece == HIT_CLOSE:
            spans.append((start, length))
        else:
            piece = _SPACES.sub(" ", piece)
            text.append(piece)
            length += len(piece)
    line = "".join(text)
    lead = len(line) - len(line.lstrip())
    line = line.strip()
    return line, tuple((max(0, a - lead), min(len(line), b - lead)) for a, b in spans)


def char_width(ch: str) -> int:
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Cc", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Columns `text` takes in a terminal (CJK and full-width characters take two)."""
    return sum(char_width(ch) for ch in text)


def truncate(text: str, width: int, ellipsis: str = "…") -> str:
    """`text` cut to at most `width` columns, ending in `ellipsis` when something was cut."""
    if display_width(text) <= width:
        return text
    room = width - display_width(ellipsis)
    used = 0
    for i, ch in enumerate(text):
        used += char_width(ch)
        if used > room:
            return text[:i] + ellipsis
    return text


def one_line(text: str) -> str:
    return " ".join(text.split())


def make_title(text: str, width: int = TITLE_WIDTH) -> str:
    """A conversation title from its first user message: one line, at most `width` columns.

    Spaced text is cut at a word boundary when one is near the end; CJK text is cut between characters.
    """
    line = one_line(text)
    if display_width(line) <= width:
        return line
    cut = truncate(line, width - 1, ellipsis="")  # one column left for the "…"
    space = cut.rfind(" ")
    if space >= len(cut) * 2 // 3:
        cut = cut[:space]
    return cut.rstrip(" ,.;:-—") + "…"
