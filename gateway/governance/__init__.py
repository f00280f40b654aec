"""governance: information requests, quality, subject access, corrections"""
