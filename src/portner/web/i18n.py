"""Norwegian bokmål and English for the web apps.

Each app keeps its words in `portner.web.messages.<app>` as MESSAGES = {key: {"nb": ..., "en": ...}};
a test checks that every key has both languages and that no two apps define the same key. Text
may carry {name} placeholders, filled by `translate(..., name=value)`.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from typing import Any

from starlette.requests import Request

LANGUAGES = ("nb", "en")
DEFAULT_LANGUAGE = "nb"
LANGUAGE_COOKIE = "portner_lang"


@lru_cache(maxsize=1)
def catalog() -> dict[str, dict[str, str]]:
    """Every app's messages, merged (a duplicate key is an error, not an override)."""
    from portner.web import messages

    merged: dict[str, dict[str, str]] = {}
    for info in sorted(pkgutil.iter_modules(messages.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{messages.__name__}.{info.name}")
        for key, texts in getattr(module, "MESSAGES", {}).items():
            if key in merged:
                raise ValueError(f"message key {key!r} defined twice (again in {info.name})")
            merged[key] = texts
    return merged


def translate(key: str, lang: str, /, **params: Any) -> str:
    texts = catalog().get(key)
    if texts is None:
        # A missing key shows itself instead of crashing the page; the catalog test catches it.
        return key
    text = texts.get(lang) or texts[DEFAULT_LANGUAGE]
    return text.format(**params) if params else text


def pick_language(request: Request) -> str:
    """?lang=, then the cookie, then Accept-Language, then bokmål."""
    asked = request.query_params.get("lang")
    if asked in LANGUAGES:
        return asked
    cookie = request.cookies.get(LANGUAGE_COOKIE)
    if cookie in LANGUAGES:
        return cookie
    for part in request.headers.get("accept-language", "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith(("nb", "no", "nn")):
            return "nb"
        if tag.startswith("en"):
            return "en"
    return DEFAULT_LANGUAGE
