"""What a report holds: the variant table, the status, and every view computed so far for one folder.

``computed_report`` reads which views were computed from the results cache
(``results_cache.computed``: by the folder's fingerprint, so an edited folder
starts empty) and turns each into a section of figures and tables
(``sections``, through the same ``tables`` and ``figures`` functions the tabs use). ``standard_report``
first computes the standard views itself (layers, weights, per-layer error,
predictions and flips, accuracy and speed on the samples), for the command line.
Rendering lives in ``html`` and ``archive``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace
from importlib import metadata
from typing import TYPE_CHECKING, Any

from quantcore.errors import QuantcoreError, RunTimeoutError
from quantcore.evaluate.flips import folder_flips
from quantcore.evaluate.inputs import FolderInputs, SampleSet, folder_inputs, load_test_set
from quantcore.evaluate.scorecard import build_scorecard
from quantcore.evaluate.speed import DEFAULT_RUNS
from quantcore.inspect.drift import DEFAULT_BATCH_SIZE, DEFAULT_IMAGES, cached_layer_drift
from quantcore.inspect.layer_table import layer_table
from quantcore.integer.view import cached_integer_view
from quantcore.load import ModelVariants, get_model_summary, results_cache
from quantcore.quantize.sweep import cached_sweep, computed_sweeps
from quantcore.report import tables
from quantcore.report.sections import (
    Section,
    Table,
    drift_section,
    integer_section,
    layers_section,
    predictions_section,
    recipes_section,
    scorecard_section,
    sweep_section,
    weights_section,
)

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], None]
# The libraries whose versions decide the numbers (read from their metadata: nothing is imported for it).
VERSIONED = ("onnxruntime", "onnx", "torch", "numpy", "plotly", "gradio")


@dataclass(frozen=True)
class Report:
    """Everything a report shows, ready to render (``html.report_html``) or archive (``archive.tables_zip``)."""

    model: str
    source: str
    status: str
    summary: dict[str, Any]
    variants: Table
    sections: tuple[Section, ...]
    created: str
    machine: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def all_tables(self) -> list[tuple[str, Table]]:
        """(section key, table) for every table, the variant table first under ``overview``."""
        return [("overview", self.variants)] + [(s.key, t) for s in self.sections for t in s.tables]


# ---------------------------------------------------------------- about


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What the numbers were measured on: OS, CPU, cores and Python."""
    return {
        "os": platform.platform(),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    """Installed versions of the libraries behind the numbers ("not installed" when absent)."""
    found = {}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def summary_status(summary: Mapping[str, Any]) -> str:
    """A status line for a summary (Markdown): how many variants loaded, and why any did not."""
    variants = summary.get("variants") or {}
    loaded = [k for k, v in variants.items() if v.get("status") == "loaded"]
    failed = [(k, v) for k, v in variants.items() if v.get("status") in ("error", "refused")]
    lines = [f"**Loaded {len(loaded)} of {len(loaded) + len(failed)} variants**: {', '.join(loaded) or 'none'}"]
    lines += [f"- {k}: {v.get('status')} — {v.get('error') or 'no reason given'}" for k, v in failed]
    return "\n".join(lines)


def source_text(summary: Mapping[str, Any]) -> str:
    """Where the variants came from, as the summary names it: a Hub repo (at its commit) or a folder."""
    source = summary.get("source")
    if isinstance(source, Mapping) and source.get("kind") == "hub":
        text = str(source.get("repo_id") or "")
        commit = source.get("commit") or source.get("revision")
        text += f"@{str(commit)[:12]}" if commit else ""
        return text + (f"/{source['subfolder']}" if source.get("subfolder") else "")
    if isinstance(source, Mapping) and source.get("folder") not in (None, ""):
        return str(source["folder"])
    return str(summary.get("folder") or summary.get("stem") or "the models folder")


# ---------------------------------------------------------------- report


_KEYS = {"Layers": "layers", "Weights": "weights", "Per-layer error": "layer_error", "Predictions": "predictions",
         "Accuracy and speed": "scorecard", "Recipe variants": "recipes", "Integer layers": "integer",
         "Sensitivity sweep": "sweep"}  # fmt: skip


def _guarded(title: str, make: Callable[[], Section | None]) -> Section | None:
    """A section, or one saying why it could not be made: one failing view must not lose the others."""
    try:
        return make()
    except RunTimeoutError:
        raise
    except (QuantcoreError, ValueError, IndexError) as exc:
        return Section(_KEYS.get(title, "view"), title, (f"not included: {exc}",))
    except Exception as exc:
        logger.exception("the report's %s section failed", title)
        return Section(_KEYS.get(title, "view"), title, (f"not included: {type(exc).__name__}",))


# Findings first (where quantization loses, what it costs), the reading of every layer after.
ORDER = ("layer_error", "scorecard", "predictions", "recipes", "sweep", "integer", "layers", "weights")


def _order(section: Section) -> int:
    return next((i for i, prefix in enumerate(ORDER) if section.key.startswith(prefix)), len(ORDER))


def _sample_sets(done: list[tuple[str, Hashable]], inputs: FolderInputs) -> list[SampleSet]:
    """The sample sets every variant's logits were computed over: the folder's samples, or a test set by its path."""
    keys = list(dict.fromkeys(s[1] for view, s in done if view == "logits" and isinstance(s, tuple) and len(s) > 1))
    sets = []
    for key in keys:
        if inputs.samples is not None and key == inputs.samples.key:
            sets.append(inputs.samples)
        elif isinstance(key, tuple) and key and key[0] == "test set":
            try:
                sets.append(load_test_set(str(key[1]), inputs.spec))
            except (QuantcoreError, OSError) as exc:  # moved or edited since: left out of the report
                logger.info("test set %s left out of the report: %s", key[1], exc)
    return sets


def computed_report(
    variants: ModelVariants,
    *,
    summary: dict[str, Any] | None = None,
    status: str | None = None,
    created: dt.datetime | None = None,
) -> Report:
    """The report of a loaded folder: its variant table, status, and every view computed so far for it.

    Args:
        variants: the loaded folder (with any recipe variants the views showed).
        summary: the summary as shown (default: ``get_model_summary(variants)``).
        status: the status as shown, Markdown (default: one made from the summary).
        created: when (default: now, UTC).

    Returns:
        A ``Report``; a view that cannot be shown again is a section saying why.

    Raises:
        RunTimeoutError: the request's time ran out (a view evicted from the cache is computed again).
    """
    summary = summary if summary is not None else get_model_summary(variants)
    done = results_cache.computed(variants)
    views = {view: [s for v, s in done if v == view] for view, _ in done}
    sections: list[Section | None] = []
    if "layers" in views:
        sections += [_guarded("Layers", lambda: layers_section(layer_table(variants))),
                     _guarded("Weights", lambda: weights_section(layer_table(variants)))]  # fmt: skip
    for images, batch in dict.fromkeys(s for s in views.get("drift", []) if isinstance(s, tuple) and len(s) == 2):
        sections.append(_guarded("Per-layer error", lambda i=images, b=batch: drift_section(
            cached_layer_drift(variants, images=i, batch_size=b))))  # fmt: skip
    if "logits" in views:
        inputs = folder_inputs(variants)
        sample_sets = _sample_sets(done, inputs)
        samples = inputs.samples
        if samples is not None and samples in sample_sets:
            sections.append(_guarded("Predictions", lambda: predictions_section(
                variants, samples, inputs.spec, folder_flips(variants, samples, inputs.spec))))  # fmt: skip
        speeds = [s for s in views.get("speed", []) if isinstance(s, tuple) and s]
        if speeds:
            runs = int(speeds[-1][0])
            for sample_set in sample_sets:
                sections.append(_guarded("Accuracy and speed", lambda s=sample_set: scorecard_section(
                    build_scorecard(variants, s, inputs.spec, runs=runs))))  # fmt: skip
    for (images,) in dict.fromkeys(s for s in views.get("integer", []) if isinstance(s, tuple) and len(s) == 1):
        sections.append(_guarded("Integer layers", lambda i=images: integer_section(
            cached_integer_view(variants, images=i))))  # fmt: skip
    sections.append(_guarded("Recipe variants", lambda: recipes_section(variants)))
    for recipe, images in computed_sweeps(variants):
        sections.append(_guarded("Sensitivity sweep", lambda r=recipe, i=images: sweep_section(
            cached_sweep(variants, r, images=i)[0])))  # fmt: skip
    when = created or dt.datetime.now(dt.UTC)
    return Report(
        model=str(summary.get("stem") or source_text(summary)),
        source=source_text(summary),
        status=status if status is not None else summary_status(summary),
        summary=summary,
        variants=Table("variants", "Variants", tables.variant_rows(summary, variants.card)),
        sections=tuple(sorted((s for s in sections if s is not None), key=_order)),
        created=when.isoformat(timespec="seconds"),
        machine=machine(),
        versions=versions(),
    )


def standard_report(
    variants: ModelVariants,
    *,
    images: int = DEFAULT_IMAGES,
    runs: int = DEFAULT_RUNS,
    progress: ProgressFn | None = None,
) -> Report:
    """Compute the standard views of a folder, then its report (what ``python -m quantcore report`` writes).

    The views: layers and weights, per-layer error over ``images`` images,
    predictions and flips on the samples, accuracy and speed on the samples.

    Args:
        variants: the loaded folder.
        images: images for the per-layer error.
        runs: timed runs per batch size for the speeds.
        progress: called with (fraction done, message).

    Returns:
        The ``Report`` (``computed_report`` of what was just computed).

    Raises:
        RunTimeoutError: a deadline set around the call ran out.
    """
    tell = progress or (lambda fraction, message: None)
    failed: list[Section | None] = []

    def run(title: str, compute: Callable[[], Any]) -> None:
        # A view that fails is a section saying why; one that works is read back from the results cache.
        failed.append(_guarded(title, lambda: (compute(), None)[1]))

    tell(0.0, "Reading every variant's layers")
    run("Layers", lambda: layer_table(variants))
    tell(0.1, "Per-layer error")
    run("Per-layer error", lambda: cached_layer_drift(variants, images=images, batch_size=DEFAULT_BATCH_SIZE))
    inputs = folder_inputs(variants)
    samples = inputs.samples
    if samples is not None:
        tell(0.4, "Predictions on the samples")
        run("Predictions", lambda: folder_flips(variants, samples, inputs.spec))
        tell(0.6, "Accuracy and speed on the samples")
        run("Accuracy and speed", lambda: build_scorecard(variants, samples, inputs.spec, runs=runs))
    else:
        failed.append(Section("samples", "Samples", (f"No predictions or scores: {'; '.join(inputs.notes)}",)))
    tell(0.9, "Writing the report")
    report = computed_report(variants)
    extra = tuple(s for s in failed if s is not None)
    return replace(report, sections=(*report.sections, *extra)) if extra else report
