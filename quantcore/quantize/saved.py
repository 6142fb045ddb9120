"""Recipes kept on disk: ``<dir>/<name>/model.onnx`` + ``recipe.json``, and a folder's ``recipes/`` loaded back.

"Save to folder" writes under a trusted local folder's ``recipes/``; the next
load of that folder finds them there and they join the set as recipe
variants, each read like any ONNX variant (size-capped, confined to the
folder, checked by onnx).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from quantcore import settings
from quantcore.backends import backend_for
from quantcore.cache import SingleFlightLRU
from quantcore.errors import PathNotAllowedError, QuantcoreError, RecipeError
from quantcore.load import ModelVariants, RecipeKey, Status, VariantRecord, load_onnx_model
from quantcore.quantize.build import RecipeResult, manifest_text
from quantcore.quantize.recipe import NAME_PATTERN, Recipe

logger = logging.getLogger(__name__)

RECIPES_DIR = "recipes"
MODEL_NAME = "model.onnx"
MANIFEST_NAME = "recipe.json"
MAX_SAVED = 64  # recipes read from one folder, at most


def write_recipe(result: RecipeResult, directory: str | os.PathLike[str]) -> Path:
    """Write ``directory/<name>/model.onnx`` and ``recipe.json``; returns that folder (replaced if it existed)."""
    target = Path(directory) / result.recipe.name
    target.mkdir(parents=True, exist_ok=True)
    (target / MODEL_NAME).write_bytes(result.data)
    (target / MANIFEST_NAME).write_text(manifest_text(result))
    return target


def save_to_folder(variants: ModelVariants, result: RecipeResult) -> Path:
    """Save a recipe under its folder's ``recipes/`` — trusted local folders only.

    Raises:
        PathNotAllowedError: the folder is not a trusted folder under the local models root.
    """
    folder = Path(os.path.realpath(variants.folder))
    if not variants.loaded.trusted or not folder.is_relative_to(settings.current().models_root):
        raise PathNotAllowedError("recipes are saved only into trusted local folders under the models root")
    recipes = folder / RECIPES_DIR
    if recipes.is_symlink() or (recipes / result.recipe.name).is_symlink():
        raise PathNotAllowedError("the folder's recipes/ is a link; nothing written")
    return write_recipe(result, recipes)


def _read_one(folder: Path, confine: Path) -> tuple[RecipeKey, VariantRecord]:
    name = folder.name
    key = RecipeKey(name)
    model_path, manifest_path = folder / MODEL_NAME, folder / MANIFEST_NAME
    for path in (model_path, manifest_path):
        if not path.is_file() or not Path(os.path.realpath(path)).is_relative_to(confine):
            raise PathNotAllowedError(f"{RECIPES_DIR}/{name}/{path.name}: missing, or a link out of the folder")
    try:
        manifest = json.loads(manifest_path.read_text()[:1_000_000])
        recipe = Recipe.from_dict(manifest["recipe"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RecipeError(f"{RECIPES_DIR}/{name}/{MANIFEST_NAME}: not a recipe ({exc})") from None
    model = load_onnx_model(model_path, data_root=confine)
    data = model_path.read_bytes()
    details = {**backend_for(model).describe(model), "recipe": recipe.as_dict(), "saved": True}
    record = VariantRecord(key, Status.LOADED, file=f"{RECIPES_DIR}/{name}/{MODEL_NAME}", model=model,
                           bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), storage="onnx",
                           details=details)  # fmt: skip
    return key, record


def _listing(base: Path) -> tuple[tuple[str, int, int, int], ...]:
    found = []
    for entry in sorted(base.iterdir())[:MAX_SAVED]:
        for name in (MODEL_NAME, MANIFEST_NAME):
            try:
                stat = (entry / name).stat()
            except OSError:
                continue
            found.append((f"{entry.name}/{name}", stat.st_size, stat.st_mtime_ns, stat.st_ino))
    return tuple(found)


_SAVED: SingleFlightLRU[tuple[dict[RecipeKey, VariantRecord], list[str]]] = SingleFlightLRU(8)


def saved_recipes(variants: ModelVariants) -> tuple[dict[RecipeKey, VariantRecord], list[str]]:
    """The folder's saved recipes as recipe variant records, and notes on any that could not be read.

    Read once per listing of ``recipes/`` (names, sizes, times): a save or an edit is seen on the next call.
    """
    base = variants.folder / RECIPES_DIR
    confine = variants.confine_root
    if not base.is_dir() or not Path(os.path.realpath(base)).is_relative_to(confine):
        return {}, []
    records, notes = _SAVED.get((str(base), str(confine)), _listing(base), lambda: _read_all(base, confine))[0]
    return dict(records), list(notes)


def _read_all(base: Path, confine: Path) -> tuple[dict[RecipeKey, VariantRecord], list[str]]:
    records: dict[RecipeKey, VariantRecord] = {}
    notes: list[str] = []
    for entry in sorted(base.iterdir())[:MAX_SAVED]:
        if not entry.is_dir() or not NAME_PATTERN.match(entry.name):
            continue
        try:
            key, record = _read_one(entry, confine)
            records[key] = record
        except QuantcoreError as exc:
            notes.append(str(exc))
        except OSError as exc:
            notes.append(f"{RECIPES_DIR}/{entry.name}: {exc.strerror or 'cannot be read'}")
    return records, notes


def read_manifest(path: str | os.PathLike[str]) -> tuple[Recipe, dict[str, Any]]:
    """A ``recipe.json``'s recipe and the whole manifest.

    Raises:
        RecipeError: not a recipe file.
    """
    try:
        manifest = json.loads(Path(path).read_text())
        return Recipe.from_dict(manifest["recipe"]), manifest
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, RecipeError):
            raise
        raise RecipeError(f"{path}: not a recipe.json ({exc})") from None
