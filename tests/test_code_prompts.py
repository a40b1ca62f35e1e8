"""Prompts built in code (`opto_core.kernel.code_prompts`): found from the syntax tree, written back.

The functions live in a module written to a temporary directory, as a user's would; the message
class is a plain stand-in (the reader knows no framework: the sinks say which calls take text).
"""

from __future__ import annotations

import pytest

from opto_core.kernel.code_prompts import LiteralBinding, Sink, VariableBinding, prompts_in_function

SINKS = [
    Sink("SystemMessage", role="system"),
    Sink("HumanMessage", role="human"),
    Sink("from_template", (0, "template"), renders=True),
    Sink("from_messages", (), renders=True),
    Sink("update_system_message", (0, "system_message"), role="system"),
]

SOURCE = '''
class SystemMessage:
    def __init__(self, content):
        self.content = content
    def __eq__(self, other):
        return isinstance(other, SystemMessage) and other.content == self.content

def HumanMessage(content):
    return ("human", content)

class ChatPromptTemplate:
    @staticmethod
    def from_messages(messages):
        return list(messages)

SYSTEM_TEMPLATE = "You are the support agent of {company}. Today is {today}."
GREETING = "Hello %s, how can I help?"
INTRO = "You help customers of a bookshop."
RULES = "Never promise a delivery date."
FIXED = SystemMessage("Answer in English.")
NOT_A_PROMPT = "debug: {x}"

def by_format(state):
    return [SystemMessage(content=SYSTEM_TEMPLATE.format(company=state["company"], today=state["today"]))]

def by_alias(state):
    template = SYSTEM_TEMPLATE
    text = template.format(company=state["company"], today=state["today"])
    print(NOT_A_PROMPT.format(x=1))
    return [SystemMessage(text)]

def by_fstring(state):
    return [SystemMessage(f"You are the support agent of {state['company']}. Today is {state['today']:>6}. {{ok}}")]

def by_percent_and_plus(state):
    return [HumanMessage(GREETING % state["name"]), SystemMessage(INTRO + " " + RULES),
            SystemMessage("Be polite to " + state["name"] + ", always.")]

def by_template(state):
    return ChatPromptTemplate.from_messages([("system", "You work for {company}; be brief."),
                                             ("human", "{question}")])

def returned(request):
    if request:
        return SYSTEM_TEMPLATE.format(company="ACME", today="Monday")
    return "You are a helpful assistant."

def with_message_object(state):
    return [FIXED, *state["messages"]]

def make_closure():
    style = "Reply in French, in one sentence."
    def node(state):
        return [SystemMessage(style)]
    return node

AGENT = None

def run_global(example):
    AGENT.update_system_message(SYSTEM_TEMPLATE.format(company=example["company"], today="Monday"))

def build(company):
    return SystemMessage(name="writer", content=SYSTEM_TEMPLATE.format(company=company, today="Monday"))

def run_chat(agent, example):
    agent.update_system_message(SYSTEM_TEMPLATE.format(company=example["company"], today="Monday"))
    return agent

def system_for(state):
    text = SYSTEM_TEMPLATE.format(company=state["company"], today=state["today"])
    return text

def question_for(state):
    return f"The customer asks: {state['question']} Answer briefly."

def by_helper(state):
    return [SystemMessage(system_for(state)), HumanMessage(content=question_for(state))]

def countdown(n):
    return countdown(n - 1) if n else INTRO

def by_recursive_helper(state):
    return [SystemMessage(countdown(3))]

def by_library_function(state):
    import textwrap
    return [SystemMessage(textwrap.dedent(state["text"])), SystemMessage(str(state))]
'''


@pytest.fixture
def module(user_module):
    return user_module(SOURCE, "user_prompts")


def found(function, **options):
    return {
        p.name: p
        for p in prompts_in_function(
            function, SINKS, text_of=lambda m: getattr(m, "content", None), with_text=lambda m, t: type(m)(t), **options
        )
    }


def test_a_module_template_formatted_in_the_function_is_a_template_bound_to_the_global(module):
    prompts = found(module.by_format)
    assert list(prompts) == ["SYSTEM_TEMPLATE"]
    prompt = prompts["SYSTEM_TEMPLATE"]
    assert (prompt.value, prompt.style, prompt.how, prompt.role) == (
        module.SYSTEM_TEMPLATE,
        "format",
        ".format()",
        "system",
    )
    assert isinstance(prompt.binding, VariableBinding) and prompt.binding.home is module.__dict__
    prompt.binding.write("Agent of {company} ({today}).")
    assert module.by_format({"company": "ACME", "today": "Mon"})[0].content == "Agent of ACME (Mon)."


def test_local_aliases_are_followed_and_other_formatting_is_ignored(module):
    prompts = found(module.by_alias)
    assert list(prompts) == ["SYSTEM_TEMPLATE"]  # NOT_A_PROMPT is formatted, but never reaches a message
    assert prompts["SYSTEM_TEMPLATE"].style == "format"


