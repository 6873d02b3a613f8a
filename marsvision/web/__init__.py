"""The archive on the web: a REST API and a page (FastAPI), a thin adapter over the archive, curate and
inference layers. ``create_app`` (app.py) assembles one router per resource (routes/); ``run_serve``
(server.py) is `marsvision serve`. Nothing below this layer imports it."""
