"""The gateway: optimizing programs we have no adapter for, from their model traffic or their traces.

Any program that talks to an OpenAI-compatible endpoint (the OpenAI Agents SDK, CrewAI, LlamaIndex,
plain ``openai`` code, a Node.js script...) sends its prompts and settings over the wire. Read in order:

- `wire`: the two request formats (Chat Completions, Responses) reduced to one shape, streaming included;
- `recording`: exchanges grouped into runs (by path, header, open run, or time window);
- `proxy`: `Gateway`, the recording and rewriting proxy (Starlette, uvicorn, httpx);
- `parameters`: prompts, templates and settings found in traffic, deployed by rewriting requests;
- `graphs`: a run's traffic -> conversation records -> an OPTO graph (the core's conversation builder);
- `target`: `GatewayTarget`, any program (a Python function or a command) as an optimization target;
- `otel`: OpenTelemetry spans -> graphs (`load_spans`) and graphs -> OTLP JSON (`to_spans`);
- `offline`: `optimize_offline`, one optimizer step over recorded graphs, written as a values file and a diff.

May import: the kernel, the LLM layer, the optimizers and the engine. Public names are exported from
``opto_core`` (and ``opto_core.otel``); Starlette and uvicorn (the ``gateway`` extra) load only when a
gateway starts.
"""
