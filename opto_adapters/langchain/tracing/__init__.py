"""Tracing LangChain: callback events -> records -> an OPTO graph of real data flow.

- `handler`: `OptoCallbackHandler`, the one callback users pass; it turns LangChain's events into
  plain records (no LangChain object outlives the callback).
- `snapshots`: the plain-JSON copies of LangChain values those records hold.
- `links`: which parameters a graph shows, and which run each one fed.
- `builder`: records + links -> the graph (testable with hand-made records).
"""
