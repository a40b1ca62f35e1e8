"""The gateway: optimizing programs we have no adapter for, from their model traffic or their traces.

Will hold the recording OpenAI-compatible proxy, `GatewayTarget`, and OpenTelemetry import and
export (issue 22). Empty until then.

May import: the kernel, the LLM layer, the optimizers and the engine.
"""
