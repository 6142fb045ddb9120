"""Load a folder's variants once, through the module-level cache shared by every user of the process.

A variant that is missing is ``None``; one that fails to load records why, and
the others still load. Where an ONNX graph's input shape disagrees with
``model_card.json`` or the file's own metadata, the load carries a warning.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from quantcore import settings
from quantcore.backends import backend_for, forget_models
from quantcore.cache import CacheInfo, SingleFlightLRU
from quantcore.errors import (
    PathNotAllowedError,
    QuantcoreError,
    UnsafeModelError,
)
from quantcore.load.card import card_shape, input_shape_warnings, read_card
from quantcore.load.discover import MANIFEST_NAME, discover, scan_folder
from quantcore.load.files import LOADERS
from quantcore.load.input_declared import Declared
from quantcore.load.input_reading import read_input_specs
from quantcore.load.input_spec import InputSpec
from quantcore.load.keys import Key, RecipeKey, Status, VariantKey, VariantRecord, key_order
from quantcore.load.pulled import PulledVariants

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedFolder:
    """One load of a folder: what the cache keeps."""

    folder: Path
    stem: str | None
    trusted: bool
    records: dict[Key, VariantRecord]  # the five keys, then any recipe variants
    load_seconds: float
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # the files disagree with what describes them
    card: dict[str, Any] = field(default_factory=dict)  # model_card.json, read once with the folder
    confine_to: Path | None = None  # where the folder's files must resolve (default: the folder)
    inputs: dict[Key, InputSpec] = field(default_factory=dict)  # what each loaded variant takes and gives
    manifest: dict[Key, Declared] = field(default_factory=dict)  # what variants.json declares per variant
    input_override: dict[str, Any] = field(default_factory=dict)  # the page's, for every variant or one
    input_notes: tuple[str, ...] = ()  # variants whose input cannot be read or disagrees with the others'


class ModelVariants(Mapping[str, Any]):
    """The variants of a folder as a read-only ``{key: model or None}`` of the five keys, plus how the load went.

    The models are shared with the cache: the same objects on every hit.
    """

    def __init__(self, loaded: LoadedFolder, *, cache_hit: bool) -> None:
        self.loaded = loaded
        self.cache_hit = cache_hit

    def __getitem__(self, key: str) -> Any:
        return self.loaded.records[VariantKey.from_string(str(key))].model

    def __iter__(self) -> Iterator[str]:
        return (k.value for k in VariantKey)

    def __len__(self) -> int:
        return len(VariantKey)

    @property
    def folder(self) -> Path:
        return self.loaded.folder

    @property
    def records(self) -> Mapping[Key, VariantRecord]:
        """Every variant's record (loaded or not, and why) — the five, then recipe variants — read-only."""
        return MappingProxyType(self.loaded.records)

    def model(self, key: Key) -> Any:
        """The loaded model of any variant, recipe variants included (None when not loaded).

        Raises:
            KeyError: no such variant in this set.
        """
        return self.loaded.records[key].model

    def spec(self, key: Key) -> InputSpec | None:
        """What one loaded variant takes and gives (None when it is not loaded or cannot be fed)."""
        return self.loaded.inputs.get(key)

    @property
    def input_spec(self) -> InputSpec | None:
        """The folder's input: its float reference's spec (``onnx_float``, else ``pytorch_float``, else the first)."""
        inputs = self.loaded.inputs
        return next((inputs[k] for k in (VariantKey.ONNX_FLOAT, VariantKey.PYTORCH_FLOAT) if k in inputs),
                    next(iter(inputs.values()), None))  # fmt: skip

    def with_input(self, override: Mapping[str, Any]) -> ModelVariants:
        """This folder read with the page's input override (``{"*": {...}, "<key>": {...}}``), the cache untouched.

        Raises:
            ValueError: the override is not an object of objects.
        """
        if not all(isinstance(k, str) and isinstance(v, Mapping) for k, v in override.items()):
            raise ValueError("an input override maps '*' or a variant key to an object of input fields")
        if dict(override) == self.loaded.input_override:
            return self
        specs, notes = read_input_specs(self.loaded.records, card=self.loaded.card, manifest=self.loaded.manifest,
                                        override=override, trusted=self.loaded.trusted)  # fmt: skip
        loaded = replace(self.loaded, inputs=specs, input_override=dict(override), input_notes=tuple(notes))
        return ModelVariants(loaded, cache_hit=self.cache_hit)

    def with_recipes(self, recipes: Mapping[RecipeKey, VariantRecord]) -> ModelVariants:
        """This folder with recipe variants beside its five (the cached folder itself is left as it was)."""
        records = {k: r for k, r in self.loaded.records.items() if isinstance(k, VariantKey)}
        records.update(sorted(recipes.items(), key=lambda kv: key_order(kv[0])))
        inputs = {k: s for k, s in self.loaded.inputs.items() if isinstance(k, VariantKey)}
        loaded = self.loaded
        recipe_specs, _ = read_input_specs(
            recipes, card=loaded.card, manifest={}, override=loaded.input_override, trusted=loaded.trusted
        )
        loaded = replace(self.loaded, records=records, inputs={**inputs, **recipe_specs})
        return ModelVariants(loaded, cache_hit=self.cache_hit)

    @property
    def card(self) -> Mapping[str, Any]:
        """The folder's ``model_card.json`` (empty when it has none), read when the folder loaded."""
        return MappingProxyType(self.loaded.card)

    @property
    def confine_root(self) -> Path:
        """The folder every file of this load must resolve into (a pull's: its repo cache)."""
        return Path(os.path.realpath(self.loaded.confine_to or self.folder))

    def sidecar(self, name: str) -> Path | None:
        """``folder/name`` if it is a regular file resolving inside the folder's confines, else ``None``."""
        path = self.folder / name
        return path if os.path.lexists(path) and self.sidecar_refusal(name) is None else None

    def sidecar_refusal(self, name: str) -> str | None:
        """Why ``folder/name``, which is there, is not read ("it links outside this folder"); ``None`` if it
        is read or absent. Where a link points is looked up, never opened, and never said."""
        path = self.folder / name
        if not os.path.lexists(path):
            return None
        if not Path(os.path.realpath(path)).is_relative_to(self.confine_root):
            return "it links outside this folder"
        if not path.is_file():
            return "not a regular file"
        return None

    def __repr__(self) -> str:
        loaded = [str(k) for k, r in self.records.items() if r.status is Status.LOADED]
        return f"ModelVariants({str(self.folder)!r}, loaded={loaded}, cache_hit={self.cache_hit})"


