"""The engine: running an optimization, step after step, safely.

Holds the loop (`loop.optimize`), its `settings`, the target protocol (`target`), the executors
(threads, asyncio, Ray: where evaluations run), the run directory (checkpoints, history, locking,
resume), approval of proposals by a person, and the background event loop.

May import: the kernel, the LLM layer and the optimizers.
"""
