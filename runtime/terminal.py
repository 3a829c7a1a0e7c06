"""Text for a terminal: catalog strings shown without letting them drive the terminal."""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with every non-printable character written as a Python-style escape.

    Track ids, URIs and tags come from whoever wrote the catalog. Printed as is, an ESC
    sequence in one retitles the window, recolours the screen or moves the cursor over
    earlier lines, BEL rings, and NUL or a carriage return hides what came before. Each such
    character (controls, line and paragraph separators, format characters such as bidi
    overrides: whatever ``str.isprintable`` rejects) becomes ``\\x1b``, ``\\u202e``... so the
    row shows that it holds one. Printable text, including non-ASCII letters, is unchanged.
    Backslashes are left alone: a table is for reading, ``--json`` is the exact form.
    """
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable():
            out.append(char)
        else:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)