# --------------------------------------------------------------------- loading


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    """What tells a file's bytes changed; ctime too, since ``cp -p`` rewrites in place and restores the mtime."""
    return stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns


def _load_variant(
    folder: Path, key: VariantKey, name: str, *, trusted: bool, confine_to: Path, scanned: bool
) -> VariantRecord:
    path = folder / name
    try:
        if not path.exists():
            if scanned:  # it was there when the folder was listed
                return VariantRecord(
                    key, Status.ERROR, file=name,
                    error=f"{name}: was removed while the folder was loading; select it again",
                )  # fmt: skip
            return VariantRecord(key, Status.MISSING, file=name, error="listed in the manifest but not found")
        if not Path(os.path.realpath(path)).is_relative_to(confine_to):
            raise PathNotAllowedError(f"{name}: is a link to a file outside this folder")
        before = path.stat()
        model, storage = LOADERS[key.format](path, trusted, confine_to)
        details = backend_for(model).describe(model)
        sha256 = _sha256(path)
        after = path.stat()
        if _identity(before) != _identity(after):
            # The model and the checksum may come from different files: show neither. The cache
            # keeps this under the old fingerprint, which no longer matches, so the next request reloads.
            return VariantRecord(
                key, Status.ERROR, file=name, error=f"{name}: changed while it was loading; select the folder again"
            )
        return VariantRecord(
            key, Status.LOADED, file=name, model=model, bytes=after.st_size,
            sha256=sha256, storage=storage, details=details,
        )  # fmt: skip
    except (UnsafeModelError, PathNotAllowedError) as exc:
        return VariantRecord(key, Status.REFUSED, file=name, error=str(exc))
    except QuantcoreError as exc:
        return VariantRecord(key, Status.ERROR, file=name, error=str(exc))
    except OSError as exc:
        return VariantRecord(key, Status.ERROR, file=name, error=f"{name}: {exc.strerror or 'cannot be read'}")
    except Exception as exc:  # a loader bug must not take the other variants down
        logger.exception("unexpected failure loading %s", path)
        return VariantRecord(key, Status.ERROR, file=name, error=f"{name}: unexpected {type(exc).__name__}")


