"""The route classes of issue 23's probe, as suggested versions of one tool, and the tool itself.

The original tool legitimately imports and calls into the very modules the routes abuse
(`posixpath`, `typing`, `random`, `logging`, `codecs`, `functools`, `operator`), so every route
starts from names the policy must keep allowing. Each payload, were it run, would leave an effect
outside the workflow: the marker file it names (or an exit, for the exit routes).
"""

from __future__ import annotations

import codecs
import functools
import logging
import operator
import posixpath
import random
import typing


def tidy(text: str) -> str:
    """Collapse the spaces in a text (and log the file name it mentions)."""
    logging.getLogger("tidy").debug("tidy %s", posixpath.basename(text))
    words = functools.reduce(operator.add, [[w] for w in text.split()], [])
    if random.random() > 2:
        return codecs.decode(" ".join(words), "rot13")
    return typing.cast(str, " ".join(words))


HEAD = "def tidy(text: str) -> str:\n"
RETURN = "    return text\n"


def routes(marker: str) -> dict[str, tuple[str, str]]:
    """Route class -> (the suggested source, a phrase the policy's reason must contain)."""
    m = repr(marker)
    touch = f"'touch ' + {m}"
    return {
        # modules reached through other modules (the original uses each first module itself)
        "module through module": (HEAD + f"    posixpath.os.system({touch})\n" + RETURN, "reaches the module 'os'"),
        "typing.sys": (HEAD + f"    typing.sys.modules['os'].system({touch})\n" + RETURN, "reaches the module 'sys'"),
        "private module attribute": (HEAD + f"    random._os.system({touch})\n" + RETURN, "'_os'"),
        "module of an unused module": (
            "import pkgutil\n" + HEAD + f"    pkgutil.importlib.import_module('os').system({touch})\n" + RETURN,
            "imports 'pkgutil'",
        ),
        "module as a value": (
            HEAD + f"    p = posixpath\n    p.os.system({touch})\n" + RETURN,
            "uses the module 'posixpath' as a value",
        ),
        # attribute names computed at run time
        "getattr alias": (
            HEAD + f"    g = getattr\n    b = g(g, '_' * 2 + 'self' + '_' * 2)\n"
            f"    g(b, 'op' + 'en')({m}, 'w').close()\n" + RETURN,
            "computed name",
        ),
        "operator.attrgetter": (
            HEAD + "    b = operator.attrgetter('_' * 2 + 'self' + '_' * 2)(len)\n"
            f"    operator.methodcaller('op' + 'en', {m}, 'w')(b).close()\n" + RETURN,
            "'attrgetter'",
        ),
        "reduce(getattr)": (
            HEAD + f"    functools.reduce(getattr, ['_' * 2 + 'self' + '_' * 2, 'op' + 'en'], len)"
            f"({m}, 'w').close()\n" + RETURN,
            "computed name",
        ),
        "vars()": (HEAD + f"    vars(posixpath)['o' + 's'].system({touch})\n" + RETURN, "uses 'vars'"),
        "format string": (
            HEAD + "    return ('{0.' + '_' * 2 + 'globals' + '_' * 2 + '[codecs]}').format(tidy)\n",
            "computed format string",
        ),
        # writes and string execution through modules the original uses or that are not allowed
        "codecs.open": (HEAD + f"    codecs.open({m}, 'w').close()\n" + RETURN, "'codecs.open'"),
        "gzip.open": ("import gzip\n" + HEAD + f"    gzip.open({m}, 'wb').close()\n" + RETURN, "imports 'gzip'"),
        "logging.FileHandler": (HEAD + f"    logging.FileHandler({m}).close()\n" + RETURN, "'logging.FileHandler'"),
        "logging.handlers": (
            "import logging.handlers\n" + HEAD + f"    logging.handlers.RotatingFileHandler({m}).close()\n" + RETURN,
            "imports 'logging.handlers'",
        ),
        "timeit string": (
            "import timeit\n" + HEAD + f"    timeit.timeit(\"open({m}, 'w').close()\", number=1)\n" + RETURN,
            "imports 'timeit'",
        ),
        "cProfile string": (
            "import cProfile\n" + HEAD + f"    cProfile.run(\"open({m}, 'w').close()\")\n" + RETURN,
            "imports 'cProfile'",
        ),
        "unittest.__main__": ("import unittest.__main__\n" + HEAD + RETURN, "imports 'unittest.__main__'"),
        # code outside the function body
        "class body": (
            HEAD + f"    class Box:\n        handle = codecs.open({m}, 'w')\n" + RETURN,
            "defines the class 'Box'",
        ),
        "__init_subclass__": (
            HEAD + "    class Base:\n        def __init_subclass__(cls):\n"
            f"            codecs.open({m}, 'w').close()\n"
            "    class Child(Base):\n        pass\n" + RETURN,
            "'__init_subclass__'",
        ),
        "inner decorator": (
            HEAD + f"    def mark(fn):\n        codecs.open({m}, 'w').close()\n        return fn\n"
            "    @mark\n    def inner():\n        return 1\n" + RETURN,
            "decorates an inner function",
        ),
        "lambda default": (
            HEAD + f"    h = lambda y=codecs.open({m}, 'w'): y.close()\n    h()\n" + RETURN,
            "computes a default",
        ),
        "type() and __del__": (
            HEAD + "    T = type('T', (), {'_' * 2 + 'del' + '_' * 2: "
            f"lambda s: codecs.open({m}, 'w').close()}})\n    T()\n" + RETURN,
            "type()",
        ),
        # hooks that outlive the call, and exits
        "weakref.finalize": (
            "import weakref\n" + HEAD + f"    weakref.finalize(tidy, codecs.open, {m}, 'w')\n" + RETURN,
            "imports 'weakref'",
        ),
        "atexit": (
            "import atexit\n" + HEAD + f"    atexit.register(codecs.open, {m}, 'w')\n" + RETURN,
            "imports 'atexit'",
        ),
        "signal": (
            "import signal\n"
            + HEAD
            + f"    signal.signal(signal.SIGUSR1, lambda *a: codecs.open({m}, 'w'))\n"
            + RETURN,
            "imports 'signal'",
        ),
        "SystemExit": (HEAD + "    raise SystemExit(0)\n", "uses 'SystemExit'"),
        "KeyboardInterrupt": (HEAD + "    raise KeyboardInterrupt\n", "uses 'KeyboardInterrupt'"),
        "sys.exit": ("import sys\n" + HEAD + "    sys.exit(0)\n", "imports 'sys'"),
        # writes around the optimizer, statically visible
        "write another object": (HEAD + "    codecs.decode.__init__()\n" + RETURN, "changes 'codecs' in place"),
    }


