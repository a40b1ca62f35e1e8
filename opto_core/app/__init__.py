"""The application: what a person runs and reads.

Holds the ``opto`` command (`cli`), the demo workflows and their registry (`demo`), the HTML
report (`report`) and graph drawings (`drawing`).

May import: every other layer of the core (never an adapter: demos are found through entry points).
"""
