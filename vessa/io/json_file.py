"""Reading a JSON file that a user may have written: a missing or unreadable file is one error
that names the file and what it should have been."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vessa.errors import InputError, VessaError


def read_json(path: str | os.PathLike, what: str, error: type[VessaError] = InputError) -> Any:
    """The JSON content of `path`; `error` ("<what> not found: PATH", or "PATH: not a readable
    JSON <what> (why)") when the file is missing or is not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as reason:
        raise error(f"{path}: not a readable JSON {what} ({reason})") from None
