"""The Input section beside the summary: what each variant takes, where that was read, and the page's override.

Applying an override keeps it in the session's ``Source`` handle, so every tab
feeds the variants alike; "as read" takes it off again. API: ``/set_input
(source, variant, layout, range, mean, std, size, output)`` -> the summary
(its ``source`` carries the override) and the status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from gradio_app import handlers, render
from gradio_app.common import FOLDER_EVENTS, PRIVATE, Page
from quantcore import QuantcoreError, Source, get_model_summary, open_source
from quantcore.load.input_spec import Layout, OutputKind

AS_READ = "as read"
ALL_VARIANTS = "all variants"
RANGES = {"0 – 1 (pixels / 255)": [0.0, 1.0], "0 – 255": [0.0, 255.0], "-1 – 1": [-1.0, 1.0]}
HINT = "Load a folder to see what each variant takes as input, and set it here when the files do not say."


@dataclass(frozen=True)
class InputPanel:
    table: gr.Dataframe
    note: gr.Markdown
    variant: gr.Dropdown
    layout: gr.Dropdown
    range: gr.Dropdown
    mean: gr.Textbox
    std: gr.Textbox
    size: gr.Textbox
    output: gr.Dropdown
    apply: gr.Button
    clear: gr.Button


def _numbers(text: Any, what: str, count: int | None = None) -> list[float] | None:
    if text is None or not str(text).strip():
        return None
    try:
        values = [float(part) for part in str(text).replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"{what} must be numbers, like '0.5' or '0.485, 0.456, 0.406'") from None
    if count is not None and len(values) != count:
        raise ValueError(f"{what} must be {count} numbers")
    return values


def override_fields(layout: Any, value_range: Any, mean: Any, std: Any, size: Any, output: Any) -> dict[str, Any]:
    """The input fields a form sets (what is left "as read" is left out).

    Raises:
        ValueError: a field that cannot be read.
    """
    fields: dict[str, Any] = {}
    if layout not in (None, "", AS_READ):
        fields["layout"] = str(Layout.from_text(layout))
    if value_range not in (None, "", AS_READ):
        fields["range"] = RANGES.get(str(value_range)) or _numbers(value_range, "range", 2)
    for name, text in (("mean", mean), ("std", std)):
        numbers = _numbers(text, name)
        if numbers is not None:
            fields[name] = numbers
    sizes = _numbers(size, "size")
    if sizes is not None:
        if len(sizes) not in (1, 2) or not all(s.is_integer() and s > 0 for s in sizes):
            raise ValueError("size must be one or two whole numbers: '224' or '224, 224'")
        fields["size"] = [int(s) for s in sizes] * (2 if len(sizes) == 1 else 1)
    if output not in (None, "", AS_READ):
        fields["output"] = str(OutputKind(str(output)))
    return fields


def spec_rows(summary: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per loaded variant: what it takes and gives, and where each was read."""
    rows = []
    for key, variant in ((summary or {}).get("variants") or {}).items():
        spec = variant.get("input")
        if not spec:
            continue
        sources = spec.get("sources", {})
        rows.append({
            "variant": key, "layout": spec["layout"], "shape": "×".join(map(str, spec["shape"])),
            "range": " – ".join(f"{v:g}" for v in spec["range"]),
            "mean / std": f"{spec['mean']} / {spec['std']}" if spec.get("mean") else "",
            "batch": spec.get("batch") or "any", "output": spec["output"],
            "read from": "; ".join(f"{k}: {v}" for k, v in sources.items()) or "defaults",
        })  # fmt: skip
    return rows


