"""What a message says: the alert document, templates and personalisation, SMS encoding, tracked
links, unsubscribe tokens, A/B variants, topic names."""
