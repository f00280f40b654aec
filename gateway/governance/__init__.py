"""Information governance the protocols ask of partners beyond the exchange itself (issue 15): requests
between Designated Officers, the data-quality scorecard, subject access. Built on the journal and the audit
log; it keeps no personal data in the clear."""
