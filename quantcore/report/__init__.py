"""The views as people read them: display tables, API JSON and charts (no UI toolkit here)."""
