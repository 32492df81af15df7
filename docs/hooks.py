"""MkDocs hook: replace `<!-- generate: NAME -->` in a page with docs/gen_reference.py's NAME."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen_reference import GENERATORS

MARK = re.compile(r"^<!-- generate: (" + "|".join(GENERATORS) + r") -->$", re.MULTILINE)


def on_page_markdown(markdown: str, **_: Any) -> str:
    return MARK.sub(lambda m: GENERATORS[m.group(1)](), markdown)
