"""Table 1 validation (Solihull IOM ISP 2.2.5): pure, streaming, no side effects."""

from gateway.validate.engine import validate_file, validate_stream
from gateway.validate.report import Issue, Report, mask
from gateway.validate.schema import Standard, load_standard

__all__ = ["Issue", "Report", "Standard", "load_standard", "mask", "validate_file", "validate_stream"]
