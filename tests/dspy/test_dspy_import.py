"""The adapter imports DSPy only inside itself, and says which extra to install when it is missing."""

import subprocess
import sys


def test_missing_dspy_names_the_extra():
    code = (
        "import sys; sys.modules['dspy'] = None\n"
        "try:\n    import opto_adapters.dspy\nexcept ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "pip install 'opto-adapters[dspy]'" in out


def test_public_names():
    import dspy

    from opto_adapters.dspy import OptoTeleprompter, load_optimized

    assert issubclass(OptoTeleprompter, dspy.teleprompt.Teleprompter) and callable(load_optimized)
