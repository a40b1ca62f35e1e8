"""The code module: source of any function, the shape a new version keeps, and compiling it like the original."""

import functools
import gc
import importlib
import inspect
import sys
import textwrap
import traceback

import pytest

from opto_core.kernel.code import (
    CodeShapeError,
    SourceUnavailable,
    compile_like,
    function_source,
    parse_function,
    same_shape,
)


def make_closure():
    factor = 3

    def scale(x: int) -> int:
        """Scale x."""
        return x * factor

    return scale


class Greeter:
    def greet(self, name):
        return f"hi {name}"


def test_source_of_closures_methods_partials_and_lambdas():
    assert function_source(make_closure()).startswith("def scale(x: int) -> int:")
    assert function_source(Greeter().greet).startswith("def greet(self, name):")
    assert function_source(functools.partial(make_closure(), 2)).startswith("def scale(")
    double = lambda x: x * 2  # noqa: E731
    assert "lambda x: x * 2" in function_source(double)
    with pytest.raises(SourceUnavailable):
        function_source(len)


def test_compiled_code_keeps_closure_cells_and_module_globals():
    scale = make_closure()
    new = compile_like("def scale(x: int) -> int:\n    return x * factor + OFFSET\n", scale)
    globals()["OFFSET"] = 1
    assert new(2) == 7  # the closure's factor (3) and this module's live global
    globals()["OFFSET"] = 10
    assert new(2) == 16
    assert new.__qualname__ == scale.__qualname__ and new.__module__ == __name__


def test_a_method_compiles_and_binds():
    new = compile_like("def greet(self, name):\n    return f'hello {name}'\n", Greeter.greet)
    Greeter.greet_new = new
    assert Greeter().greet_new("ann") == "hello ann"


def test_tracebacks_and_getsource_point_into_the_new_source():
    new = compile_like("def scale(x: int) -> int:\n    y = x + 1\n    return y / 0\n", make_closure())
    with pytest.raises(ZeroDivisionError) as info:
        new(1)
    text = "".join(traceback.format_exception(info.value))
    assert "return y / 0" in text and "line 3" in text
    assert inspect.getsource(new).startswith("def scale(x: int) -> int:\n    y = x + 1")
    assert function_source(new).endswith("return y / 0\n")


def test_a_function_whose_file_is_gone(tmp_path):
    module_file = tmp_path / "gone_module.py"
    module_file.write_text(
        textwrap.dedent('''
        def parse(line: str) -> float:
            return float(line.split("$")[1])
    ''')
    )
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("gone_module")
        original = function_source(module.parse)  # read once, while the file exists
        new = compile_like(
            "def parse(line: str) -> float:\n    return round(float(line.split('$')[1]), 2)\n", module.parse
        )
        module_file.unlink()
        gc.collect()
        import linecache

        linecache.checkcache()  # what Python does when files change: our entries survive it
        assert function_source(module.parse) == original
        assert "round(" in function_source(new) and "round(" in inspect.getsource(new)
        assert new("a $1.234") == 1.23
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("gone_module", None)


def test_module_level_imports_of_the_new_source_are_available():
    new = compile_like(
        "import math\ndef scale(x: int) -> int:\n    return math.floor(x * factor / 2)\n", make_closure()
    )
    assert new(3) == 4


def test_shape_rules():
    original = parse_function("def f(a, b=2) -> int:\n    return a\n")
    same_shape(original, parse_function('"""doc"""\nimport re\ndef f(a, b=2) -> int:\n    return b\n'))
    for bad, reason in [
        ("def g(a, b=2) -> int:\n    return a\n", "keep its name"),
        ("def f(a) -> int:\n    return a\n", "signature must stay"),
        ("@staticmethod\ndef f(a, b=2) -> int:\n    return a\n", "decorators must stay"),
        ("x = 1\ndef f(a, b=2) -> int:\n    return a\n", "only imports"),
        ("def f(a, b=2) -> int:\n  return (\n", "does not parse"),
    ]:
        with pytest.raises(CodeShapeError, match=reason):
            same_shape(original, parse_function(bad))


def test_decorators_of_a_suggestion_never_run_when_compiled(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"@(lambda f: (open({str(marker)!r}, 'w').write('x'), f)[1])\ndef scale(x: int) -> int:\n    return x\n"
    compile_like(payload, make_closure())
    assert not marker.exists()


def typed_tool(count: int, label: str = "x") -> str:
    return label * count


def test_a_signature_a_framework_reads_keeps_its_bindings():
    from opto_core.kernel.code import keeps_signature_bindings

    check = keeps_signature_bindings(typed_tool)
    body = "def typed_tool(count: int, label: str = 'x') -> str:\n    return label * (count + 1)\n"
    assert check("import math\n" + body)  # an import that touches no name of the signature
    with pytest.raises(ValueError, match="argument schema would change"):
        check("from builtins import str as int\n" + body)  # `int` in the signature would mean str
    with pytest.raises(ValueError, match="ModuleNotFoundError: no module named 'not_a_module_xyz'"):
        check("import not_a_module_xyz\n" + body)
    import sys

    assert "not_a_module_xyz" not in sys.modules  # looked up, never imported
