"""Reading the JSON files of the catalog's folders with one behaviour: a one-line InputError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ecgka.errors import InputError
from ecgka.io import read_json


def _read_json_file(path: Path, what: str, hint: str) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"{path}: not found ({hint})")
    try:
        data = read_json(path)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: unreadable {what} ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: unreadable {what} (not a JSON object)")
    return data
