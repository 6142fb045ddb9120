"""The recipes made in this process, by folder and name, so every view of a session can show them.

A page's ``Source`` names the recipes its session made (``Source.recipes``);
``with_recipes`` turns those names, and the folder's saved recipes, into
recipe variants beside the five. Bounded: the oldest recipes are dropped
first, and a name that is gone is said so, not guessed.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable

from quantcore.load import ModelVariants, RecipeKey, VariantRecord
from quantcore.quantize.board import BoardEntry
from quantcore.quantize.build import RecipeResult
from quantcore.quantize.saved import saved_recipes

CAPACITY = 64

_LOCK = threading.Lock()
_MADE: OrderedDict[tuple[str, str], RecipeResult] = OrderedDict()
_SCORES: dict[tuple[str, str, str], BoardEntry] = {}  # (folder, name, the recipe's sha256) -> its board entry


def _folder(variants: ModelVariants) -> str:
    return os.path.realpath(variants.folder)


def remember(variants: ModelVariants, result: RecipeResult) -> None:
    """Keep a recipe made for this folder (replacing one of the same name)."""
    with _LOCK:
        key = (_folder(variants), result.recipe.name)
        _MADE.pop(key, None)
        _MADE[key] = result
        while len(_MADE) > CAPACITY:
            _MADE.popitem(last=False)


def keep_score(variants: ModelVariants, sha256: str, entry: BoardEntry) -> None:
    """Keep a recipe's board entry (for the very file it scored)."""
    with _LOCK:
        _SCORES[(_folder(variants), entry.recipe, sha256)] = entry
        while len(_SCORES) > CAPACITY:
            _SCORES.pop(next(iter(_SCORES)))


def score(variants: ModelVariants, name: str, sha256: str | None) -> BoardEntry | None:
    """The kept board entry of recipe ``name`` as it is now (None when not scored)."""
    with _LOCK:
        return _SCORES.get((_folder(variants), str(RecipeKey(name)), sha256 or ""))


def made(variants: ModelVariants, name: str) -> RecipeResult | None:
    """A recipe made for this folder in this process, by name (None when unknown or dropped)."""
    with _LOCK:
        return _MADE.get((_folder(variants), name))


def with_recipes(variants: ModelVariants, names: Iterable[str] = ()) -> tuple[ModelVariants, list[str]]:
    """The folder's saved recipes and the named session recipes, as recipe variants beside the five.

    Returns:
        The set, and notes (saved recipes that could not be read, names no longer kept).
    """
    records, notes = saved_recipes(variants)
    for name in names:
        result = made(variants, name)
        if result is None:
            notes.append(f"recipe {name!r} is no longer kept in this server; make it again")
            continue
        records[RecipeKey(name)] = result.record()
    merged: dict[RecipeKey, VariantRecord] = dict(records)
    return (variants.with_recipes(merged) if merged else variants), notes


def clear() -> None:
    """Forget every recipe made in this process."""
    with _LOCK:
        _MADE.clear()
        _SCORES.clear()
