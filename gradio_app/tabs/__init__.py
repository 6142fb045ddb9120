"""One module per tab: each builds its components with ``build(page)``, wires its page events and its API endpoints."""
