"""``python -m emulators``: serve the Twilio and SendGrid emulators."""

from __future__ import annotations

import sys

from emulators.server import main

if __name__ == "__main__":
    sys.exit(main())
