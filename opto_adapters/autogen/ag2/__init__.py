"""Classic AutoGen (AG2: PyPI ``autogen`` 0.14.x, ``import autogen``) as an OPTO target.

    from opto_adapters.autogen.ag2 import AG2Target, parameters_of, apply_values

    def chat(example):                      # start the conversation your way, return its result
        return user.initiate_chat(assistant, message=example["question"], max_turns=4).summary

    target = AG2Target(chat, [assistant, user])
    optimize(target, trainset, feedback_fn, optimizer)
    target.save_values("ag2.values.json"); apply_values([assistant, user], "ag2.values.json")

The same skeleton as every adapter: `parameters` (AG2 objects -> `BoundParameters`), `bindings`
(where each value lives), `tracing` (AG2 events -> conversation records -> the core's builder),
`target` (`AG2Target`) and `deploy` (`apply_values`).
"""

from opto_adapters.autogen.ag2.deploy import apply_values
from opto_adapters.autogen.ag2.parameters import bound_parameters, parameters_of
from opto_adapters.autogen.ag2.target import AG2Target, framework_version

__all__ = ["AG2Target", "apply_values", "bound_parameters", "framework_version", "parameters_of"]
