"""A loaded folder as a handle: what was loaded, named so it can be loaded again — never a server path.

A ``Source`` is a folder under the models root, a Hub repo pinned to the
commit it resolved to, or a session's upload (named by its id and file names;
it opens only for the session that made it). Pages keep one per browser
session and API clients send one back (or a folder name, or a summary holding
one); ``open_source`` turns it into the loaded variants through the same cache
every load uses, and re-checks it like any client input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from quantcore import paths, settings
from quantcore.errors import NothingLoadedError, PathNotAllowedError, UploadError
from quantcore.load import uploads
from quantcore.load.folder import ModelVariants, load_model_variants
from quantcore.load.pulled import PulledVariants


class SourceKind(StrEnum):
    LOCAL = "local"
    HUB = "hub"
    UPLOAD = "upload"


@dataclass(frozen=True)
class Source:
    """Where a loaded folder came from.

    Attributes:
        kind: a local folder or a Hub repo.
        folder: local: the folder relative to the models root (``""`` is the root).
        repo_id, commit, subfolder, revision: Hub: the repo, the commit it was
            pulled at, the folder in it, and the revision the user asked for.
        upload, files: Upload: the upload's id and the names of its files (what the page shows).
        input: the page's input override, ``{"*" or key: {field: value}}``
            (``ModelVariants.with_input``), kept with the handle so every view feeds alike.
        recipes: names of the recipe variants this session made for the folder, shown by every view.
    """

    kind: SourceKind
    folder: str = ""
    repo_id: str | None = None
    commit: str | None = None
    subfolder: str | None = None
    revision: str | None = None
    upload: str | None = None
    files: tuple[str, ...] = ()
    input: Mapping[str, Any] | None = None
    recipes: tuple[str, ...] = ()

    def with_input(self, override: Mapping[str, Any] | None) -> Source:
        """The same source read with another input override (None or empty: as the folder says)."""
        return replace(self, input=dict(override) if override else None)

    def with_recipe(self, name: str) -> Source:
        """The same source, also showing the session's recipe ``name`` (last, once)."""
        return replace(self, recipes=(*[r for r in self.recipes if r != name], name))

    @classmethod
    def local(cls, folder: str | Sequence[str]) -> Source:
        """A folder under the models root, from a relative path or its segments."""
        text = folder if isinstance(folder, str) else "/".join(folder)
        text = "" if text.strip() in (".", "./") else text
        # Only a trailing "/" goes: a leading one is an absolute path, which resolve_folder refuses.
        return cls(SourceKind.LOCAL, folder=text.strip().rstrip("/") or text.strip())

    @classmethod
    def from_pulled(cls, pulled: PulledVariants) -> Source:
        """The source of a Hub pull, pinned to the commit it resolved to."""
        return cls(SourceKind.HUB, repo_id=pulled.repo_id, commit=pulled.commit, subfolder=pulled.subfolder,
                   revision=pulled.revision_requested)  # fmt: skip

    @classmethod
    def from_upload(cls, upload: uploads.Upload) -> Source:
        """The source of a session's upload."""
        return cls(SourceKind.UPLOAD, upload=upload.id, files=upload.files)

    @property
    def label(self) -> str:
        """How the page names it: the folder, ``repo@commit/subfolder``, or an upload's file names."""
        if self.kind is SourceKind.UPLOAD:
            return "your upload (" + ", ".join(self.files) + ")"
        if self.kind is SourceKind.HUB:
            return f"{self.repo_id}@{(self.commit or self.revision or 'main')[:10]}/{self.subfolder or ''}".rstrip("/")
        return self.folder or "the models folder"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, and what ``from_client`` reads back."""
        if self.kind is SourceKind.HUB:
            shown = {"kind": str(self.kind), "repo_id": self.repo_id, "commit": self.commit,
                     "subfolder": self.subfolder, "revision": self.revision}  # fmt: skip
        elif self.kind is SourceKind.UPLOAD:
            shown = {"kind": str(self.kind), "upload": self.upload, "files": list(self.files)}
        else:
            shown = {"kind": str(self.kind), "folder": self.folder}
        shown = {**shown, "input": dict(self.input)} if self.input else shown
        return {**shown, "recipes": list(self.recipes)} if self.recipes else shown

    @classmethod
    def from_client(cls, value: Any) -> Source | None:
        """What a client sent as a source: a ``Source``, its dict, a summary holding one, or a folder name.

        Returns:
            The source, or ``None`` when nothing is named (nothing loaded yet).

        Raises:
            PathNotAllowedError: a value that cannot name a source.
        """
        if value is None or isinstance(value, Source):
            return value
        if isinstance(value, dict):
            if isinstance(value.get("source"), dict):
                return cls.from_client(value["source"])
            found = cls._from_dict(value)
            return replace(found, recipes=_recipes(value.get("recipes"))) if found is not None else None
        if isinstance(value, str):
            return cls.local(value) if value.strip() else None
        if isinstance(value, list) and all(isinstance(part, str) for part in value):
            return cls.local(value) if value else None
        raise PathNotAllowedError("a source must be a folder name, a list of its segments, or a summary")

    @classmethod
    def _from_dict(cls, value: dict[str, Any]) -> Source | None:
        override = _override(value.get("input"))
        if value.get("kind") == SourceKind.UPLOAD or "upload" in value:
            return cls._upload_from_dict(value, override)
        hub = value.get("hub") if isinstance(value.get("hub"), dict) else None
        if hub is None and value.get("kind") == SourceKind.HUB:
            hub = value
        if hub is not None and hub.get("repo_id"):
            return cls(SourceKind.HUB, repo_id=_text(hub.get("repo_id")), commit=_text(hub.get("commit")),
                       subfolder=_text(hub.get("subfolder")), input=override,
                       revision=_text(hub.get("revision", hub.get("revision_requested"))))  # fmt: skip
        folder = value.get("folder")
        found = cls.from_client(folder) if folder is not None else None
        return found.with_input(override) if found is not None else None

    @classmethod
    def _upload_from_dict(cls, value: dict[str, Any], override: dict[str, Any] | None) -> Source:
        upload, files = value.get("upload"), value.get("files", [])
        if not uploads.is_upload_id(upload):
            raise PathNotAllowedError("an upload source names its upload by the id the upload returned")
        if not isinstance(files, list) or len(files) > uploads.MAX_FILES:
            raise PathNotAllowedError("an upload source's files are a list of its file names")
        try:
            names = tuple(uploads.check_name(name) for name in files)
        except UploadError as exc:
            raise PathNotAllowedError(str(exc)) from None
        return cls(SourceKind.UPLOAD, upload=upload, files=names, input=override)


def _recipes(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and 0 < len(v) <= 64 for v in value):
        raise PathNotAllowedError("a source's recipes are a list of recipe names")
    return tuple(dict.fromkeys(value))


def _override(value: Any) -> dict[str, Any] | None:
    if value is None or value == {}:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, dict) for k, v in value.items()):
        raise PathNotAllowedError("a source's input override maps '*' or a variant key to an object of input fields")
    return value


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PathNotAllowedError("a Hub source's fields must be text")
    return value


def open_source(source: Source | Any) -> ModelVariants:
    """The loaded variants of a source, through the folder cache (a Hub source pulls from the cache first).

    Args:
        source: a ``Source``, or anything ``Source.from_client`` reads.

    Raises:
        NothingLoadedError: nothing is named (nothing loaded yet).
        PathNotAllowedError, ModelNotFoundError: a local folder outside the models root, or missing;
            an upload of another session, or one removed.
        HubError: as ``pull_model_variants`` (the pinned commit is served from the cache when it is there).
    """
    resolved = Source.from_client(source)
    if resolved is None:
        raise NothingLoadedError("nothing is loaded yet")
    variants = _open(resolved)
    try:
        return variants.with_input(resolved.input) if resolved.input else variants
    except ValueError as exc:
        raise PathNotAllowedError(f"the source's input override is not usable: {exc}") from None


def _open(resolved: Source) -> ModelVariants:
    if resolved.kind is SourceKind.HUB:
        from quantcore.load.hub import pull_model_variants  # imported on use: it brings in huggingface_hub

        # The commit pins exactly what was loaded; a cached snapshot is re-used without a request.
        pulled = pull_model_variants(resolved.repo_id or "", revision=resolved.commit or resolved.revision,
                                     subfolder=resolved.subfolder)  # fmt: skip
        return load_model_variants(pulled)
    if resolved.kind is SourceKind.UPLOAD:
        # Another session's upload is refused as if it never was; a visitor's files are never trusted.
        folder = uploads.upload_folder(resolved.upload, owner=uploads.current_requester())
        return load_model_variants(folder, trusted=settings.current().trust_remote_models, confine_to=folder)
    return load_model_variants(paths.resolve_folder(resolved.folder))