def test_an_fstring_reads_as_a_template_and_a_new_text_is_compiled_in(module):
    prompt = found(module.by_fstring)["system_prompt"]
    assert prompt.value == "You are the support agent of {company}. Today is {today}. {{ok}}"
    assert prompt.placeholders == {"company": "state['company']", "today": "state['today']"}
    assert isinstance(prompt.binding, LiteralBinding)
    node = module.by_fstring
    state = {"company": "ACME", "today": "Mon"}
    prompt.binding.write("Agent of {company}, {today}. {{kept}}")
    assert node(state)[0].content == "Agent of ACME,    Mon. {kept}"  # the format spec stays in the code
    again = found(node)["system_prompt"]  # found again after the rewrite: same site, current text
    assert again.value == "Agent of {company}, {today}. {{kept}}"
    prompt.binding.load(prompt.binding.text.texts[prompt.binding.site][0])  # back to the original
    assert node(state)[0].content == "You are the support agent of ACME. Today is    Mon. {ok}"
    assert node.__code__ is prompt.binding.text.original_code


def test_a_suggestion_cannot_smuggle_code_into_the_function(module):
    prompt = found(module.by_fstring)["system_prompt"]
    prompt.binding.write('x" + __import__("os").getcwd() + "{company}{today}')
    text = module.by_fstring({"company": "A", "today": "B"})[0].content
    assert text.startswith('x" + __import__("os").getcwd() + "A')  # the text went in as a constant
    with pytest.raises(ValueError, match="unknown placeholder"):
        prompt.binding.write("{company} {invented}")


def test_percent_plus_and_constants_joined(module):
    prompts = found(module.by_percent_and_plus)
    assert prompts["GREETING"].style == "printf" and prompts["GREETING"].role == "human"
    assert prompts["INTRO"].value == module.INTRO and prompts["RULES"].value == module.RULES
    assert prompts["INTRO"].style is None  # plain text: no placeholders to keep
    literal = prompts["system_prompt"]
    assert (literal.value, literal.how) == ("Be polite to {name}, always.", "+ of constants")
    literal.binding.write("Thank {name} warmly.")
    prompts["GREETING"].binding.write("Hi %s!")
    out = module.by_percent_and_plus({"name": "Bob"})
    assert out[0] == ("human", "Hi Bob!") and out[2].content == "Thank Bob warmly."


def test_a_template_built_inside_the_function_and_a_returned_prompt(module):
    prompts = found(module.by_template)
    assert list(prompts) == ["system_prompt"]  # "{question}" alone has no text of its own
    assert prompts["system_prompt"].style == "format" and prompts["system_prompt"].how == "template"
    assert found(module.returned) == {}  # a return value counts only when asked (middleware)
    returned = found(module.returned, returns=True)
    assert set(returned) == {"SYSTEM_TEMPLATE", "system_prompt"}
    assert returned["system_prompt"].value == "You are a helpful assistant."


def test_message_objects_and_closure_variables(module):
    fixed = found(module.with_message_object)["FIXED"]
    assert fixed.value == "Answer in English." and fixed.obj is module.FIXED
    fixed.binding.write("Answer in German.")
    assert module.FIXED.content == "Answer in German." and fixed.binding.raw() is module.FIXED
    node = module.make_closure()
    style = found(node)["style"]
    assert style.binding.describe() == "the closure variable 'style'"
    style.binding.write("Reply in Italian.")
    assert node({})[0].content == "Reply in Italian."


def test_method_sinks_and_their_receiver(module):
    prompts = prompts_in_function(module.run_chat, SINKS)
    assert [p.name for p in prompts] == ["SYSTEM_TEMPLATE"]
    only_models = [Sink("update_system_message", (0,), role="system", receiver=lambda value: False)]
    assert prompts_in_function(module.run_chat, only_models) == []  # the receiver is a parameter: unknown


def test_functions_without_source_give_nothing():
    assert prompts_in_function(len, SINKS) == []
    namespace: dict = {}
    exec("def made(x):\n    return SystemMessage('generated at run time')\n", namespace)
    assert prompts_in_function(namespace["made"], SINKS) == []


def test_the_sink_call_names_its_receiver_and_name(module):
    class Agent:
        def update_system_message(self, text):
            self.system = text

    module.AGENT = agent = Agent()
    (prompt,) = prompts_in_function(module.run_global, SINKS)
    assert prompt.receiver is agent and prompt.call_name is None
    (prompt,) = prompts_in_function(module.build, SINKS)
    assert prompt.receiver is None and prompt.call_name == "writer"


def test_a_helper_of_yours_that_returns_the_prompt_is_followed(module):
    prompts = found(module.by_helper)
    assert list(prompts) == ["SYSTEM_TEMPLATE", "human_prompt"]
    system, question = prompts["SYSTEM_TEMPLATE"], prompts["human_prompt"]
    assert (system.style, system.role, system.binding.home) == ("format", "system", module.__dict__)
    assert (question.value, question.role) == ("The customer asks: {question} Answer briefly.", "human")
    question.binding.write("Question: {question}")  # the helper's literal is rewritten in the helper
    system.binding.write("Agent of {company}, {today}.")
    messages = module.by_helper({"company": "ACME", "today": "Mon", "question": "Where?"})
    assert [messages[0].content, messages[1]] == ["Agent of ACME, Mon.", ("human", "Question: Where?")]
    assert list(found(module.by_recursive_helper)) == ["INTRO"]  # a recursive helper is read once


def test_library_functions_are_no_helpers(module):
    import textwrap

    from opto_core.kernel.code_prompts import user_function

    assert found(module.by_library_function) == {}
    assert not user_function(textwrap.dedent) and not user_function(str) and not user_function(pytest.raises)
    assert user_function(module.system_for)