def set_input(
    source: Any, variant: Any, layout: Any, value_range: Any, mean: Any, std: Any, size: Any, output: Any
) -> handlers.Result:
    """Apply an input override to what is loaded (API: /set_input); every field "as read" clears it."""
    try:
        loaded = Source.from_client(source)
        if loaded is None:
            return handlers.nothing(render.info(HINT))
        fields = override_fields(layout, value_range, mean, std, size, output)
        scope = "*" if variant in (None, "", ALL_VARIANTS) else str(variant)
        override = {k: v for k, v in (loaded.input or {}).items() if k != scope}
        if fields:
            override[scope] = fields
        changed = loaded.with_input(override)
        summary = get_model_summary(open_source(changed))
    except (QuantcoreError, ValueError) as exc:
        return handlers.nothing(render.input_error(f"The input was not changed: {exc}"))
    summary = {**summary, "source": changed.as_dict()}
    shown = render.display_summary(summary, root=handlers.models_root())
    return shown, render.loaded_status(summary, source=f"{changed.label} with the input set on the page")


def clear_input(source: Any, variant: Any) -> handlers.Result:
    """Take the page's input override off one variant (or all): they are read as the folder says again."""
    return set_input(source, variant, AS_READ, AS_READ, "", "", "", AS_READ)


def _panel_outputs(summary: dict[str, Any] | None) -> tuple[Any, ...]:
    rows = spec_rows(summary)
    keys = [ALL_VARIANTS, *(r["variant"] for r in rows)]
    notes = (summary or {}).get("input_notes") or []
    text = "\n".join(f"- {render.escape(n)}" for n in notes) if rows else render.info(HINT).markdown
    return gr.Dataframe(value=pd.DataFrame(rows), visible=bool(rows)), text, gr.Dropdown(choices=keys, value=keys[0])


def build() -> InputPanel:
    """The section's components (call where it goes on the page)."""
    with gr.Accordion("Input: what each variant takes", open=False, elem_id="qp-input"):
        table = gr.Dataframe(label="Input and output per variant", interactive=False, visible=False,
                             elem_id="qp-input-table")  # fmt: skip
        note = gr.Markdown(render.info(HINT).markdown, elem_id="qp-input-note")
        with gr.Row():
            variant = gr.Dropdown([ALL_VARIANTS], value=ALL_VARIANTS, label="Set for", scale=2)
            layout = gr.Dropdown([AS_READ, *Layout], value=AS_READ, label="Layout", scale=1)
            value_range = gr.Dropdown([AS_READ, *RANGES], value=AS_READ, allow_custom_value=True,
                                      label="Pixels 0–255 become", scale=2)  # fmt: skip
            output = gr.Dropdown([AS_READ, *OutputKind], value=AS_READ, label="Output", scale=1)
        with gr.Row():
            mean = gr.Textbox(label="Mean (per channel)", placeholder="e.g. 0.485, 0.456, 0.406", scale=2)
            std = gr.Textbox(label="Std (per channel)", placeholder="e.g. 0.229, 0.224, 0.225", scale=2)
            size = gr.Textbox(label="Size", placeholder="e.g. 224", scale=1)
            apply = gr.Button("Apply", variant="primary", scale=1, elem_id="qp-input-apply")
            clear = gr.Button("As read", scale=1)
    return InputPanel(table, note, variant, layout, value_range, mean, std, size, output, apply, clear)


def wire(page: Page, panel: InputPanel, status: gr.Markdown, for_page: Any, for_api: Any) -> None:
    """The panel follows the summary; Apply and "As read" reload what is loaded through the page's handlers."""
    page.summary.change(_panel_outputs, page.summary, [panel.table, panel.note, panel.variant],
                        api_name="page_input_panel", **PRIVATE)  # fmt: skip
    form = [page.source, panel.variant, panel.layout, panel.range, panel.mean, panel.std, panel.size, panel.output]
    outputs = [page.summary, status, page.source, page.link]
    panel.apply.click(for_page(set_input), form, outputs, api_name="page_set_input", **PRIVATE, **FOLDER_EVENTS)
    panel.clear.click(for_page(clear_input), [page.source, panel.variant], outputs, api_name="page_clear_input",
                      **PRIVATE, **FOLDER_EVENTS)  # fmt: skip
    api_form = [gr.JSON(visible=False), *(gr.Textbox(visible=False) for _ in range(7))]
    gr.Button(visible=False).click(for_api(set_input), api_form, [page.summary, status], api_name="set_input",
                                   **FOLDER_EVENTS)  # fmt: skip
