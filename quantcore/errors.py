"""Every error quantcore raises, under one root.

Each also inherits the built-in exception a caller would naturally catch, so
``except FileNotFoundError`` keeps working for code that knows nothing of us.
"""

from __future__ import annotations


class QuantcoreError(Exception):
    """Root of every error raised by quantcore."""


class ModelNotFoundError(QuantcoreError, FileNotFoundError):
    """A folder or model file does not exist or cannot be read."""


class PathNotAllowedError(QuantcoreError, PermissionError):
    """A path resolves outside the roots it is allowed to live in."""


class InvalidModelError(QuantcoreError, ValueError):
    """A file is not a model we can load: corrupt, truncated or of unknown layout."""


class ModelTooLargeError(InvalidModelError):
    """A file is over the configured size cap."""


class UnsafeModelError(QuantcoreError, ValueError):
    """Loading would run code from a source the operator has not trusted."""


class MissingDependencyError(QuantcoreError, ImportError):
    """A model needs a Python package that is not installed."""


class HubError(QuantcoreError, ConnectionError):
    """Pulling from a Hugging Face Hub endpoint failed."""


class InvalidRepoIdError(HubError, ValueError):
    """A repo id is not a valid Hugging Face Hub repo id."""


class RepoNotFoundError(HubError, FileNotFoundError):
    """The repo, revision or file does not exist (or is private and no token was given)."""


class GatedRepoError(HubError, PermissionError):
    """The repo needs accepted terms or a token with access."""


class HubUnreachableError(HubError):
    """The endpoint cannot be reached (and nothing usable is cached)."""


class DatasetError(QuantcoreError, ValueError):
    """A data set folder or file is missing or not in the expected format."""


class RevisionNotFoundError(RepoNotFoundError):
    """The repo exists but has no such branch, tag or commit."""


class HubFileNotFoundError(RepoNotFoundError):
    """The repo lists a file that the endpoint then cannot serve."""


class NoVariantFilesError(HubError, FileNotFoundError):
    """The repo (or its subfolder) holds no model variant files at that revision."""


class HubLimitError(HubError):
    """A pull was refused before downloading, or cut off, for going over a limit (size, file count, time, rate)."""


class HubOfflineError(HubUnreachableError):
    """Offline mode is on (HF_HUB_OFFLINE) and the snapshot asked for is not fully cached."""


class InvalidImageError(DatasetError):
    """An uploaded image is unreadable, or too large to decode safely."""


class NothingLoadedError(QuantcoreError, LookupError):
    """A view was asked for before any folder (or Hub repo) was loaded."""


class RecipeError(QuantcoreError, ValueError):
    """A quantization recipe that cannot be made: an option the format refuses, an unknown layer, no float model."""


class RunTimeoutError(QuantcoreError, TimeoutError):
    """Running a model went past the time limit of its request, and the run was cancelled."""


class UploadError(QuantcoreError, ValueError):
    """Uploaded files refused: a name or kind of file not taken, too many or too large, or no room left."""


class ServerBusyError(QuantcoreError, RuntimeError):
    """Heavy work refused for now: the user already has their share of it queued, or no slot came free in time."""