#: Routes whose effect is not the marker file (an exit, or a signal nobody sends) in the liveness check.
EXIT_ROUTES = {"SystemExit": 0, "KeyboardInterrupt": -2, "sys.exit": 0, "unittest.__main__": None}
NO_MARKER = {"signal", "write another object"}
#: Routes that leak instead of writing: what their output would show.
LEAKS = {"format string": "<module 'codecs'"}

#: Rewrites that use only what the original uses, plain Python and safe modules: they must pass.
LEGITIMATE = {
    "same modules": HEAD + "    logging.getLogger('tidy').info('x %s', posixpath.basename(text))\n"
    "    return ' '.join(text.split()).strip()\n",
    "safe modules": "import re\nimport collections\n"
    + HEAD
    + "    words = re.findall(r'\\S+', text)\n    counts = collections.Counter(words)\n"
    "    return typing.cast(str, ' '.join(w for w in words if counts[w] > 0))\n",
    "inner helper": HEAD + "    def clean(word: str) -> str:\n        return word.strip()\n"
    "    return ' '.join(clean(w) for w in text.split() if (n := len(w)) > 0)\n",
    "literal format": HEAD + "    return '{} {}'.format(*text.split()[:2]) if ' ' in text else text\n",
    "methods and getattr": HEAD + "    lower = getattr(text, 'lower')\n    return ' '.join(lower().split())\n",
}
