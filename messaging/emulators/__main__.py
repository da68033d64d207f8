"""``python -m messaging.emulators``: serve the Twilio and SendGrid emulators."""

from __future__ import annotations

import sys

from messaging.emulators.server import main

if __name__ == "__main__":
    sys.exit(main())
