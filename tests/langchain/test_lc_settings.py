"""Settings users tune: a retriever's ``k`` (found, credited, tuned by the search part), the model's name as a
choice, the core's ranges. An LCEL RAG chain over LangChain's in-memory vector store with its deterministic
fake embedding; the model is ``ChatOpenAI`` against a scripted server on 127.0.0.1."""

from __future__ import annotations

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_openai import ChatOpenAI

from opto_adapters.langchain import ChainTarget, NoParametersFound, apply_values, parameters_of
from opto_core import Search, coverage, optimize
from opto_core.kernel.backward import backward
from opto_core.kernel.feedback import Feedback
from opto_core.testing.scripted_server import ScriptedServer, system_text

FACTS = [
    "Paris is the capital of France.",
    "Berlin is the capital of Germany.",
    "Rome is the capital of Italy.",
    "Madrid is the capital of Spain.",
]


@pytest.fixture
def server():
    with ScriptedServer(repeat_last=True) as scripted:
        scripted.script(lambda request: system_text(request))  # the model answers with the context it got
        yield scripted


def rag_chain(server, k=1, **model_settings):
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=32))
    store.add_texts(FACTS)
    retriever = store.as_retriever(search_kwargs={"k": k})
    prompt = ChatPromptTemplate.from_messages([("system", "Context:\n{context}"), ("human", "{question}")])
    model = ChatOpenAI(
        base_url=server.base_url, api_key="scripted", model="gpt-4o-mini", max_retries=0, **model_settings
    )
    context = retriever | (lambda docs: "\n".join(d.page_content for d in docs))
    return {"context": context, "question": RunnablePassthrough()} | prompt | model | StrOutputParser()


def capitals_found(example, output):
    found = sum(city in output for city in example["cities"])
    return Feedback(found / len(example["cities"]), f"the answer names {found} of {example['cities']}")


def test_the_retrievers_k_is_found_credited_and_written(server):
    chain = rag_chain(server, k=1)
    params = {p.name: p for p in parameters_of(chain)}
    k = params["retriever.search_kwargs.k"]
    assert (k.kind, k.value, k.lower, k.upper) == ("int", 1, 1, 5)  # the core's count rule
    target = ChainTarget(chain)
    output, graph = target.run("Name two capitals.")
    assert len([f for f in FACTS if f in output]) == 1
    assert "retriever.search_kwargs.k" in backward(graph, Feedback(0.0, "only one city")).parameter_names
    assert coverage(target, ["Name two capitals."])["retriever.search_kwargs.k"].reached
    target.apply({"retriever.search_kwargs.k": 3})
    output, _ = target.run("Name two capitals.")
    assert len([f for f in FACTS if f in output]) == 3 and len(system_text(server.requests[-1]).splitlines()) == 4
    with pytest.raises(ValueError, match="above the upper bound 5"):
        target.apply({"retriever.search_kwargs.k": 50})


def test_the_search_part_tunes_k_and_never_ends_worse_than_it_started(server):
    chain = rag_chain(server, k=1)
    target = ChainTarget(chain, include=["retriever.search_kwargs.k"], prepare=lambda example: example["question"])
    trainset = [{"question": "Which capitals do you know?", "cities": ["Paris", "Berlin", "Rome", "Madrid"]}]
    result = optimize(
        target,
        trainset,
        capitals_found,
        Search(target.parameters(), "random", seed=3),
        max_steps=4,
        batch_size=1,
        num_threads=1,
    )
    assert result.history[0]["values"]["retriever.search_kwargs.k"] == 1  # the run starts from the current value
    assert result.best_values["retriever.search_kwargs.k"] >= 4  # every capital needs every document
    assert result.best_score == 1.0 > result.initial_score


def test_the_model_name_is_a_choice_when_you_name_the_alternatives(server, tmp_path):
    chain = rag_chain(server, k=2, max_tokens=200)
    target = ChainTarget(chain, model_choices=["gpt-4o", "gpt-4.1-mini"])
    choice = target.bound["model.model_name"]
    assert (choice.kind, choice.value, choice.choices) == (
        "choice",
        "gpt-4o-mini",
        ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"],
    )
    max_tokens = target.bound["model.max_tokens"]
    assert (max_tokens.lower, max_tokens.upper) == (64, 1024)  # never [1, 32768]; 4 x 200 < the 1,024 floor
    _, graph = target.run("capitals?")
    assert "model.model_name" in backward(graph, Feedback(0.0, "no")).parameter_names
    target.apply({"model.model_name": "gpt-4o"})
    target.run("capitals?")
    assert server.requests[-1]["model"] == "gpt-4o"
    with pytest.raises(ValueError, match="gpt-4o-mini"):
        target.apply({"model.model_name": "gpt-5"})
    with pytest.raises(NoParametersFound, match="names no model"):
        ChainTarget(chain, model_choices={"writer": ["gpt-4o"]})
    # deploying: a saved model name goes into a freshly built chain
    target.save_values(tmp_path / "values.json")
    fresh = rag_chain(server, k=2, max_tokens=200)
    applied = apply_values(fresh, tmp_path / "values.json")
    assert applied["model.model_name"] == "gpt-4o"
    ChainTarget(fresh).run("capitals?")
    assert server.requests[-1]["model"] == "gpt-4o"
