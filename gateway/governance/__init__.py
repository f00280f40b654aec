"""Information governance: requests between officers, the quality scorecard, subject access."""
