"""model.errors: the one way a message or a name becomes one printable line."""

from __future__ import annotations

import pytest

from model.errors import InputError, one_line, shown

BIDI_NAME = "patient_99\u202e21_tneitap"  # displays as "patient_99patient_12" where U+202E is obeyed


@pytest.mark.parametrize(("raw", "seen"), [
    (BIDI_NAME, "patient_99<U+202E>21_tneitap"),  # Cf: right-to-left override (issue 23 item 12)
    ("a\u2066b\u2069c", "a<U+2066>b<U+2069>c"),  # Cf: left-to-right isolate and its end
    ("ab\u200bc\ufeff", "ab<U+200B>c<U+FEFF>"),  # Cf: zero-width space, byte order mark
    ("a\u00adb", "a<U+00AD>b"),  # Cf: soft hyphen
    ("a\u2028b\u2029c", "a<U+2028>b<U+2029>c"),  # Zl, Zp: they split lines
    ("a\u00a0b\u3000c", "a<U+00A0>b<U+3000>c"),  # Zs other than the ASCII space: a name that looks like another
    ("a\ue000b", "a<U+E000>b"),  # Co: private use
    ("a\nb\x1b[31mc\x85", "a\\nb\\x1b[31mc\\x85"),  # Cc: C0, C1 keep Python's escapes
    ("Ærøskøbing 中文 é a b", "Ærøskøbing 中文 é a b"),  # what prints is left alone
])
def test_invisible_and_control_characters_in_names_are_shown_escaped(raw, seen):
    assert one_line(raw) == seen
    assert shown(f"/data/{raw}.mha") == f"/data/{seen}.mha"
    assert str(InputError(f"{raw}: PET file missing")) == f"{seen}: PET file missing"
