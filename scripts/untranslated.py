"""List the messages a language's catalogue does not translate yet (after `make translations`).

    python scripts/untranslated.py [--check] portal/translations

prints, per language, each untranslated or fuzzy message with where it is used, so the
catalogue can be completed (`make translations` ends with this list). With --check it exits 1
when any is missing; the test suite refuses a missing translation too.
"""

from __future__ import annotations

import sys
from pathlib import Path

from babel.messages.pofile import read_po


def missing(po_path: Path) -> list:
    with po_path.open("rb") as handle:
        catalog = read_po(handle)
    gaps = []
    for message in catalog:
        if not message.id:
            continue
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        if message.fuzzy or not all(strings):
            gaps.append(message)
    return gaps


def main(argv: list[str]) -> int:
    check = "--check" in argv
    args = [arg for arg in argv[1:] if arg != "--check"]
    root = Path(args[0] if args else "portal/translations")
    total = 0
    for po_path in sorted(root.glob("*/LC_MESSAGES/messages.po")):
        gaps = missing(po_path)
        total += len(gaps)
        print(f"{po_path}: {len(gaps)} message(s) to translate")
        for message in gaps:
            where = ", ".join(f"{name}:{line}" for name, line in message.locations[:2])
            print(f"  {message.id!r}  ({where})")
    return 1 if check and total else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