def _load_folder(folder: Path, names: set[str], *, trusted: bool, confine_to: Path) -> LoadedFolder:
    started = time.perf_counter()
    found = discover(folder, names, confine_to=confine_to)
    stem, files, notes = found.stem, found.files, found.notes
    records = {
        key: _load_variant(folder, key, files[key], trusted=trusted, confine_to=confine_to, scanned=files[key] in names)
        if key in files
        else VariantRecord(key, Status.MISSING)
        for key in VariantKey
    }
    card = read_card(folder, names, confine_to, notes)
    warnings = input_shape_warnings(records, card_shape(card, notes))
    manifest = {k: Declared(MANIFEST_NAME, v["input"], v["output"]) for k, v in found.declared.items()}
    specs, spec_notes = read_input_specs(records, card=card, manifest=manifest, trusted=trusted)
    seconds = time.perf_counter() - started
    logger.info("loaded %s in %.2fs: %s", folder, seconds, {str(k): str(r.status) for k, r in records.items()})
    return LoadedFolder(
        folder, stem, trusted, records, seconds, tuple(notes), tuple(warnings), card, confine_to, specs, manifest,
        input_notes=tuple(spec_notes),
    )  # fmt: skip


def estimated_bytes(loaded: LoadedFolder) -> int:
    """What a loaded folder is taken to hold in memory: its loaded variant files' sizes (the parsed graph
    or state dict is about as large as its file; sessions and samples are read elsewhere, per request)."""
    return sum(record.bytes or 0 for record in loaded.records.values() if record.model is not None)


def _forget_runners(loaded: LoadedFolder) -> None:
    forget_models([record.model for record in loaded.records.values() if record.model is not None])


_CACHE: SingleFlightLRU[LoadedFolder] = SingleFlightLRU(
    settings.current().cache_size,
    weigh=estimated_bytes,
    budget_bytes=settings.current().cache_bytes,
    on_evict=_forget_runners,  # an evicted folder's sessions go with it, or it stays in memory
)


def load_model_variants(
    folder: str | os.PathLike[str] | PulledVariants, *, trusted: bool | None = None, confine_to: Path | None = None
) -> ModelVariants:
    """Load every variant in ``folder`` once; later calls return the cached models.

    Args:
        folder: the folder holding the variant files, or a Hub pull
            (``pull_model_variants``): that loads as an untrusted source confined
            to the repo's own cache folder.
        trusted: whether TorchScript and whole pickles may load. Default: yes for
            folders under the local models root (or with remote trust switched on).
        confine_to: folder that variant files (after symlinks) must lie in.
            Default: ``folder`` itself (a pull: its repo cache).

    Returns:
        A ``ModelVariants`` mapping each variant key to its model or ``None``.

    Raises:
        ModelNotFoundError: the folder does not exist or cannot be read.
    """
    current = settings.current()
    if isinstance(folder, PulledVariants):
        # The snapshot's files are links into the repo's blobs: that is where they must resolve.
        confine_to = confine_to if confine_to is not None else folder.repo_cache
        trusted = current.trust_remote_models if trusted is None else trusted
        folder = folder.folder
    resolved = Path(os.path.realpath(folder))
    if trusted is None:
        trusted = current.trust_remote_models or resolved.is_relative_to(current.models_root)
    confine = Path(os.path.realpath(confine_to)) if confine_to is not None else resolved
    stats = scan_folder(resolved)
    fingerprint = tuple(sorted((name, *_identity(stat)) for name, stat in stats.items()))
    info = _CACHE.info()
    if (info.capacity, info.budget_bytes) != (current.cache_size, current.cache_bytes):
        _CACHE.resize(current.cache_size, budget_bytes=current.cache_bytes)
    loaded, hit = _CACHE.get(
        (str(resolved), trusted, str(confine)),
        fingerprint,
        lambda: _load_folder(resolved, set(stats), trusted=trusted, confine_to=confine),
    )
    return ModelVariants(loaded, cache_hit=hit)


def cache_info() -> CacheInfo:
    """Hits, misses, loads, evictions, entries and capacity of the folder cache."""
    return _CACHE.info()


def cache_clear() -> None:
    """Forget every loaded folder (the next request loads from disk)."""
    _CACHE.clear()
