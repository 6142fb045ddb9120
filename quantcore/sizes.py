"""Byte counts as the app's messages word them: one wording for every limit and every size."""

from __future__ import annotations


def megabytes(size: float) -> str:
    """A size with its unit: "1,536.0 MB"."""
    return f"{size / 2**20:,.1f} MB"


def limit_megabytes(size: float) -> str:
    """A limit's number of MB: 512 MB as "512", a limit under 10 MB as "0.191" rather than "0"."""
    value = size / 2**20
    return f"{value:,.0f}" if value >= 10 else f"{value:.3g}"
