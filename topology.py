"""Entry point of the stream job: `faust -A topology worker`.

Settings come from environment variables (see README, "Settings").
"""

import sys

from streams.app import build_app
from streams.settings import Settings, SettingsError

try:
    settings = Settings.from_env()
except SettingsError as exc:  # a configuration error: say what to fix, without a traceback
    print(f"mbnmrn: bad setting: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

app = build_app(settings)
