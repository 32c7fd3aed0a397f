"""Entry point of the stream job: `faust -A topology worker`.

Settings come from environment variables (see README, "Settings").
"""

from streams.app import build_app

app = build_app()
