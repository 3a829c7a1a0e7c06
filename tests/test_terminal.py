"""printable: catalog text shown on a terminal cannot drive it; readable text is left as it is."""

from runtime.terminal import printable


def test_control_and_format_characters_are_escaped():
    assert printable("a\x1b]0;owned\x07b") == "a\\x1b]0;owned\\x07b"  # retitle the window, ring
    assert printable("x\ry\nz\x00") == "x\\x0dy\\x0az\\x00"  # hide what came before
    assert printable("evil\u202egpj.mp3") == "evil\\u202egpj.mp3"  # bidi override: reads as mp3.jpg
    assert printable("line\u2028sep\x85") == "line\\u2028sep\\x85"
    assert printable("tag\U000e0001") == "tag\\U000e0001"  # a format character past the BMP


def test_printable_text_is_unchanged():
    for text in ("Für Elise", "ボカロ", "back\\slash", "", "🎵 drums"):
        assert printable(text) == text
