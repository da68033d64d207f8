"""What stops, settles or re-drives a blast by itself: circuit breakers, provider-auth pauses, the
sweep, rows in doubt."""
