"""A create_agent app built the same way in the test process and in a fresh subprocess (deploy test)."""

from __future__ import annotations

from langchain.agents import create_agent
from langchain_core.tools import tool

from opto_adapters.langchain.testing import EchoChatModel


@tool
def lookup_order(order_id: str) -> str:
    """Look up an order's status."""
    return f"order {order_id}: shipped"


def build():
    model = EchoChatModel(temperature=0.7)
    agent = create_agent(model, [lookup_order], system_prompt="You are a support bot.")
    return agent, model
