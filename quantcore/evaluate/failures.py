"""A failed model run in the user's words: the runtime's own message, trimmed, without server paths,
naming the variant, and the fix when the message shows one (most often: the input is declared wrongly).
"""

from __future__ import annotations

import re

from quantcore.load import Key

MAX_MESSAGE_CHARS = 300
_PATH = re.compile(r"(?<![\w.])/(?:[^\s/:'\"()\[\]]+/)+([^\s/:'\"()\[\]]+)")
_SPACES = re.compile(r"\s+")
_HINTS = (
    (re.compile(r"channels|invalid dimensions|shape|size mismatch|rank|Expected", re.IGNORECASE),
     "the input is fed otherwise than the model takes it: check its layout (NCHW or NHWC), size and channels — "
     "declare them in model_card.json or variants.json (\"input\": {\"layout\": \"NHWC\"}), or in the Input section"),
    (re.compile(r"type|dtype|tensor\(uint8\)|tensor\(float", re.IGNORECASE),
     "the input's dtype differs from what the model takes: declare \"dtype\" in the input spec"),
)  # fmt: skip


def runtime_message(exc: BaseException) -> str:
    """The runtime's message as one trimmed line, with every absolute path cut to its last part."""
    text = _SPACES.sub(" ", str(exc)).strip() or type(exc).__name__
    text = _PATH.sub(r"\1", text)
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def fix_hint(message: str) -> str | None:
    """What the user can do about a failure with this message, when the message shows it."""
    return next((hint for pattern, hint in _HINTS if pattern.search(message)), None)


def failure_note(key: Key, exc: BaseException, *, what: str = "failed while running") -> str:
    """``"onnx_int8: failed while running — <message> (fix) — skipped"``: for a view's notes."""
    message = runtime_message(exc)
    hint = fix_hint(message)
    return f"{key}: {what} — {message}" + (f". Fix: {hint}" if hint else "") + " — skipped"
