"""What a track id and a tag name may be: one check for every way they come in.

A track id enters through the catalog (:mod:`pipelines.catalog`); everything after (tag
Parquet, dead letters, the explorer's URLs and label writes) relies on :data:`MAX_ID_CHARS`.
A tag name enters through a catalog's ``tags`` (and so featurize's vocabulary), a labels CSV,
a labels folder, the explorer's label writes and a probe file; each goes through
:func:`tag_name`, so a tag is stored and compared in one spelling everywhere.
"""

from __future__ import annotations

import unicodedata

# A track id is a catalog's key, not a document. 512 characters keep every id usable in the
# explorer: a label write (at most 4 KiB of JSON) fits an id of 512 escaped control characters
# (6 bytes each) with a tag of 100 such, and GET /api/tracks/<id> a URL of 512 x 4 UTF-8 bytes
# percent-encoded (6 KiB, far under the 64 KiB request line).
MAX_ID_CHARS = 512
# The query views' own columns beside one column per tag (segments: track_id, start_s, end_s;
# decided: track_id, uri). SQL compares names without case, so a tag spelled like one of
# them in any case would be renamed by the view.
RESERVED_TAGS = ("track_id", "uri", "start_s", "end_s")
# Control characters (newline, ESC, NUL...), format characters (U+202E right-to-left override,
# zero-width joiners...), line and paragraph separators: invisible or terminal-driving in a
# name, or splitting one line in two.
REFUSED_CATEGORIES = {"Cc": "a control character (newline, tab, NUL, ...)", "Cf": "a format character"}
REFUSED_CATEGORIES |= {"Zl": "a line separator", "Zp": "a paragraph separator", "Cs": "a lone surrogate"}


class BadName(ValueError):
    """A track id or tag name that cannot be used; the message says why."""


def tag_name(tag) -> str:
    """``tag`` as stored everywhere: blanks around it dropped, in Unicode NFC (so ``café`` typed
    either way is one tag); an empty string stays empty (the caller drops or refuses it).

    Raises
    ------
    BadName
        ``tag`` is not text, holds a control, format or separator character, or is named like
        a column of the query views (:data:`RESERVED_TAGS`, any case).
    """
    if not isinstance(tag, str):
        raise BadName(f"a tag must be text, got {type(tag).__name__}")
    for char in tag:
        category = unicodedata.category(char)
        if category in REFUSED_CATEGORIES:
            raise BadName(f"tag {tag.strip()!r} contains {REFUSED_CATEGORIES[category]}")
    name = unicodedata.normalize("NFC", tag.strip())
    if name.lower() in RESERVED_TAGS:
        raise BadName(
            f"tag {name!r} is named like a column of the query views ({', '.join(RESERVED_TAGS)}, "
            "in any case); rename it"
        )
    return name


def track_id(value: str) -> str:
    """``value`` when it is short enough to be a track id; :class:`BadName` when it is not."""
    if len(value) > MAX_ID_CHARS:
        raise BadName(f"track_id has {len(value)} characters, over the limit of {MAX_ID_CHARS}")
    return value
