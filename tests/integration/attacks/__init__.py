"""Adversarial tests: each reproduces an attack on the gateway (issue 9) and proves it now fails."""
