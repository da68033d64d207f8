"""Who may send: operators and their roles, and the audit log of what they did."""
