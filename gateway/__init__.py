"""iom-gateway: a secure file-exchange gateway for IOM community-safety partnerships."""

__version__ = "0.1.0"
