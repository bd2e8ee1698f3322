"""The shop front: a Gradio page and a JSON HTTP API in one FastAPI process.

``ui.server.build_app(settings, options)`` returns the ASGI app; ``vsearch serve`` runs it.
Built on the ``search`` package's public API only.
"""
