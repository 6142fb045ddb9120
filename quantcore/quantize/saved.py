"""Recipes kept on disk: ``<dir>/<name>/model.onnx`` + ``recipe.json``, and a folder's ``recipes/`` loaded back.

"Save to folder" writes under a trusted local folder's ``recipes/``; the next
load of that folder finds them there and they join the set as recipe
variants, each read like any ONNX variant (size-capped, confined to the
folder, checked by onnx).

A ``recipes/<name>/`` holding only a ``recipe.json`` whose ``variant`` names
one of the folder's own five is that variant's recipe (the bundled int8 and
uint8 files ship theirs so): the variant is the file it makes, so it joins no
set as a second copy; ``variant_recipes`` lists them, and making the recipe
again is making the variant again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantcore import settings
from quantcore.backends import backend_for
from quantcore.cache import SingleFlightLRU
from quantcore.errors import PathNotAllowedError, QuantcoreError, RecipeError
from quantcore.load import ModelVariants, RecipeKey, Status, VariantKey, VariantRecord, load_onnx_model
from quantcore.quantize.build import RecipeResult, manifest_text
from quantcore.quantize.recipe import NAME_PATTERN, Recipe

logger = logging.getLogger(__name__)

RECIPES_DIR = "recipes"
MODEL_NAME = "model.onnx"
MANIFEST_NAME = "recipe.json"
MAX_SAVED = 64  # recipes read from one folder, at most
MAX_MANIFEST_CHARS = 1_000_000


@dataclass(frozen=True)
class VariantRecipe:
    """The recipe one of the folder's own variants was made by (``recipes/<name>/recipe.json``, no model).

    Attributes:
        key: the variant it makes.
        file: the recipe.json, relative to the folder.
        recipe: the recipe (``make_recipe`` makes the variant again).
        manifest: the whole recipe.json.
        current: the variant's file now is the one the recipe.json describes (same sha256).
    """

    key: VariantKey
    file: str
    recipe: Recipe
    manifest: dict[str, Any] = field(repr=False)
    current: bool = True

    def reproduced_by(self, model: Any, variants: ModelVariants) -> bool:
        """``model`` (an ``onnx.ModelProto`` made by this recipe) has the variant's graph, node for node and
        initializer for initializer (the variant's file may add metadata)."""
        theirs = variants.model(self.key)
        return theirs is not None and model.graph.SerializeToString() == theirs.graph.SerializeToString()


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


def _manifest(path: Path, name: str) -> tuple[Recipe, dict[str, Any]]:
    try:
        manifest = json.loads(path.read_text()[:MAX_MANIFEST_CHARS])
        return Recipe.from_dict(manifest["recipe"]), manifest
    except (ValueError, KeyError, TypeError) as exc:
        raise RecipeError(f"{RECIPES_DIR}/{name}/{MANIFEST_NAME}: not a recipe ({exc})") from None


def _confined(path: Path, confine: Path, name: str) -> None:
    if not path.is_file() or not Path(os.path.realpath(path)).is_relative_to(confine):
        raise PathNotAllowedError(f"{RECIPES_DIR}/{name}/{path.name}: missing, or a link out of the folder")


def _read_one(folder: Path, confine: Path) -> tuple[RecipeKey, VariantRecord]:
    name = folder.name
    key = RecipeKey(name)
    model_path, manifest_path = folder / MODEL_NAME, folder / MANIFEST_NAME
    for path in (model_path, manifest_path):
        _confined(path, confine, name)
    recipe, _ = _manifest(manifest_path, name)
    model = load_onnx_model(model_path, data_root=confine)
    data = model_path.read_bytes()
    details = {**backend_for(model).describe(model), "recipe": recipe.as_dict(), "saved": True}
    record = VariantRecord(key, Status.LOADED, file=f"{RECIPES_DIR}/{name}/{MODEL_NAME}", model=model,
                           bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), storage="onnx",
                           details=details)  # fmt: skip
    return key, record


def _read_variant_recipe(folder: Path, confine: Path) -> VariantRecipe | None:
    """A model-less recipe folder's recipe, when its recipe.json names the variant it makes (else None)."""
    name = folder.name
    manifest_path = folder / MANIFEST_NAME
    if os.path.lexists(folder / MODEL_NAME) or not manifest_path.is_file():
        return None
    _confined(manifest_path, confine, name)
    recipe, manifest = _manifest(manifest_path, name)
    made = manifest.get("variant")
    if not isinstance(made, dict) or "key" not in made:
        return None
    try:
        key = VariantKey.from_string(str(made["key"]))
    except ValueError as exc:
        raise RecipeError(f"{RECIPES_DIR}/{name}/{MANIFEST_NAME}: {exc}") from None
    return VariantRecipe(key, f"{RECIPES_DIR}/{name}/{MANIFEST_NAME}", recipe, manifest)


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


_Saved = tuple[dict[RecipeKey, VariantRecord], list[str], list[VariantRecipe]]
_SAVED: SingleFlightLRU[_Saved] = SingleFlightLRU(8)


def _saved(variants: ModelVariants) -> _Saved:
    """Read once per listing of ``recipes/`` (names, sizes, times): a save or an edit is seen on the next call."""
    base = variants.folder / RECIPES_DIR
    confine = variants.confine_root
    if not base.is_dir() or not Path(os.path.realpath(base)).is_relative_to(confine):
        return {}, [], []
    return _SAVED.get((str(base), str(confine)), _listing(base), lambda: _read_all(base, confine))[0]


def saved_recipes(variants: ModelVariants) -> tuple[dict[RecipeKey, VariantRecord], list[str]]:
    """The folder's saved recipes as recipe variant records, and notes on any that could not be read
    (or that describe one of the folder's variants as it no longer is)."""
    records, notes, _ = _saved(variants)
    stale = [f"{r.file} describes {r.key} as it was made; {r.key}'s file has changed since"
             for r in variant_recipes(variants) if not r.current]  # fmt: skip
    return dict(records), [*notes, *stale]


def variant_recipes(variants: ModelVariants) -> list[VariantRecipe]:
    """The recipes the folder's own variants were made by (model-less ``recipes/<name>/recipe.json``)."""
    found = []
    for made in _saved(variants)[2]:
        record = variants.records.get(made.key)
        expected = made.manifest["variant"].get("sha256")
        current = record is not None and record.status is Status.LOADED and record.sha256 == expected
        found.append(VariantRecipe(made.key, made.file, made.recipe, made.manifest, current))
    return found


def _read_all(base: Path, confine: Path) -> _Saved:
    records: dict[RecipeKey, VariantRecord] = {}
    notes: list[str] = []
    made_by: list[VariantRecipe] = []
    for entry in sorted(base.iterdir())[:MAX_SAVED]:
        if not entry.is_dir() or not NAME_PATTERN.match(entry.name):
            continue
        try:
            if (variant_recipe := _read_variant_recipe(entry, confine)) is not None:
                made_by.append(variant_recipe)
                continue
            key, record = _read_one(entry, confine)
            records[key] = record
        except QuantcoreError as exc:
            notes.append(str(exc))
        except OSError as exc:
            notes.append(f"{RECIPES_DIR}/{entry.name}: {exc.strerror or 'cannot be read'}")
    return records, notes, made_by


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
